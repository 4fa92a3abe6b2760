"""Resuming a study: finished stages are never redone, an interrupted one is (counted calls).

The stages here are small stand-ins that write what the real ones write (a stage's JSON marker
and its artifact) and count their calls; the real stages run end to end in
test_atari_study.py (slow tier).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from rlsae.agents.results import Evaluation, SpliceResult
from rlsae.configs import from_mapping
from rlsae.errors import RlsaeError
from rlsae.study import atari as study
from rlsae.study.atari import ATARI, AgentSpec, LiveFeatures, Recording, TrainedSAE, run_study
from rlsae.study.atari_config import StudyConfig
from rlsae.study.engine import Context


def _score(spec: AgentSpec, run_dir: Path) -> float:
    return json.loads((spec.path(run_dir) / "score.json").read_text())["mean_return"]


def stand_in_result(stage: str, ctx: Context, spec: AgentSpec):
    """What each real stage returns, cheaply: eval gives score.json's return, live a count
    that is exactly linear in it."""
    ret = _score(spec, ctx.run_dir)
    if stage == "eval":
        return Evaluation(
            agent=spec.agent_dir, arch="poster", steps_trained=None, episodes=1, epsilon=0.05,
            seed=0, mean_return=ret, std_return=0.0, min_return=ret, max_return=ret,
            median_return=ret, human_normalized=0.0, mean_length=1.0,
        )  # fmt: skip
    if stage == "record":
        return Recording(path="acts", rows=1, d_in=1)
    if stage == "sae":
        return TrainedSAE(path="sae", train_config={}, train_seconds=0.0)
    if stage == "live":
        live = int(400 + (ret - 500) / 4)
        return LiveFeatures(
            live=live, dead=2048 - live, d_sae=2048, live_threshold=1, rows=1,
            firing_counts_q10_q50_q90=[0.0, 0.0, 0.0], source_of_counts="test", fvu=0.1, l0=50.0,
        )  # fmt: skip
    return SpliceResult(
        agent=spec.agent_dir, sae="sae", layer="fc1", episodes=1, seed=0, epsilon=0.05,
        return_original=ret, return_sae=ret, return_ablated=0.0, return_recovered=1.0,
        action_agreement=1.0, action_agreement_spliced=1.0, q_fvu=0.0, states=1,
    )  # fmt: skip


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
def counted() -> dict:
    """The study with every per-agent stage replaced by a counted stand-in (``state["study"]``)."""
    calls: dict[str, list[str]] = {s: [] for s in study.STAGES}
    state: dict = {"fail": None, "calls": calls}

    def make(stage: str):
        def fn(ctx: Context, spec: AgentSpec):
            if state["fail"] == (spec.name, stage):
                raise RlsaeError("simulated failure")
            calls[stage].append(spec.name)
            return stand_in_result(stage, ctx, spec)

        return fn

    variant = ATARI
    for s in study.STAGES:
        variant = variant.with_stage(replace(ATARI.stage(s), run=make(s)))
    state["study"] = variant
    return state


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
    assert len(markers) == 5 * 5 - 3  # agent2 stopped before sae, live, splice

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
    assert res["stages_run"] == 4 * 5 - 1
