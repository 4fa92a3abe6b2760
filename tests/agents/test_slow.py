"""Slow tier: whole games, a killed training process resumed, the SB3 reference env path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rlsae.agents.dqn import list_checkpoints, load_agent
from rlsae.agents.record import record_activations
from rlsae.agents.replay import verify_replay

pytestmark = pytest.mark.slow


def test_whole_games_record_and_replay_exactly(poster_agent: Path, tmp_path: Path):
    """Random play (epsilon 1) on 3 emulators until games end by game over, then replay."""
    out = record_activations(
        poster_agent, "fc2", 2500, tmp_path / "acts", epsilon=1.0, seed=9, n_envs=3, progress=False
    )
    doc = json.loads((out / "episodes.json").read_text())
    finished = [e for e in doc["episodes"] if e["complete"]]
    assert len(finished) >= 2  # random Ms. Pac-Man loses 3 lives within a few hundred steps
    import pandas as pd

    ctx = pd.read_parquet(out / "context.parquet")
    for e in doc["episodes"]:
        assert sum(ctx[ctx.episode == e["episode"]]["reward"]) == pytest.approx(e["return"])
    assert verify_replay(out) == {"checked": 2500, "mismatches": []}


def test_a_killed_training_process_resumes_from_its_last_checkpoint(tmp_path: Path):
    out = tmp_path / "agent"
    cmd = [
        sys.executable, "-m", "rlsae", "dqn", "train", "--arch", "nature", "--steps", "3000",
        "--out", str(out), "--checkpoint-every", "100", "--buffer-size", "500",
        "--learning-starts", "50", "--batch-size", "4", "--train-freq", "20",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list_checkpoints(out)) < 2:
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = list_checkpoints(out)
    assert len(done) >= 2 and not (out / "agent.json").exists()
    last = int(done[-1].name.split("_")[1])
    assert last < 3000
    target = 400 if last < 400 else last + 100
    resume = list(cmd)
    resume[resume.index("--steps") + 1] = str(target)
    res = subprocess.run(
        [*resume, "--resume", "--json"], capture_output=True, text=True, check=True
    )
    info = json.loads(res.stdout)
    assert info["steps_trained"] == target
    agent = load_agent(out)
    assert agent.info["steps_trained"] == target
    names = [p.name for p in list_checkpoints(out)]
    assert names[-1] == f"step_{target}"
    # the resumed run continued from the checkpoint's step count, not from zero
    assert all(f"step_{s}" in names for s in range(100, target + 1, 100))


def test_reference_sb3_path_trains_the_same_network(tmp_path: Path):
    """SB3's make_atari_env + VecFrameStack and our env feed the same NatureCNN DQN."""
    from stable_baselines3 import DQN

    from rlsae.agents.envs import make_reference_env, make_vec_env
    from rlsae.agents.networks import policy_kwargs

    shapes = []
    for env in (make_vec_env("nature", 2, seed=0), make_reference_env("nature", 2, seed=0)):
        model = DQN("CnnPolicy", env, policy_kwargs=policy_kwargs("nature"), buffer_size=300,
                    learning_starts=50, batch_size=4, train_freq=25, device="cpu", seed=0)  # fmt: skip
        model.learn(150)
        shapes.append(tuple(model.observation_space.shape))
        obs = model.env.reset()
        assert np.asarray(obs).shape == (2, 4, 84, 84)
        env.close()
    assert shapes == [(4, 84, 84), (4, 84, 84)]
