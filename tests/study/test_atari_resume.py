"""Resuming a study: finished stages are never redone, an interrupted one is (counted calls).

The stages here are small stand-ins that write what the real ones write (a stage's JSON marker
and its artifact) and count their calls; the real stages run end to end in
test_study_pipeline.py (slow tier).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlsae.study import atari as study
from rlsae.study.presets import preset_dict
from rlsae.study.atari import StudyConfig, run_study
from rlsae.errors import RlsaeError


@pytest.fixture
def external_agents(tmp_path: Path) -> list[str]:
    dirs = []
    for i, ret in enumerate([100.0, 400.0, 900.0, 700.0, 300.0]):
        d = tmp_path / "ext" / f"agent{i}"
        d.mkdir(parents=True)
        (d / "model.zip").write_bytes(b"")
        (d / "score.json").write_text(json.dumps({"mean_return": ret}))
        dirs.append(str(d))
    return dirs


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict:
    calls: dict[str, list[str]] = {s: [] for s in study.STAGES}
    state = {"fail": None, "calls": calls}

    def make(stage: str):
        def fn(run_dir: Path, cfg: StudyConfig, spec: study.AgentSpec) -> dict:
            if state["fail"] == (spec.name, stage):
                raise RlsaeError("simulated failure")
            calls[stage].append(spec.name)
            if stage == "eval":
                return json.loads((spec.path(run_dir) / "score.json").read_text())
            if stage == "live":
                ret = json.loads((spec.path(run_dir) / "score.json").read_text())["mean_return"]
                live = int(400 + (ret - 500) / 4)
                return {"live": live, "dead": 2048 - live, "d_sae": 2048, "fvu": 0.1, "l0": 50.0}
            return {"ok": True}

        return fn

    monkeypatch.setattr(study, "STAGE_FUNCS", {s: make(s) for s in study.STAGES})
    return state


def _cfg(agents: list[str]) -> StudyConfig:
    d = preset_dict("smoke")
    d["population"] = {"train_steps": 0, "agents": agents}
    d["fit"] = {"bootstrap": 50}
    return StudyConfig.from_dict(d)


def test_interrupted_study_resumes_without_redoing_stages(tmp_path, external_agents, counted):
    cfg = _cfg(external_agents)
    run = tmp_path / "run"
    counted["fail"] = ("agent2", "sae")
    with pytest.raises(RlsaeError, match="agent2: agent agent2, stage sae: simulated failure"):
        run_study(cfg, run, engine="serial")
    calls = counted["calls"]
    assert calls["eval"] == [f"agent{i}" for i in range(5)]
    assert "agent2" not in calls["sae"] and len(calls["sae"]) == 4
    assert not (run / "analysis" / "agents.csv").exists()  # nothing half-aggregated
    markers = sorted(run.glob("analysis/agents/*/*.json"))
    mtimes = {p: p.stat().st_mtime_ns for p in markers}
    assert len(markers) == 5 * 5 - 3  # agent2 stopped before sae, live, splice

    counted["fail"] = None
    for v in calls.values():
        v.clear()
    with pytest.raises(RlsaeError, match="pass --resume"):
        run_study(cfg, run, engine="serial")
    res = run_study(cfg, run, resume=True, engine="serial")
    assert calls == {
        "eval": [],
        "record": [],
        "sae": ["agent2"],
        "live": ["agent2"],
        "splice": ["agent2"],
    }
    assert res["stages_run"] == 3 and res["stages_skipped"] == 22
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    # the fit over the five agents: live = 400 + (ret - 500)/4 exactly, so the line fits perfectly
    assert res["fit"]["n"] == 5 and res["fit"]["linear_r2"] == pytest.approx(1.0)
    html = (run / "analysis" / "report.html").read_text()
    assert "5 agents. Quadratic fit of mean_return on live" in html
    assert "Linear: R² = 1.000, p = " in html and "../viewer/index.html" in html
    assert all(f"<td class='l'>agent{i}</td>" in html for i in range(5))
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["agents"] == [f"agent{i}" for i in range(5)]

    # a finished study re-run with --resume does nothing
    for v in calls.values():
        v.clear()
    again = run_study(cfg, run, resume=True, engine="serial")
    assert again["stages_run"] == 0 and all(not v for v in calls.values())


def test_interrupt_mid_stage_keeps_no_marker(tmp_path, external_agents, counted, monkeypatch):
    cfg = _cfg(external_agents[:4])
    run = tmp_path / "run"

    def boom(run_dir, cfg, spec):
        raise KeyboardInterrupt

    funcs = dict(study.STAGE_FUNCS)
    monkeypatch.setitem(study.STAGE_FUNCS, "record", boom)
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, run, engine="serial")
    assert (run / "analysis/agents/agent0/eval.json").is_file()
    assert not (run / "analysis/agents/agent0/record.json").exists()
    monkeypatch.setitem(study.STAGE_FUNCS, "record", funcs["record"])
    res = run_study(cfg, run, resume=True, engine="serial")
    assert counted["calls"]["eval"] == ["agent0", "agent1", "agent2", "agent3"]  # agent0 once
    assert res["stages_run"] == 4 * 5 - 1
