"""Slow tier: a real interruption of the ``rlsae`` process, and a pinned end-to-end regression."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from rlsae.sae import load_sae

from .conftest import superposition, write_store

pytestmark = pytest.mark.slow


def _train_cmd(store, out, *extra):
    return [
        sys.executable, "-m", "rlsae", "sae", "train", "--acts", str(store), "--out", str(out),
        "--d-sae", "256", "--k", "8", "--steps", "400", "--batch-size", "256", "--lr", "2e-3",
        "--checkpoint-every", "20", "--seed", "7", *extra,
    ]  # fmt: skip


def test_sigint_then_resume_matches_uninterrupted_run(tmp_path):
    x, _ = superposition(20000, d=64, n_true=256, p=0.02, seed=5)
    store = write_store(tmp_path / "acts", x, shard_rows=5000)
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run(
        _train_cmd(store, tmp_path / "full", "--json"),
        check=True,
        capture_output=True,
        timeout=600,
        env={**__import__("os").environ, **env},
    )

    proc = subprocess.Popen(
        _train_cmd(store, tmp_path / "cut"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**__import__("os").environ, **env},
    )
    ckpt = tmp_path / ".cut.partial" / "checkpoints" / "latest.pt"
    history = tmp_path / ".cut.partial" / "history.json"
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until at least one periodic checkpoint (step >= 20) exists
        if history.is_file() and json.loads(history.read_text() or "[]"):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("training finished before it could be interrupted on this machine")
    assert proc.returncode == 130, err.decode()[-500:]
    assert not (tmp_path / "cut").exists() and ckpt.is_file()

    done = subprocess.run(
        _train_cmd(store, tmp_path / "cut", "--resume", "--json"),
        capture_output=True,
        timeout=600,
        env={**__import__("os").environ, **env},
    )
    assert done.returncode == 0, done.stderr.decode()[-500:]
    a, b = load_sae(tmp_path / "full"), load_sae(tmp_path / "cut")
    for name, p in a.state_dict().items():
        assert torch.equal(p, b.state_dict()[name]), name
    ha = json.loads((tmp_path / "full" / "training.json").read_text())
    hb = json.loads((tmp_path / "cut" / "training.json").read_text())
    assert ha["history"] == hb["history"] and ha["final"] == hb["final"]
