"""Slow tier (issue 18): `dqn train` killed with SIGKILL at seeded points, then resumed, ends
with the uninterrupted run's weights and training log, bit for bit, with no temporary file left.
"""

from __future__ import annotations

import io
import json
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from rlsae.agents.agent_dir import list_checkpoints

pytestmark = pytest.mark.slow

# two emulators, the replay buffer filled and wrapped, several target syncs, whole games ending
ARGS = ["--arch", "nature", "--steps", "1600", "--checkpoint-every", "200", "--n-envs", "2",
        "--buffer-size", "300", "--learning-starts", "100", "--batch-size", "4",
        "--train-freq", "10", "--seed", "3", "--set", "target_update_interval=60",
        "--set", "exploration_fraction=0.5", "--json"]  # fmt: skip


def _train(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rlsae", "dqn", "train", "--out", str(out), *ARGS, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _weights(agent_dir: Path) -> dict[str, torch.Tensor]:
    with zipfile.ZipFile(agent_dir / "model.zip") as z:
        return torch.load(io.BytesIO(z.read("policy.pth")), weights_only=True)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_killed_dqn_training_resumes_to_the_uninterrupted_run(tmp_path: Path):
    ref = tmp_path / "ref"
    done = _train(ref)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    ref_log = json.loads((ref / "train_log.json").read_text())
    assert ref_log["steps"] == 1600 and len(ref_log["episodes"]) >= 2  # games ended in training

    rng = random.Random(18)
    run = tmp_path / "killed"
    killed_mid_run = 0
    seen = 0
    states: list[str] = []
    for attempt in range(3):
        proc = _train(run, *(["--resume"] if attempt else []))
        # kill at a seeded moment after the next checkpoint appears: sometimes before the
        # state of that checkpoint is written (the resume then goes back further), sometimes
        # after it, sometimes in the middle of writing one
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            steps = [c.step for c in list_checkpoints(run)]
            if steps and steps[-1] > seen:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_mid_run += 1
        proc.wait(timeout=60)
        seen = max([c.step for c in list_checkpoints(run)], default=seen)
        states += [p.name for p in (run / "resume").glob("step_*")]
        assert not (run / "agent.json").exists() or proc.returncode == 0
    assert killed_mid_run >= 2
    assert states, "no kill left a saved state: every resume started over"
    print(f"\nkilled {killed_mid_run} times; states left by the kills: {states}")

    final = _train(run, "--resume")
    out, err = final.communicate(timeout=600)
    assert final.returncode == 0, err
    assert json.loads(out)["steps_trained"] == 1600
    assert _same(_weights(run), _weights(ref))
    assert (run / "train_log.json").read_bytes() == (ref / "train_log.json").read_bytes()
    ckpts = [c.step for c in list_checkpoints(ref)]
    assert [c.step for c in list_checkpoints(run)] == ckpts == list(range(200, 1601, 200))
    for step in ckpts:  # every published agent of the population too
        name = f"checkpoints/step_{step}"
        assert _same(_weights(run / name), _weights(ref / name)), step
    assert not (run / "resume").exists()
    assert [p for p in run.rglob("*") if p.name.startswith(".")] == []
