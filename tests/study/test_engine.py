"""The study engine: a stage added by declaration only, a finished study resumed without work,
run-directory ownership through the CLI (both studies), config files and --print-config."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import ClassVar

import pytest

from rlsae.agents.results import Evaluation
from rlsae.artifacts import Artifact
from rlsae.configs import differing_keys, from_mapping
from rlsae.errors import RlsaeError
from rlsae.study import atari, sweep
from rlsae.study.atari import ATARI
from rlsae.study.atari_config import ResourcesConfig, StudyConfig
from rlsae.study.engine import Context, Stage, Study, Units, load_config, open_run
from rlsae.study.engine import run as run_engine
from rlsae.study.llm import LLM
from rlsae.study.results import LiveFeatures


def _cfg(agents: list[str]) -> StudyConfig:
    d = atari.preset_dict("smoke")
    d["population"] = {"train_steps": 0, "agents": agents}
    d["fit"] = {"bootstrap": 50}
    return from_mapping(StudyConfig, d, "config")


def _files(run) -> dict:
    return {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------------
# A new stage, declared and nothing else


@dataclass
class BestAgent(Artifact):
    """The agent with the highest mean return and its live-feature count."""

    FORMAT: ClassVar[str] = "test.best_agent"
    VERSION: ClassVar[int] = 1
    agent: str
    mean_return: float
    live: int


def test_a_stage_added_by_declaration(tmp_path, external_agents, counted) -> None:
    calls: list[str] = []

    def best_agent(ctx: Context) -> BestAgent:
        calls.append("best")
        rows = [
            (ctx.result(Evaluation, "eval", a.name).mean_return, a.name) for a in ctx.units("agent")
        ]
        ret, name = max(rows)
        return BestAgent(name, ret, ctx.result(LiveFeatures, "live", name).live)

    study = counted["study"].with_stage(
        Stage("best", best_agent, BestAgent, after=("eval", "live"))
    )
    cfg, run = _cfg(external_agents), tmp_path / "run"
    atari.run_study(cfg, run, engine="serial", study=study)
    marker = run / "analysis" / "stages" / "best.json"
    best = Context(study, cfg, run).result(BestAgent, "best")
    # agent2 has the highest return (900); live = 400 + (900 - 500) / 4
    assert (best.agent, best.mean_return, best.live) == ("agent2", 900.0, 500) and calls == ["best"]

    before = _files(run)
    res = atari.run_study(cfg, run, resume=True, engine="serial", study=study)
    assert calls == ["best"] and res["stages_run"] == 0 and _files(run) == before

    marker.unlink()
    atari.run_study(cfg, run, resume=True, engine="serial", study=study)
    assert calls == ["best", "best"] and marker.is_file()
    # nothing else rewritten (run.json records when the study last finished)
    assert all(
        t == before[p] for p, t in _files(run).items() if p not in (marker, run / "run.json")
    )

    # an agent's eval redone: the new stage reads it, so it runs again (and nothing else new)
    (run / "analysis" / "agents" / "agent0" / "eval.json").unlink()
    atari.run_study(cfg, run, resume=True, engine="serial", study=study)
    assert calls == ["best", "best", "best"] and counted["calls"]["eval"].count("agent0") == 2


def test_a_declaration_must_name_earlier_stages() -> None:
    with pytest.raises(ValueError, match="after unknown 'nothing'"):
        ATARI.with_stage(Stage("x", lambda ctx: None, BestAgent, after=("nothing",)))
    with pytest.raises(ValueError, match="per unknown kind 'planet'"):
        ATARI.with_stage(Stage("x", lambda ctx: None, BestAgent, per="planet"))


# --------------------------------------------------------------------------------------------
# A finished study resumed


def test_finished_study_resumes_without_work(tmp_path, external_agents, counted, monkeypatch):
    cfg, run = _cfg(external_agents), tmp_path / "run"
    atari.run_study(cfg, run, engine="serial", study=counted["study"])
    before = _files(run)
    for v in counted["calls"].values():
        v.clear()
    pools: list[str] = []
    real = sweep.make_engine
    monkeypatch.setattr(sweep, "make_engine", lambda *a, **k: pools.append("pool") or real(*a, **k))
    t0 = time.perf_counter()
    res = atari.run_study(cfg, run, resume=True, engine="local", workers=2, study=counted["study"])
    took = time.perf_counter() - t0
    assert res["stages_run"] == 0 and res["stages_skipped"] == 30  # 5 agents x 6 stages
    assert all(not v for v in counted["calls"].values()) and pools == []
    assert res["worker_pids"] == [] and took < 2.0
    assert _files(run) == before  # run.json, agents.csv, the fit and the report untouched


def test_local_pool_size_follows_cores_and_cpus_per_task(monkeypatch) -> None:
    for cores, cpus, want in ((8, 2.0, 4), (2, 1.0, 2), (1, 4.0, 1), (16, 0.5, 16)):
        monkeypatch.setattr(sweep.os, "cpu_count", lambda c=cores: c)
        assert sweep.LocalEngine(resources=ResourcesConfig(cpus=cpus)).workers == want
    assert sweep.LocalEngine(workers=3).workers == 3


# --------------------------------------------------------------------------------------------
# A stage switched off by the config: reported off, neither run nor "already done"


@dataclass
class ToyConfig:
    name: str = "toy"
    extra: bool = False
    """Whether the optional stages run."""


@dataclass
class Count(Artifact):
    FORMAT: ClassVar[str] = "test.count"
    VERSION: ClassVar[int] = 1
    n: int


@dataclass(frozen=True)
class Item:
    name: str


def _toy_study(calls: list[str]) -> Study:
    def stage(label: str):
        def fn(ctx, unit=None) -> Count:
            calls.append(label if unit is None else f"{label}/{unit.name}")
            return Count(len(calls))

        return fn

    def no_extra(cfg: ToyConfig) -> bool:
        return not cfg.extra

    return Study(
        kind="toy",
        config=ToyConfig,
        units=(Units("item", lambda ctx: [Item("a"), Item("b")]),),
        stages=(
            Stage("first", stage("first"), Count, per="item"),
            Stage("optional", stage("optional"), Count, after=("first",), per="item",
                  skip_if=no_extra),
            Stage("summary", stage("summary"), Count, after=("first", "optional")),
            Stage("extra_summary", stage("extra_summary"), Count, skip_if=no_extra),
        ),
    )  # fmt: skip


def _listed(d: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k: v for k, v in d.items() if v}


def test_a_stage_switched_off_is_reported_off_not_skipped(tmp_path) -> None:
    calls: list[str] = []
    study, run = _toy_study(calls), tmp_path / "run"
    out = run_engine(study, ToyConfig(), run)
    assert calls == ["first/a", "first/b", "summary"]
    assert _listed(out.ran) == {"item": ["first/a", "first/b"], "study": ["summary"]}
    assert _listed(out.off) == {"item": ["optional/a", "optional/b"], "study": ["extra_summary"]}
    assert _listed(out.skipped) == {} and out.count("item", "skipped") == 0
    assert out.count("item", "off") == 2 and out.count("study", "off") == 1
    markers = sorted(p.name for p in run.rglob("*.json") if p.name != "run.json")
    assert markers == ["first.json", "first.json", "summary.json"]  # nothing for the off ones
    # resumed: the done stages are skipped, the off ones are still off (not "already done")
    again = run_engine(study, ToyConfig(), run, resume=True)
    assert calls == ["first/a", "first/b", "summary"] and _listed(again.ran) == {}
    assert _listed(again.skipped) == {"item": ["first/a", "first/b"], "study": ["summary"]}
    assert _listed(again.off) == _listed(out.off)
    # switched on (another run directory: another config), every stage runs and none is off
    on = run_engine(study, ToyConfig(name="toy2", extra=True), tmp_path / "on")
    assert (
        _listed(on.off) == {}
        and on.count("item") == 4
        and on.ran["study"] == ["summary", "extra_summary"]
    )


def test_splice_switched_off_counts_as_off_in_the_study_result(
    tmp_path, external_agents, counted
) -> None:
    d = atari.preset_dict("smoke")
    d["population"] = {"train_steps": 0, "agents": external_agents}
    d["fit"] = {"bootstrap": 50}
    d["evaluation"]["splice_episodes"] = 0
    cfg, run = from_mapping(StudyConfig, d, "config"), tmp_path / "run"
    res = atari.run_study(cfg, run, engine="serial", study=counted["study"])
    # off per agent: splice, and the ablation sweep (off in the presets)
    assert (res["stages_run"], res["stages_skipped"], res["stages_off"]) == (25, 0, 10)
    assert counted["calls"]["splice"] == []
    again = atari.run_study(cfg, run, resume=True, engine="serial", study=counted["study"])
    assert (again["stages_run"], again["stages_skipped"], again["stages_off"]) == (0, 25, 10)


def test_a_run_recorded_before_a_new_option_still_resumes(tmp_path) -> None:
    """A run.json written before a field existed (so without it) is the same study when the
    field takes its default; with the field at another value it is another study."""
    import json

    from rlsae.configs import config_hash

    run = tmp_path / "run"
    cfg = from_mapping(StudyConfig, atari.preset_dict("smoke"), "smoke")
    open_run(ATARI, cfg, run, "preset:smoke", resume=False)
    raw = json.loads((run / "run.json").read_text())
    del raw["config"]["evaluation"]["sweep_episodes"]  # as a run from before the sweep stage
    raw["config_hash"] = "0123456789ab"  # the hash of that older config
    (run / "run.json").write_text(json.dumps(raw))
    assert open_run(ATARI, cfg, run, "preset:smoke", resume=True).config_hash == "0123456789ab"
    other = replace(cfg, evaluation=replace(cfg.evaluation, sweep_episodes=3))
    assert config_hash(other) != config_hash(cfg)
    with pytest.raises(RlsaeError, match=r"differs in evaluation\.sweep_episodes; choose"):
        open_run(ATARI, other, run, "preset:smoke", resume=True)


# --------------------------------------------------------------------------------------------
# Run-directory ownership through the CLI, both studies


@pytest.mark.parametrize(("study", "verb"), [(ATARI, "atari"), (LLM, "llm")])
def test_resume_with_another_preset_is_refused(tmp_path, run_cli, study, verb) -> None:
    run = tmp_path / "run"
    smoke = from_mapping(study.config, dict(study.presets["smoke"]), "smoke")
    demo = from_mapping(study.config, dict(study.presets["demo"]), "demo")
    open_run(study, smoke, run, "preset:smoke", resume=False)
    before = _files(run)
    code, out, err = run_cli("pipeline", verb, "--preset", "demo", "--out", run, "--resume")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {run} belongs to another study ('smoke' from preset:smoke")
    # the keys named are the first of those that differ, and the count of the rest adds up
    want = differing_keys(smoke, demo)
    named, more = re.search(r"it differs in (.+?)(?: and (\d+) more)?; choose", err).groups()
    assert named.split(", ") == want[:6] and int(more or 0) == len(want) - 6
    assert "name" in want and len(want) > 6
    assert _files(run) == before
    code, _, err = run_cli("pipeline", verb, "--preset", "smoke", "--out", run)
    assert code == 2 and "pass --resume" in err and _files(run) == before
    # a directory of something else, and another study's directory, are refused too
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, _, err = run_cli("pipeline", verb, "--preset", "smoke", "--out", other, "--resume")
    assert code == 2 and "is not a study run directory" in err
    other_kind = LLM if study is ATARI else ATARI
    code, _, err = run_cli(
        "pipeline", "atari" if other_kind is ATARI else "llm", "--preset", "smoke", "--out", run
    )
    assert code == 2 and f"holds a '{study.kind}' run" in err and _files(run) == before


# --------------------------------------------------------------------------------------------
# Config files: one line naming the file and the key, nothing written


BAD = {
    "atari": [
        ("bad.yaml", "recording:\n  layre: fc1\n", "recording.layre: unknown key"),
        ("bad.toml", "[recording]\nlayre = 'fc1'\n", "recording.layre: unknown key"),
        ("bad.yaml", "sae:\n  d_sae: many\n", "sae.d_sae: expected an integer, got 'many'"),
        ("list.yaml", "- smoke\n", "expected a mapping, got a list"),
    ],
    "llm": [
        ("bad.yaml", "sae:\n  colour: red\n", "sae.colour: unknown key"),
        ("bad.toml", "[sae]\ncolour = 'red'\n", "sae.colour: unknown key"),
        ("bad.yaml", "tiny:\n  layers: 3\n", "tiny.layers: unknown key"),
        ("bad.toml", "[rlhf.ppo]\nlearning_rate = 'abc'\n", "rlhf.ppo.learning_rate: expected"),
        ("bad.yaml", "rlhf:\n  batch_size: 8\n", "rlhf.batch_size: unknown key"),
        ("list.yaml", "- tiny\n", "expected a mapping, got a list"),
        ("bad.yaml", "rlhf:\n  model: gpt2\n", "rlhf.model: the study tunes each of models"),
        ("bad.yaml", "utility_k: 3\n", "utility_k: must be at least top_k"),
    ],
}


@pytest.mark.parametrize(
    ("verb", "name", "text", "message"), [(v, *case) for v, cases in BAD.items() for case in cases]
)
def test_bad_config_file_is_one_line(tmp_path, run_cli, verb, name, text, message) -> None:
    path = tmp_path / name
    path.write_text(text)
    out = tmp_path / "run"
    code, stdout, err = run_cli("pipeline", verb, "--preset", path, "--out", out)
    assert code == 2 and stdout == "" and err.count("\n") == 1, err
    assert err.startswith(f"error: {path}: ") and message in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [name]


# --------------------------------------------------------------------------------------------
# --print-config round-trips


@pytest.mark.parametrize("verb", ["atari", "llm"])
@pytest.mark.parametrize("preset", ["smoke", "demo", "paper"])
def test_print_config_round_trips(tmp_path, run_cli, verb, preset) -> None:
    study = ATARI if verb == "atari" else LLM
    code, out, err = run_cli("pipeline", verb, "--preset", preset, "--print-config")
    assert code == 0 and err == ""
    want = from_mapping(study.config, dict(study.presets[preset]), preset)
    path = tmp_path / "printed.yaml"
    path.write_text(out)
    assert load_config(study, path) == want
    # the printed file is accepted where a preset is, and prints the same again
    code, again, _ = run_cli("pipeline", verb, "--preset", path, "--print-config")
    assert code == 0 and again == out


def test_python_api_validates_like_the_files(tmp_path) -> None:
    bad = replace(atari.preset_config("smoke"), name="a b")
    with pytest.raises(Exception, match="may hold only"):
        atari.run_study(bad, tmp_path / "run", engine="serial")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# Where the time went


def test_stage_times_are_the_markers_and_count_cpu_not_waiting(
    tmp_path, external_agents, counted
) -> None:
    """Each stage's marker keeps its wall and CPU seconds: a stage that computes for 0.3 s of CPU
    shows it, one that sleeps 0.3 s shows the wall time but almost no CPU; the study writes them
    to analysis/stage_times.csv (one row per stage and unit, equal to the markers) and the
    report's time table sums them per stage."""
    import csv

    study = counted["study"]
    eval_stage = study.stage("eval")

    def timed_eval(ctx: Context, spec):
        if spec.name == "agent0":
            t = time.process_time()
            while time.process_time() - t < 0.3:
                pass
        elif spec.name == "agent1":
            time.sleep(0.3)
        return eval_stage.run(ctx, spec)

    study = study.with_stage(replace(eval_stage, run=timed_eval))
    cfg, run = _cfg(external_agents), tmp_path / "run"
    atari.run_study(cfg, run, engine="serial", study=study)
    rows = list(csv.DictReader((run / "analysis" / "stage_times.csv").open()))
    by = {(r["stage"], r["unit"]): r for r in rows}
    busy, idle = by[("eval", "agent0")], by[("eval", "agent1")]
    assert float(busy["cpu_seconds"]) >= 0.29 and float(busy["seconds"]) >= 0.29
    assert float(idle["seconds"]) >= 0.29 and float(idle["cpu_seconds"]) < 0.2
    ctx = Context(study, cfg, run)
    for r in rows:
        m = ctx.marker(r["stage"], r["unit"] or None)
        assert m is not None and r["kind"] == (study.stage(r["stage"]).per or "study")
        assert float(r["seconds"]) == pytest.approx(m.seconds, abs=5e-4)
        assert float(r["cpu_seconds"]) == pytest.approx(m.cpu_seconds, abs=5e-4)
    # every finished stage but the report itself (no training runs here: train_steps 0), each
    # agent once; no switched-off stage
    done = {s.name for s in study.stages if not s.off(cfg) and (s.per is None or ctx.units(s.per))}
    assert "train" not in done and len(done) > 5
    done -= {"report"}
    assert {r["stage"] for r in rows} == done
    assert sum(r["stage"] == "eval" for r in rows) == len(external_agents)
    html = (run / "analysis" / "report.html").read_text()
    total = sum(float(r["cpu_seconds"]) for r in rows if r["stage"] == "eval")
    assert "Where the time went" in html and f"<td>{total:.1f}</td>" in html
