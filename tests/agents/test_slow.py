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
from rlsae.agents.replay import ReplayCheck, verify_replay

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
        assert sum(ctx[ctx.episode == e["episode"]]["reward"]) == pytest.approx(e["score"])
    assert verify_replay(out) == ReplayCheck(checked=2500, mismatches=[])


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
    last = done[-1].step
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
    assert agent.info.steps_trained == target
    names = [c.path.name for c in list_checkpoints(out)]
    assert names[-1] == f"step_{target}"
    # the resumed run continued from the checkpoint's step count, not from zero
    assert all(f"step_{s}" in names for s in range(100, target + 1, 100))
    # no temporary file of a write the kill interrupted reaches the finished agent
    assert [p for p in out.rglob("*") if p.name.startswith(".")] == []


def test_reference_sb3_path_sees_the_same_game_and_trains_the_same_network(tmp_path: Path):
    """SB3's make_atari_env + VecFrameStack and our C++ env: without sticky actions and no-ops
    both are deterministic, so the same actions must give the same rewards, the same life-loss
    step and the same 84x84x4 frames up to the resize's rounding (ALE's C++ resize vs cv2's);
    and both feed the same NatureCNN DQN."""
    from stable_baselines3 import DQN

    from rlsae.agents.config import EnvConfig
    from rlsae.agents.envs import make_reference_env, make_vec_env
    from rlsae.agents.networks import policy_kwargs

    cfg = EnvConfig(mode="nature", repeat_action_probability=0.0, noop_max=0)
    ours, ref = make_vec_env(cfg, 1, seed=0), make_reference_env(cfg, 1, seed=0)
    o_ours, o_ref = ours.reset(), np.moveaxis(ref.reset(), -1, 1)  # ref is channel-last
    assert np.array_equal(o_ours, o_ref)
    rng = np.random.default_rng(0)
    frame_diffs, scored = [], 0.0
    for _ in range(1000):
        a = rng.integers(0, 9, 1)
        o_ours, r_ours, d_ours, i_ours = ours.step(a)
        o_ref, r_ref, d_ref, i_ref = ref.step(a)
        assert r_ours[0] == r_ref[0] and d_ours[0] == d_ref[0]  # sign-clipped rewards, life loss
        scored += i_ours[0]["raw_reward"]
        if d_ours[0]:  # the first life lost: SB3 resets its wrapper here, so stop comparing
            t_ours = i_ours[0]["terminal_observation"]
            t_ref = np.moveaxis(i_ref[0]["terminal_observation"], -1, 0)
            frame_diffs.append(np.abs(t_ours.astype(int) - t_ref.astype(int)).mean())
            break
        frame_diffs.append(np.abs(o_ours.astype(int) - np.moveaxis(o_ref, -1, 1)).mean())
    assert d_ours[0] and scored > 0  # the comparison covered scoring steps and a life loss
    assert max(frame_diffs) < 0.25  # mean gray-level difference per pixel
    ours.close()
    ref.close()

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


def test_killed_recordings_resume_to_the_uninterrupted_result(poster_agent: Path, tmp_path: Path):
    """kill -9 at seeded random points during `dqn record`, then --resume: the store equals an
    uninterrupted recording byte for byte, and no temporary file is left in or beside it."""
    import random

    base = [sys.executable, "-m", "rlsae", "dqn", "record", "--agent", str(poster_agent),
            "--layer", "fc1", "--steps", "600", "--n-envs", "2", "--max-episode-steps", "90"]  # fmt: skip
    ref = tmp_path / "ref"
    subprocess.run([*base, "--out", str(ref)], check=True, capture_output=True)
    rng = random.Random(0)
    for i in range(3):
        out = tmp_path / f"killed{i}"
        proc = subprocess.Popen([*base, "--out", str(out)], stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 9.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        subprocess.run([*base, "--out", str(out), "--resume"], check=True, capture_output=True)
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref.iterdir())
        for p in ref.iterdir():
            assert (out / p.name).read_bytes() == p.read_bytes() or p.name == "meta.json", p
        meta, meta_ref = (json.loads((d / "meta.json").read_text()) for d in (out, ref))
        assert meta == meta_ref
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert left == [] or all(".tmp-" in n for n in left)  # a killed writer's sibling temp dir
    assert not any(p.name.startswith(".") for d in tmp_path.iterdir() for p in d.rglob("*"))
