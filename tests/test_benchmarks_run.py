"""The benchmark scripts run end to end at tiny sizes and print what their docs promise (their
figures are measured by hand, on purpose: these tests only keep the scripts from breaking when the
code under them moves, as ``sae_throughput.py --kinds`` once did). No assertion on time."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _json_lines(*args: str) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_sae_throughput_prints_a_row_per_kind() -> None:
    rows = _json_lines(
        "benchmarks/sae_throughput.py", "--threads", "1", "--d-in", "32", "--d-sae", "128",
        "--k", "8", "--batch", "256", "--steps", "2", "--settle-steps", "5",
        "--kinds", "topk,batchtopk,matryoshka,jumprelu",
    )  # fmt: skip
    kinds = [r.get("kind", "topk") for r in rows]
    assert kinds == ["topk", "batchtopk", "matryoshka", "jumprelu", "jumprelu_settled"]
    for r in rows:
        for key in ("ms_ours", "ms_saelens", "ratio_vs_saelens", "fvu_ours", "fvu_saelens"):
            assert math.isfinite(r[key]) and r[key] > 0, (r.get("kind"), key)
    settled = rows[-1]
    assert 0 < settled["regime_start"]["candidate_fraction"] <= 1
    assert rows[0]["native_kernels"].startswith(("on", "off"))


@pytest.mark.slow
def test_agent_play_ends_with_one_json_object_per_arch_and_envs() -> None:
    proc = subprocess.run(
        [sys.executable, "benchmarks/agent_play.py", "--steps-per-env", "10", "--envs", "2",
         "--arch", "poster", "nature", "--episodes-per-env", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["episodes_per_env"] == 2 and res["repeat"] == 1
    assert [(r["arch"], r["n_envs"]) for r in res["rows"]] == [("poster", 2), ("nature", 2)]
    for r in res["rows"]:
        for key in ("eval", "record", "eval_steady", "record_steady", "floor", "record_ram"):
            assert r[f"{key}_steps_per_s"] > 0, key
        assert r["ram_replay_rows_per_s"] > 0 and r["record_ram_steady_vs_floor"] > 0
        assert r["eval_vs_floor"] == pytest.approx(
            r["eval_steps_per_s"] / r["floor_steps_per_s"], rel=0.01, abs=0.002
        )
        # the steady state leaves out the build and first resets: it is never the slower one
        assert r["eval_steady_steps_per_s"] >= r["eval_steps_per_s"]
        assert r["record_steady_steps_per_s"] >= r["record_steps_per_s"]
        assert 0 < r["eval_start_s"] and 0 < r["record_start_s"]
        assert len(r["record_steady_vs_floor_runs"]) == 1
