"""Resume cannot mix runs, temporary files never reach a finished SAE, one permission rule, typed
results, and ``sae train``'s options agree with TrainConfig (issues 12 and 18)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from rlsae.errors import RlsaeError
from rlsae.sae import ActivationStore, SAEMetrics, TrainingRecord, load_sae
from rlsae.sae.train import FINISHED, TrainConfig, train_sae

from .conftest import superposition, write_store

CFG = dict(d_sae=32, k=4, steps=30, batch_size=128, checkpoint_every=5)
"""A run the CLI can repeat: ``--d-sae 32 --k 4 --steps 30 --batch-size 128 ...``."""


@pytest.fixture
def two_stores(tmp_path):
    """Two stores of the same width, rows and shard layout, with different rows."""
    a, _ = superposition(2000, d=16, n_true=32, seed=0)
    b, _ = superposition(2000, d=16, n_true=32, seed=1)
    return (
        write_store(tmp_path / "acts_a", a, shard_rows=500, hook="h", source="toy"),
        write_store(tmp_path / "acts_b", b, shard_rows=500, hook="h", source="toy"),
    )


def _interrupt_at(n):
    def on_step(step, stats):
        if step == n:
            raise KeyboardInterrupt

    return on_step


def _interrupted(store, out, cfg, at=12):
    with pytest.raises(KeyboardInterrupt):
        train_sae(store, out, cfg, progress=False, on_step=_interrupt_at(at))
    assert (out.with_name(f".{out.name}.partial") / "checkpoints" / "latest.pt").is_file()


def test_resume_with_another_k_is_refused_in_one_line(tmp_path, run_cli, two_stores):
    store, _ = two_stores
    out = tmp_path / "sae"
    _interrupted(store, out, TrainConfig(**CFG))
    args = ["sae", "train", "--acts", store, "--out", out, "--d-sae", 32, "--steps", 30]
    args += ["--batch-size", 128, "--checkpoint-every", 5, "--resume"]
    code, stdout, err = run_cli(*args, "--k", 8)
    assert code == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot resume"), err
    assert "k 4 -> 8" in lines[0] and "Traceback" not in err
    assert not out.exists()
    # the Python API alike
    with pytest.raises(RlsaeError, match=r"other settings \(k 4 -> 8\)"):
        train_sae(store, out, TrainConfig(**{**CFG, "k": 8}), resume=True, progress=False)
    # the same settings resume (another --checkpoint-every is allowed: it changes nothing)
    code, stdout, err = run_cli(*args[:-2], 7, "--resume", "--k", 4, "--json")
    assert code == 0, err
    full = train_sae(store, tmp_path / "full", TrainConfig(**CFG), progress=False)
    back = load_sae(out)
    for name, p in full.state_dict().items():
        assert torch.equal(p, back.state_dict()[name]), name
    # a finished SAE resumed with another setting is refused too, not silently returned
    with pytest.raises(RlsaeError, match=r"other settings \(lr None -> 0.01\)"):
        train_sae(store, out, TrainConfig(**{**CFG, "lr": 0.01}), resume=True, progress=False)


def test_resume_on_another_store_of_the_same_width_is_refused(tmp_path, run_cli, two_stores):
    """Same width, rows, hook and source: only the content fingerprint tells them apart."""
    a, b = two_stores
    ia, ib = ActivationStore(a).identity(), ActivationStore(b).identity()
    assert (ia.d_in, ia.rows, ia.hook, ia.source) == (ib.d_in, ib.rows, ib.hook, ib.source)
    assert ia.fingerprint != ib.fingerprint
    out = tmp_path / "sae"
    _interrupted(a, out, TrainConfig(**CFG))
    args = ["sae", "train", "--out", out, "--d-sae", 32, "--k", 4, "--steps", 30]
    args += ["--batch-size", 128, "--checkpoint-every", 5, "--resume"]
    code, stdout, err = run_cli(*args, "--acts", b)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "another activation store" in lines[0] and "fingerprint" in lines[0]
    assert not out.exists()
    # a copy of the right store (another path, same content) is the same store
    import shutil

    shutil.copytree(a, tmp_path / "copy_of_a")
    code, stdout, err = run_cli(*args, "--acts", tmp_path / "copy_of_a", "--json")
    assert code == 0, err
    record = TrainingRecord.read(out / "training.json")
    assert record.store.fingerprint == ia.fingerprint
    assert record.store_path == str(tmp_path / "copy_of_a")
    with pytest.raises(RlsaeError, match="another activation store"):
        train_sae(b, out, TrainConfig(**CFG), resume=True, progress=False)


def test_temp_files_of_a_killed_write_never_reach_the_finished_sae(tmp_path, two_stores):
    """A kill -9 inside an atomic JSON write leaves ``.history.json.<random>`` in the partial
    directory (and a checkpoint write its own); neither is published, on resume or at the end."""
    store, _ = two_stores
    out = tmp_path / "sae"
    cfg = TrainConfig(**CFG)
    _interrupted(store, out, cfg)
    work = tmp_path / ".sae.partial"
    (work / ".history.json.k2j4l0x_").write_text('[{"step": 5')  # half-written, as a kill leaves
    (work / "checkpoints" / ".latest.pt.a8f0q1").write_bytes(b"\x80\x02")

    def stray(step, stats):  # a temp file appearing in the work dir during the last step
        if step == cfg.steps:
            (work / ".training.json.zz9").write_text("{")
            (work / "notes.txt").write_text("not part of an SAE")

    train_sae(store, out, cfg, resume=True, progress=False, on_step=stray)
    assert sorted(p.name for p in out.iterdir()) == sorted(FINISHED)
    assert not work.exists()
    assert not [p for p in tmp_path.rglob(".*") if p.name != ".sae.partial"]


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_store_and_sae_follow_the_umask(tmp_path, small_acts, mask):
    """One rule for every artifact: the user's umask (a store used to be 0700 from mkdtemp)."""
    old = os.umask(mask)
    try:
        store = write_store(tmp_path / "acts", small_acts, shard_rows=400)
        train_sae(store, tmp_path / "sae", TrainConfig(d_sae=32, k=4, steps=3), progress=False)
    finally:
        os.umask(old)
    for d in (store, tmp_path / "sae"):
        assert d.stat().st_mode & 0o777 == 0o777 & ~mask, d
        for f in d.iterdir():
            assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f


def test_training_json_and_eval_json_are_typed_artifacts(tmp_path, run_cli, two_stores):
    store, _ = two_stores
    out = tmp_path / "sae"
    train_sae(store, out, TrainConfig(**CFG), progress=False)
    data = json.loads((out / "training.json").read_text())
    assert (data["format"], data["version"]) == ("rlsae.sae_training", 1)
    record = TrainingRecord.read(out / "training.json")
    assert record.config == TrainConfig(**CFG) and record.steps == 30
    assert record.final is not None and record.final.rows == 2000
    assert record.final.feature_stats == "feature_stats.safetensors"
    assert record.history[-1]["step"] == 30
    code, stdout, err = run_cli("sae", "eval", "--sae", out, "--acts", store, "--json")
    assert code == 0, err
    metrics = SAEMetrics.from_json(json.loads(stdout))
    assert metrics.rows == 2000 and metrics.d_sae == 32
    assert metrics.feature_stats == str(out / "feature_stats.safetensors")
    assert metrics.fvu == pytest.approx(record.final.fvu, rel=1e-6)
    # a file of another kind is refused in one line
    with pytest.raises(RlsaeError, match="is a 'rlsae.sae_metrics' file, not 'rlsae.sae_training'"):
        TrainingRecord.from_json(json.loads(stdout), "x.json")


def test_sae_train_options_come_from_train_config():
    """Defaults and help texts of ``sae train`` are TrainConfig's (a drift fails here)."""
    import typer.main

    from rlsae.commands._apps import sae_app
    from rlsae.commands.sae import TRAIN_OPTIONS
    from rlsae.configs import field_default, field_docs

    cmd = typer.main.get_command(sae_app).commands["train"]  # type: ignore[attr-defined]
    params = {p.opts[0]: p for p in cmd.params if p.opts}
    for name, flag in TRAIN_OPTIONS.items():
        p = params[flag]
        doc = field_docs(TrainConfig)[name].replace("``", "")
        assert p.help.replace("\\[", "[").startswith(doc), (flag, p.help, doc)
        default = field_default(TrainConfig, name)
        if p.default is None and default is not None:  # exclusive options: default in the help
            assert f"(default {default:g})" in p.help, flag
        else:
            assert p.default == default, (flag, p.default, default)
