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

from .conftest import run_cli, write_store


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


def test_d_in_mismatch(tmp_path, capsys, acts16):
    SAE(SAEConfig(d_in=8, d_sae=32, k=4), seed=0).save(tmp_path / "sae8")
    code, out, err = run_cli(
        capsys, "sae", "eval", "--sae", tmp_path / "sae8", "--acts", acts16, "--json"
    )
    _assert_clean_failure(
        code,
        out,
        err,
        tmp_path,
        match="d_in=8",
        must_not_exist=[tmp_path / "sae8" / "feature_stats.safetensors"],
    )
    code, out, err = run_cli(
        capsys, "analyze", "dead", "--sae", tmp_path / "sae8", "--acts", acts16
    )
    _assert_clean_failure(code, out, err, tmp_path, match="d_in=16")


def test_hook_mismatch_detected(tmp_path, capsys, small_acts):
    store = write_store(tmp_path / "acts", small_acts, hook="blocks.2.hook_resid_post")
    SAE(SAEConfig(d_in=16, d_sae=32, k=4, hook_name="blocks.5.hook_resid_post"), seed=0).save(
        tmp_path / "sae"
    )
    code, out, err = run_cli(capsys, "sae", "eval", "--sae", tmp_path / "sae", "--acts", store)
    _assert_clean_failure(code, out, err, tmp_path, match="blocks.5.hook_resid_post")
    code, out, err = run_cli(
        capsys, "sae", "eval", "--sae", tmp_path / "sae", "--acts", store, "--any-hook", "--json"
    )
    assert code == 0 and json.loads(out)["rows"] == 1000


def test_nan_in_store_names_shard_and_row(tmp_path, capsys, small_acts):
    store = write_store(tmp_path / "acts", small_acts, shard_rows=400)
    bad = small_acts[400:800].clone()
    bad[123, 5] = float("nan")
    save_file({"activations": bad}, str(store / "shard_00001.safetensors"))
    out_dir = tmp_path / "sae"
    code, out, err = run_cli(
        capsys,
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


def test_inf_in_imported_file(tmp_path, capsys, small_acts):
    x = small_acts.numpy().copy()
    x[777, 0] = np.inf
    np.save(tmp_path / "m.npy", x)
    code, out, err = run_cli(
        capsys, "acts", "import", "--from", tmp_path / "m.npy", "--out", tmp_path / "acts"
    )
    _assert_clean_failure(
        code, out, err, tmp_path, match="row 777", must_not_exist=[tmp_path / "acts"]
    )
    assert "Inf" in err


def test_truncated_and_corrupt_safetensors(tmp_path, capsys, acts16):
    shard = acts16 / "shard_00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    code, out, err = run_cli(
        capsys, "sae", "train", "--acts", acts16, "--out", tmp_path / "s", "--d-sae", 32, "--k", 4
    )
    _assert_clean_failure(
        code, out, err, tmp_path, match="truncated", must_not_exist=[tmp_path / "s"]
    )

    SAE(SAEConfig(d_in=16, d_sae=32, k=4), seed=0).save(tmp_path / "sae")
    (tmp_path / "sae" / "sae_weights.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all"
    )
    code, out, err = run_cli(
        capsys, "analyze", "mmcs", "--sae", tmp_path / "sae", "--sae", tmp_path / "sae"
    )
    _assert_clean_failure(code, out, err, tmp_path, match="sae_weights.safetensors")

    (tmp_path / "garbage.safetensors").write_bytes(b"garbage")
    code, out, err = run_cli(
        capsys,
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


def test_k_larger_than_d_sae(tmp_path, capsys, acts16):
    out_dir = tmp_path / "sae"
    code, out, err = run_cli(
        capsys, "sae", "train", "--acts", acts16, "--out", out_dir, "--d-sae", 16, "--k", 17
    )
    _assert_clean_failure(
        code, out, err, tmp_path, match="k must be between 1 and d_sae=16", must_not_exist=[out_dir]
    )


def test_empty_inputs(tmp_path, capsys):
    np.save(tmp_path / "empty.npy", np.zeros((0, 8), dtype=np.float32))
    code, out, err = run_cli(
        capsys, "acts", "import", "--from", tmp_path / "empty.npy", "--out", tmp_path / "acts"
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
    code, out, err = run_cli(capsys, "sae", "train", "--acts", empty, "--out", tmp_path / "sae")
    _assert_clean_failure(
        code, out, err, tmp_path, match="empty", must_not_exist=[tmp_path / "sae"]
    )


def test_missing_paths(tmp_path, capsys, acts16):
    code, out, err = run_cli(
        capsys, "sae", "train", "--acts", tmp_path / "nope", "--out", tmp_path / "sae"
    )
    _assert_clean_failure(
        code, out, err, tmp_path, match="not found", must_not_exist=[tmp_path / "sae"]
    )
    code, out, err = run_cli(capsys, "sae", "eval", "--sae", tmp_path / "nosae", "--acts", acts16)
    _assert_clean_failure(code, out, err, tmp_path, match="not found")
    code, out, err = run_cli(
        capsys, "acts", "import", "--from", tmp_path / "x.npy", "--out", tmp_path / "a"
    )
    _assert_clean_failure(
        code, out, err, tmp_path, match="not found", must_not_exist=[tmp_path / "a"]
    )


def test_pickled_pt_file_is_refused(tmp_path, capsys):
    torch.save({"not": "a tensor", "fn": print}, tmp_path / "p.pt")
    code, out, err = run_cli(
        capsys, "acts", "import", "--from", tmp_path / "p.pt", "--out", tmp_path / "a"
    )
    _assert_clean_failure(code, out, err, tmp_path, match="p.pt", must_not_exist=[tmp_path / "a"])


def test_existing_output_is_not_overwritten(tmp_path, capsys, acts16, small_acts):
    np.save(tmp_path / "m.npy", small_acts.numpy())
    code, out, err = run_cli(
        capsys, "acts", "import", "--from", tmp_path / "m.npy", "--out", acts16
    )
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
