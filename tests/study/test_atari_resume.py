"""Resuming a study: finished stages are never redone, an interrupted one is (counted calls).

The stages here are small stand-ins that write what the real ones write (a stage's JSON marker
and its artifact) and count their calls; the real stages run end to end in
test_atari_study.py (slow tier).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from rlsae.configs import from_mapping
from rlsae.errors import RlsaeError
from rlsae.study import atari as study
from rlsae.study.atari import run_study
from rlsae.study.atari_config import StudyConfig


def _cfg(agents: list[str]) -> StudyConfig:
    d = study.preset_dict("smoke")
    d["population"] = {"train_steps": 0, "agents": agents}
    d["fit"] = {"bootstrap": 50}
    return from_mapping(StudyConfig, d, "config")


def test_interrupted_study_resumes_without_redoing_stages(tmp_path, external_agents, counted):
    cfg = _cfg(external_agents)
    run = tmp_path / "run"
    counted["fail"] = ("agent2", "sae")
    with pytest.raises(RlsaeError, match="agent2: agent agent2, stage sae: simulated failure"):
        run_study(cfg, run, engine="serial", study=counted["study"])
    calls = counted["calls"]
    assert calls["eval"] == [f"agent{i}" for i in range(5)]
    assert "agent2" not in calls["sae"] and len(calls["sae"]) == 4
    assert not (run / "analysis" / "agents.csv").exists()  # nothing half-aggregated
    markers = sorted(run.glob("analysis/agents/*/*.json"))
    mtimes = {p: p.stat().st_mtime_ns for p in markers}
    assert len(markers) == 5 * 6 - 4  # agent2 stopped before sae, live, splice, concepts

    counted["fail"] = None
    for v in calls.values():
        v.clear()
    with pytest.raises(RlsaeError, match="pass --resume"):
        run_study(cfg, run, engine="serial", study=counted["study"])
    res = run_study(cfg, run, resume=True, engine="serial", study=counted["study"])
    assert calls == {
        "eval": [],
        "record": [],
        "sae": ["agent2"],
        "live": ["agent2"],
        "splice": ["agent2"],
        "concepts": ["agent2"],
    }
    assert res["stages_run"] == 4 and res["stages_skipped"] == 26
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    # the fit over the five agents: live = 400 + (ret - 500)/4 exactly, so the line fits perfectly
    assert res["fit"]["n"] == 5 and res["fit"]["linear_r2"] == pytest.approx(1.0)
    html = (run / "analysis" / "report.html").read_text()
    assert "5 agents. Quadratic fit of mean_return on live" in html
    assert "Linear: R² = 1.000, p = " in html and "../viewer/index.html" in html
    assert all(f"<td class='l'>agent{i}</td>" in html for i in range(5))
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["units"]["agent"] == [
        f"agent{i}" for i in range(5)
    ]

    # a finished study re-run with --resume does nothing
    for v in calls.values():
        v.clear()
    again = run_study(cfg, run, resume=True, engine="serial", study=counted["study"])
    assert again["stages_run"] == 0 and all(not v for v in calls.values())


def test_interrupt_mid_stage_keeps_no_marker(tmp_path, external_agents, counted):
    cfg = _cfg(external_agents[:4])
    run = tmp_path / "run"

    def boom(ctx, spec):
        raise KeyboardInterrupt

    variant = counted["study"]
    broken = variant.with_stage(replace(variant.stage("record"), run=boom))
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, run, engine="serial", study=broken)
    assert (run / "analysis/agents/agent0/eval.json").is_file()
    assert not (run / "analysis/agents/agent0/record.json").exists()
    res = run_study(cfg, run, resume=True, engine="serial", study=counted["study"])
    assert counted["calls"]["eval"] == ["agent0", "agent1", "agent2", "agent3"]  # agent0 once
    assert res["stages_run"] == 4 * 6 - 1
