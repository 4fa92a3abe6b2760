"""The dead-features study end to end on the real parts (emulator, SB3, SAE core), smoke scale;
resuming it; the same per-agent work as Ray tasks on a local Ray instance. Slow tier."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import torch

from rlsae.analysis.fit import fit_xy
from rlsae.configs import from_mapping
from rlsae.study.atari import preset_dict, run_atari_pipeline, run_study
from rlsae.study.atari_config import StudyConfig

pytestmark = pytest.mark.slow

STAGE_FILES = ("eval.json", "record.json", "sae.json", "live.json", "splice.json", "concepts.json")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("study") / "smoke"
    res = run_atari_pipeline(run, "smoke", workers=2)  # a pool of two, whatever the core count
    return run, res


def test_smoke_study_end_to_end(smoke_run) -> None:
    run, res = smoke_run
    assert res["agents"] == 4 and res["stages_run"] == 24 and res["stages_skipped"] == 0
    # the four agents ran on the pool's two worker processes, not here
    assert len(res["worker_pids"]) == 2 and os.getpid() not in res["worker_pids"]
    df = pd.read_csv(run / "analysis" / "agents.csv")
    assert df["agent"].tolist() == [f"seed0-step{s}" for s in (50, 100, 150, 200)]
    for col in ("mean_return", "live", "dead", "fvu", "l0", "splice_return_sae", "splice_q_fvu"):
        assert df[col].notna().all(), col
    assert (df["live"] + df["dead"] == 128).all() and (df["l0"] <= 8).all()
    # splice columns are the SpliceResult's fields, not its FORMAT/VERSION class variables
    assert not [c for c in df.columns if c.startswith("splice_") and c[7:].isupper()]

    # live counts recomputed independently: dense encode of every recorded row
    from rlsae.sae import load_sae
    from rlsae.sae.store import ActivationStore

    for _, row in df.iterrows():
        store = ActivationStore(run / "acts" / row["agent"] / "fc1")
        sae = load_sae(run / "saes" / row["agent"] / "fc1" / "topk-128-k8")
        with torch.no_grad():
            fired = (sae.encode(store.read_rows(np.arange(store.rows))) > 0).sum(0)
        assert int((fired >= 1).sum()) == row["live"]
        assert store.rows == row["rows"] == 128

    # the concepts stage: every agent's SAE matched against the RAM concepts of its 128 rows
    from rlsae.agents.concepts import ConceptMatches

    assert df["concept_coverage"].between(0, 1).all()
    for _, row in df.iterrows():
        sdir = run / "saes" / row["agent"] / "fc1" / "topk-128-k8"
        matches = ConceptMatches.read(sdir / "concepts.json")
        assert matches.n_rows == 128 and matches.coverage == pytest.approx(row["concept_coverage"])
        marker = json.loads((run / "analysis/agents" / row["agent"] / "concepts.json").read_text())
        assert marker["result"]["path"] == str(sdir.relative_to(run) / "concepts.json")

    fit = json.loads((run / "analysis" / "fit_live_vs_return.json").read_text())
    ref = fit_xy(df["live"], df["mean_return"], bootstrap=0)
    assert fit["n"] == 4
    assert fit["quadratic"]["r2"] == pytest.approx(ref.quadratic.r2)
    assert res["fit"]["quadratic_r2"] == pytest.approx(ref.quadratic.r2)

    # the same fit of return on the SAEs' concept coverage, shown in the report too
    cov_fit = json.loads((run / "analysis" / "fit_coverage_vs_return.json").read_text())
    cov_ref = fit_xy(df["concept_coverage"], df["mean_return"], bootstrap=0)
    assert cov_fit["n"] == 4 and cov_fit["x"] == "concept_coverage"
    assert cov_fit["linear"]["r2"] == pytest.approx(cov_ref.linear.r2)

    html = (run / "analysis" / "report.html").read_text()
    assert "Concept coverage vs return" in html
    assert re.search(r"<script[^>]*\bsrc=", html) is None
    assert "../viewer/index.html" in html
    assert all(a in html for a in df["agent"])
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["study"] == "smoke"


def test_smoke_study_resumes(smoke_run, capsys) -> None:
    run, _ = smoke_run
    markers = sorted(run.glob("analysis/agents/*/*.json"))
    assert len(markers) == 24
    before = {p: p.stat().st_mtime_ns for p in markers}
    every_file = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    t0 = time.perf_counter()
    again = run_atari_pipeline(run, "smoke", resume=True, workers=2)
    took = time.perf_counter() - t0
    assert again["stages_run"] == 0 and again["stages_skipped"] == 24
    # a finished study resumed: no worker pool, no file rewritten (report included), fast
    assert again["worker_pids"] == [] and took < 2.0
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == every_file
    # an agent whose splice never finished: only that stage runs again
    gone = run / "analysis" / "agents" / "seed0-step100" / "splice.json"
    old = json.loads(gone.read_text())["result"]
    gone.unlink()
    table = run / "analysis" / "stages" / "table.json"
    table_before = json.loads(table.read_text())["token"]
    third = run_atari_pipeline(run, "smoke", resume=True)
    assert third["stages_run"] == 1
    # what read the splice results (agents.csv, fit, report) is refreshed
    assert json.loads(table.read_text())["token"] != table_before
    assert json.loads(gone.read_text())["result"]["return_sae"] == old["return_sae"]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p != gone)
    before = {p: p.stat().st_mtime_ns for p in markers}
    # the CLI verbs on the finished study: one JSON object each, nothing re-run
    from rlsae.cli import main

    for argv in (
        ["pipeline", "atari", "--preset", "smoke", "--out", str(run), "--resume", "--json"],
        [
            "sweep",
            "--config",
            "smoke",
            "--engine",
            "local",
            "--out",
            str(run),
            "--resume",
            "--json",
        ],
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        out = json.loads(capsys.readouterr().out)
        assert out["stages_run"] == 0 and out["agents"] == 4 and out["run_dir"] == str(run)
    assert {p: p.stat().st_mtime_ns for p in markers} == before


def test_ray_sweep_two_agents_same_layout_and_numbers(smoke_run, tmp_path) -> None:
    run, _ = smoke_run
    d = preset_dict("smoke")
    ck = run / "agents" / "seed0" / "checkpoints"
    d["population"] = {"train_steps": 0, "agents": [str(ck / "step_50"), str(ck / "step_200")]}
    d["name"] = "ray-smoke"
    cfg = from_mapping(StudyConfig, d, "config")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = run_study(cfg, tmp_path / "ray", engine="ray")
        assert ray.is_initialized()  # a Ray instance the caller started is left running
    finally:
        ray.shutdown()
    out = tmp_path / "ray"
    assert res["agents"] == 2 and res["stages_run"] == 12
    assert os.getpid() not in res["worker_pids"]
    for name in ("step_50", "step_200"):
        assert all((out / "analysis" / "agents" / name / f).is_file() for f in STAGE_FILES)
        assert (out / "acts" / name / "fc1" / "meta.json").is_file()
        assert (out / "saes" / name / "fc1" / "topk-128-k8" / "cfg.json").is_file()
    # same seeds, same work: the Ray run reproduces the local pool's numbers
    ray_df = pd.read_csv(out / "analysis" / "agents.csv").set_index("agent")
    local = pd.read_csv(run / "analysis" / "agents.csv").set_index("agent")
    for ray_name, local_name in (("step_50", "seed0-step50"), ("step_200", "seed0-step200")):
        for col in ("mean_return", "live", "fvu"):
            assert ray_df.loc[ray_name, col] == pytest.approx(local.loc[local_name, col])
    assert res["fit"] is None and "at least 4 rows" in res["fit_error"]


def test_demo_command_on_a_finished_study(smoke_run, tmp_path, capsys) -> None:
    """`rlsae demo` resumes the (finished) atari study, exports its viewer, prints the paths."""
    import shutil

    from rlsae.cli import main

    run, _ = smoke_run
    shutil.copytree(run, tmp_path / "demo" / "atari")
    with pytest.raises(SystemExit) as e:
        main(["demo", "--preset", "smoke", "--no-llm", "--out", str(tmp_path / "demo"), "--json"])
    assert e.value.code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["atari"]["stages_run"] == 0 and res["atari"]["agents"] == 4
    # each agent's SAE: its live features beside its concept coverage, as in agents.csv
    df = pd.read_csv(run / "analysis" / "agents.csv")
    assert [s["agent"] for s in res["atari"]["saes"]] == df["agent"].tolist()
    for s, (_, row) in zip(res["atari"]["saes"], df.iterrows(), strict=True):
        assert s["live"] == row["live"]
        assert s["concept_coverage"] == pytest.approx(row["concept_coverage"])
    viewer = Path(res["viewers"]["atari"])
    assert viewer.is_file() and viewer == tmp_path / "demo" / "atari" / "viewer" / "index.html"
    report = (tmp_path / "demo" / "atari" / "analysis" / "report.html").read_text()
    assert "not exported yet" not in report  # rewritten once the viewer exists
    assert "llm" not in res
