"""Bad input: one line on stderr, exit status 2, and no half-written output directory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from rlsae.sae import SAE, SAEConfig

from .conftest import write_store


def _assert_clean_failure(code, out, err, tmp_path, *, match, must_not_exist=()):
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0], lines[0]
    for p in must_not_exist:
        assert not p.exists(), p
    # no temporary or partial siblings left behind either
    leftovers = [
        p.name for p in tmp_path.rglob(".*") if "tmp-" in p.name or p.name.endswith(".partial")
    ]
    assert leftovers == []


@pytest.fixture
def acts16(tmp_path, small_acts):
    return write_store(tmp_path / "acts16", small_acts, shard_rows=400)


def test_d_in_mismatch(tmp_path, capsys, acts16, run_cli):
    SAE(SAEConfig(d_in=8, d_sae=32, k=4), seed=0).save(tmp_path / "sae8")
    code, out, err = run_cli("sae", "eval", "--sae", tmp_path / "sae8", "--acts", acts16, "--json")
    _assert_clean_failure(
        code,
        out,
        err,
        tmp_path,
        match="d_in=8",
        must_not_exist=[tmp_path / "sae8" / "feature_stats.safetensors"],
    )
    code, out, err = run_cli("analyze", "dead", "--sae", tmp_path / "sae8", "--acts", acts16)
    _assert_clean_failure(code, out, err, tmp_path, match="d_in=16")


def test_hook_mismatch_detected(tmp_path, capsys, small_acts, run_cli):
    store = write_store(tmp_path / "acts", small_acts, hook="blocks.2.hook_resid_post")
    SAE(SAEConfig(d_in=16, d_sae=32, k=4, hook_name="blocks.5.hook_resid_post"), seed=0).save(
        tmp_path / "sae"
    )
    code, out, err = run_cli("sae", "eval", "--sae", tmp_path / "sae", "--acts", store)
    _assert_clean_failure(code, out, err, tmp_path, match="blocks.5.hook_resid_post")
    code, out, err = run_cli(
        "sae", "eval", "--sae", tmp_path / "sae", "--acts", store, "--any-hook", "--json"
    )
    assert code == 0 and json.loads(out)["rows"] == 1000


def test_nan_in_store_names_shard_and_row(tmp_path, capsys, small_acts, run_cli):
    store = write_store(tmp_path / "acts", small_acts, shard_rows=400)
    bad = small_acts[400:800].clone()
    bad[123, 5] = float("nan")
    save_file({"activations": bad}, str(store / "shard_00001.safetensors"))
    out_dir = tmp_path / "sae"
    code, out, err = run_cli(
        "sae",
        "train",
        "--acts",
        store,
        "--out",
        out_dir,
        "--d-sae",
        32,
        "--k",
        4,
        "--batch-size",
        100,
    )
    _assert_clean_failure(
        code, out, err, tmp_path, match="shard_00001.safetensors", must_not_exist=[out_dir]
    )
    assert "row 123" in err and "NaN" in err


def test_inf_in_imported_file(tmp_path, capsys, small_acts, run_cli):
    x = small_acts.numpy().copy()
    x[777, 0] = np.inf
    np.save(tmp_path / "m.npy", x)
    code, out, err = run_cli(
        "acts", "import", "--from", tmp_path / "m.npy", "--out", tmp_path / "acts"
    )
    _assert_clean_failure(
        code, out, err, tmp_path, match="row 777", must_not_exist=[tmp_path / "acts"]
    )
    assert "Inf" in err


def test_truncated_and_corrupt_safetensors(tmp_path, capsys, acts16, run_cli):
    shard = acts16 / "shard_00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    code, out, err = run_cli(
        "sae", "train", "--acts", acts16, "--out", tmp_path / "s", "--d-sae", 32, "--k", 4
    )
    _assert_clean_failure(
        code, out, err, tmp_path, match="truncated", must_not_exist=[tmp_path / "s"]
    )

    SAE(SAEConfig(d_in=16, d_sae=32, k=4), seed=0).save(tmp_path / "sae")
    (tmp_path / "sae" / "sae_weights.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all"
    )
    code, out, err = run_cli(
        "analyze", "mmcs", "--sae", tmp_path / "sae", "--sae", tmp_path / "sae"
    )
    _assert_clean_failure(code, out, err, tmp_path, match="sae_weights.safetensors")

    (tmp_path / "garbage.safetensors").write_bytes(b"garbage")
    code, out, err = run_cli(
        "acts",
        "import",
        "--from",
        tmp_path / "garbage.safetensors",
        "--out",
        tmp_path / "a2",
    )
    _assert_clean_failure(
        code, out, err, tmp_path, match="garbage.safetensors", must_not_exist=[tmp_path / "a2"]
    )


def test_k_larger_than_d_sae(tmp_path, capsys, acts16, run_cli):
    out_dir = tmp_path / "sae"
    code, out, err = run_cli(
        "sae", "train", "--acts", acts16, "--out", out_dir, "--d-sae", 16, "--k", 17
    )
    _assert_clean_failure(
        code, out, err, tmp_path, match="k must be between 1 and d_sae=16", must_not_exist=[out_dir]
    )


def test_empty_inputs(tmp_path, capsys, run_cli):
    np.save(tmp_path / "empty.npy", np.zeros((0, 8), dtype=np.float32))
    code, out, err = run_cli(
        "acts", "import", "--from", tmp_path / "empty.npy", "--out", tmp_path / "acts"
    )
    _assert_clean_failure(
        code, out, err, tmp_path, match="non-empty", must_not_exist=[tmp_path / "acts"]
    )
    # a store directory whose meta.json says it has no rows
    empty = tmp_path / "empty_store"
    empty.mkdir()
    meta = {
        "format": "rlsae-activations",
        "version": 1,
        "d_in": 8,
        "dtype": "float32",
        "rows": 0,
        "shards": [],
    }
    (empty / "meta.json").write_text(json.dumps(meta))
    code, out, err = run_cli("sae", "train", "--acts", empty, "--out", tmp_path / "sae")
    _assert_clean_failure(
        code, out, err, tmp_path, match="empty", must_not_exist=[tmp_path / "sae"]
    )


def test_missing_paths(tmp_path, capsys, acts16, run_cli):
    code, out, err = run_cli("sae", "train", "--acts", tmp_path / "nope", "--out", tmp_path / "sae")
    _assert_clean_failure(
        code, out, err, tmp_path, match="not found", must_not_exist=[tmp_path / "sae"]
    )
    code, out, err = run_cli("sae", "eval", "--sae", tmp_path / "nosae", "--acts", acts16)
    _assert_clean_failure(code, out, err, tmp_path, match="not found")
    code, out, err = run_cli(
        "acts", "import", "--from", tmp_path / "x.npy", "--out", tmp_path / "a"
    )
    _assert_clean_failure(
        code, out, err, tmp_path, match="not found", must_not_exist=[tmp_path / "a"]
    )


def test_pickled_pt_file_is_refused(tmp_path, capsys, run_cli):
    torch.save({"not": "a tensor", "fn": print}, tmp_path / "p.pt")
    code, out, err = run_cli("acts", "import", "--from", tmp_path / "p.pt", "--out", tmp_path / "a")
    _assert_clean_failure(code, out, err, tmp_path, match="p.pt", must_not_exist=[tmp_path / "a"])


def test_existing_output_is_not_overwritten(tmp_path, capsys, acts16, small_acts, run_cli):
    np.save(tmp_path / "m.npy", small_acts.numpy())
    code, out, err = run_cli("acts", "import", "--from", tmp_path / "m.npy", "--out", acts16)
    _assert_clean_failure(code, out, err, tmp_path, match="already exists")
    assert (acts16 / "meta.json").is_file()


def test_console_script_exit_status(tmp_path):
    """The installed ``rlsae`` command itself: one line, status 2, no traceback."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlsae",
            "sae",
            "eval",
            "--sae",
            str(tmp_path / "none"),
            "--acts",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


# --- values a user can type: refused in one line before any work or file (issue 18) ----------

TRAIN_BASE = ("--d-sae", 32, "--k", 4, "--steps", 5, "--batch-size", 100)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("--lr", -0.001), "lr: must be above 0"),
        (("--lr", 0), "lr: must be above 0"),
        (("--lr", "nan"), "lr: expected a finite number"),
        (("--lr", "inf"), "lr: expected a finite number"),
        (("--aux-k", -1), "aux_k: must be at least 0"),
        (("--dead-rows", -5), "dead_rows: must be at least 1"),
        (("--checkpoint-every", 0), "checkpoint_every: must be at least 1"),
        (("--batch-size", 0), "batch_size: must be at least 1"),
        (("--batch-size", -3), "batch_size: must be at least 1"),
        (("--k", 0), "k: must be at least 1"),
        (("--k", 33), "k must be between 1 and d_sae=32"),
        (("--steps", 0), "steps: must be at least 1"),
        (("--seed", -1), "seed: must be between 0"),
        (("--l1", -1), "l1: must be at least 0"),
        (("--arch", "gated"), "arch: expected one of topk, relu, batchtopk"),
        (("--threads", 0), "--threads must be at least 1"),
    ],
)
def test_sae_train_refuses_bad_values(tmp_path, run_cli, acts16, args, match):
    """Each bad value: exit 2, one ``error:`` line, no traceback, nothing at --out and no
    .partial left to block the corrected run (``--checkpoint-every 0`` used to leave one)."""
    out_dir = tmp_path / "sae"
    # the settings win over the store: a bad value is refused before the store is even opened
    base = [a for a in TRAIN_BASE]
    for i in range(0, len(args), 2):  # the value given replaces the base's
        if args[i] in base:
            del base[base.index(args[i]) : base.index(args[i]) + 2]
    cmd = ["sae", "train", "--acts", acts16, "--out", out_dir, *base, *args]
    code, out, err = run_cli(*cmd)
    _assert_clean_failure(code, out, err, tmp_path, match=match, must_not_exist=[out_dir])
    assert "Traceback" not in err and out == ""
    # the corrected command then runs
    fixed = ["sae", "train", "--acts", acts16, "--out", out_dir, *TRAIN_BASE, "--json"]
    code, out, err = run_cli(*fixed)
    assert code == 0, err


def test_bad_setting_is_refused_before_the_store_is_read(tmp_path, capsys, run_cli):
    code, out, err = run_cli(
        "sae", "train", "--acts", tmp_path / "missing", "--out", tmp_path / "s", "--lr", -1
    )
    _assert_clean_failure(code, out, err, tmp_path, match="lr: must be above 0")


def test_epochs_and_expansion_refused(tmp_path, capsys, acts16, run_cli):
    for args, match in ((("--epochs", 0), "epochs: must be above 0"), (("--expansion", 0), "expansion: must be above 0")):  # fmt: skip
        code, out, err = run_cli("sae", "train", "--acts", acts16, "--out", tmp_path / "s", *args)
        _assert_clean_failure(
            code, out, err, tmp_path, match=match, must_not_exist=[tmp_path / "s"]
        )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("--batch-size", 0), "batch size must be a positive integer, got 0"),
        (("--batch-size", -4), "batch size must be a positive integer, got -4"),
        (("--max-rows", -5), "max rows must be a positive integer, got -5"),
        (("--max-rows", 0), "max rows must be a positive integer, got 0"),
    ],
)
def test_sae_eval_and_analyze_dead_refuse_bad_sizes(tmp_path, capsys, acts16, args, match, run_cli):
    """``--max-rows -5`` used to drop the last 5 rows silently; ``--batch-size 0`` was a
    traceback. Nothing is written (no feature_stats)."""
    SAE(SAEConfig(d_in=16, d_sae=32, k=4), seed=0).save(tmp_path / "sae")
    stats = tmp_path / "sae" / "feature_stats.safetensors"
    code, out, err = run_cli(
        "sae", "eval", "--sae", tmp_path / "sae", "--acts", acts16, *args, "--json"
    )
    _assert_clean_failure(code, out, err, tmp_path, match=match, must_not_exist=[stats])
    if args[0] == "--batch-size":  # analyze dead has no --max-rows
        code, out, err = run_cli(
            "analyze", "dead", "--sae", tmp_path / "sae", "--acts", acts16, *args
        )
        _assert_clean_failure(code, out, err, tmp_path, match=match, must_not_exist=[stats])


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
def test_complex_activations_are_refused(tmp_path, run_cli, small_acts, suffix):
    """A complex matrix used to be imported with its imaginary part dropped."""
    z = small_acts.numpy() + 1j * small_acts.numpy()
    src = tmp_path / f"z{suffix}"
    if suffix == ".npy":
        np.save(src, z)
    else:
        torch.save(torch.from_numpy(z), src)
    code, out, err = run_cli("acts", "import", "--from", src, "--out", tmp_path / "a")
    _assert_clean_failure(
        code, out, err, tmp_path, match="complex", must_not_exist=[tmp_path / "a"]
    )


def test_acts_import_refuses_bad_shard_rows_before_reading(tmp_path, capsys, small_acts, run_cli):
    np.save(tmp_path / "m.npy", small_acts.numpy())
    code, out, err = run_cli(
        "acts", "import", "--from", tmp_path / "m.npy", "--out", tmp_path / "a",
        "--shard-rows", 0,
    )  # fmt: skip
    _assert_clean_failure(
        code, out, err, tmp_path, match="shard-rows must be a positive integer",
        must_not_exist=[tmp_path / "a"],
    )  # fmt: skip
    from rlsae.errors import RlsaeError
    from rlsae.sae import import_activations

    with pytest.raises(RlsaeError, match="shard_rows must be a positive integer, got 0"):
        import_activations(tmp_path / "m.npy", tmp_path / "a", shard_rows=0)
    assert not (tmp_path / "a").exists()


def test_train_config_validate_is_the_one_check():
    """The same validate() serves the Python API (train_sae), config files (from_mapping, with
    the file and key in the message) and the CLI."""
    from rlsae.configs import from_mapping
    from rlsae.errors import RlsaeError
    from rlsae.sae import TrainConfig, train_sae

    with pytest.raises(RlsaeError, match=r"^study\.yaml: lr: must be above 0, got -1"):
        from_mapping(TrainConfig, {"lr": -1}, "study.yaml")
    with pytest.raises(RlsaeError, match=r"^study\.yaml: batch_size: expected an integer"):
        from_mapping(TrainConfig, {"batch_size": "big"}, "study.yaml")
    with pytest.raises(RlsaeError, match=r"^TrainConfig: betas\[1\]: must be below 1"):
        train_sae("nowhere", "nowhere_out", TrainConfig(betas=(0.9, 1.0)))
    with pytest.raises(RlsaeError, match=r"^TrainConfig: aux_k: expected an integer, got 2.5"):
        TrainConfig(aux_k=2.5).validate()  # type: ignore[arg-type]
    TrainConfig().validate()  # the defaults are valid
