"""The dead-features study: a population of DQN agents, an SAE per agent, live features vs return.

Declared on the study engine (:mod:`rlsae.study.engine`); the config is
:class:`~rlsae.study.atari_config.StudyConfig`, the presets ``smoke``, ``demo`` and ``paper`` are
in :mod:`rlsae.study.presets`. The stages, in order:

- ``train`` (per training run): train one DQN run of the population (seed x grid point);
- per agent (a trained model, each checkpoint with ``checkpoint_every``, or an external agent):
  ``eval`` (mean return), ``record`` (activations of ``recording.layer``), ``sae`` (train an
  SAE on them), ``live`` (latents that fire at least ``live_threshold`` times over the recorded
  rows), ``splice`` (returns with the SAE's reconstruction in place of the layer) and
  ``concepts`` (which Ms. Pac-Man game-state concepts the SAE's features encode, from the RAM;
  ``SAE_DIR/concepts.json`` and the SAE's coverage); ``sweep``, ``diff``, ``prefixes`` and
  ``import`` are optional, in ``atari_*`` modules;
- once per study: ``table`` (``analysis/agents.csv``), ``fit`` (live features vs mean return,
  ``analysis/fit_live_vs_return.{json,html}``, and concept coverage vs mean return,
  ``analysis/fit_coverage_vs_return.json``) and ``report`` (``analysis/report.html``).

Each finished stage leaves its marker (``analysis/runs/RUN/train.json``,
``analysis/agents/AGENT/STAGE.json``, ``analysis/stages/STAGE.json``) holding its typed result.

Each stage imports torch, SB3 or the emulator inside its function (a resume or a refused config
never loads them). Entry points: :func:`run_atari_pipeline` (a preset or a config file) and
:func:`run_study` (a :class:`StudyConfig`; executor serial, a local process pool, or Ray).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlsae.agents.agent_dir import list_checkpoints
from rlsae.agents.concept_run import CONCEPTS_FILE, check_concept_inputs, sae_concepts
from rlsae.agents.results import Evaluation, SpliceResult
from rlsae.analysis.fit import FitResult
from rlsae.analysis.report import write_atari_report
from rlsae.configs import from_mapping
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_bytes, read_json
from rlsae.sae.config import TrainConfig
from rlsae.study import atari_imports as imports
from rlsae.study.atari_config import StudyConfig, acts_dir, expand_agent_dirs, sae_dir
from rlsae.study.atari_diff import DIFF
from rlsae.study.atari_prefixes import PrefixCurves, no_prefixes, prefixes
from rlsae.study.atari_sweep import SWEEP
from rlsae.study.engine import Context, Stage, Study, Units, load_config
from rlsae.study.engine import resolve_config as resolve_study_config
from rlsae.study.engine import run as run_engine
from rlsae.study.presets import ATARI_PRESETS
from rlsae.study.results import (
    AgentConcepts,
    AgentsTable,
    FitOutcome,
    LiveFeatures,
    Recording,
    Report,
    TrainedSAE,
    TrainRun,
)
from rlsae.study.sweep import check_engine, make_engine
from rlsae.study.times import write_stage_times

STUDY_KIND = "atari-dead-features-study"
STAGES = ("eval", "record", "sae", "live", "splice", "concepts")
"""The per-agent stages, in order."""


# --------------------------------------------------------------------------------------------
# The units: training runs and agents


@dataclass
class RunSpec:
    """One training run of the population."""

    name: str
    seed: int
    overrides: dict[str, Any]


@dataclass
class AgentSpec:
    """One agent of the population (a trained model, a checkpoint, or an external agent dir)."""

    name: str
    agent_dir: str
    """Relative to the run directory for agents trained here, absolute for external ones."""
    run: str = ""
    seed: int | None = None
    step: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def path(self, run_dir: Path) -> Path:
        p = Path(self.agent_dir)
        return p if p.is_absolute() else run_dir / p


def _slug(v: Any) -> str:
    s = re.sub(r"[^A-Za-z0-9.]+", "_", str(v)).strip("_")
    return s or "x"


def training_runs(cfg: StudyConfig) -> list[RunSpec]:
    """Every (grid point x seed) run, named ``seed{S}`` plus ``-key=value`` for grid points."""
    p = cfg.population
    if p.train_steps == 0:
        return []
    keys = sorted(p.grid)
    runs = []
    for combo in itertools.product(*(p.grid[k] for k in keys)):
        overrides = dict(zip(keys, combo, strict=True))
        for seed in p.seeds:
            name = f"seed{seed}" + "".join(f"-{_slug(k)}={_slug(v)}" for k, v in overrides.items())
            runs.append(RunSpec(name=name, seed=seed, overrides=overrides))
    return runs


def _run_agents(cfg: StudyConfig, run_dir: Path, run: RunSpec) -> list[AgentSpec]:
    """The agents one training run gave: its checkpoints (with ``checkpoint_every``), its end."""
    p = cfg.population
    rdir = Path("agents") / run.name
    common: dict[str, Any] = {"run": run.name, "seed": run.seed, "overrides": run.overrides}
    agents = []
    if p.checkpoint_every:
        for step, _ in list_checkpoints(run_dir / rdir):
            if step <= p.train_steps:
                path = str(rdir / "checkpoints" / f"step_{step}")
                agents.append(AgentSpec(f"{run.name}-step{step}", path, step=step, **common))
        if any(a.step == p.train_steps for a in agents):
            return agents
    agents.append(
        AgentSpec(f"{run.name}-step{p.train_steps}", str(rdir), step=p.train_steps, **common)
    )
    return agents


def population(cfg: StudyConfig, run_dir: Path) -> list[AgentSpec]:
    """The agents of the study. With checkpoints, reads which checkpoints training wrote."""
    agents = [a for run in training_runs(cfg) for a in _run_agents(cfg, run_dir, run)]
    agents += [AgentSpec(name=n, agent_dir=d) for n, d in imports.imported_agents(cfg)]
    seen = {a.name for a in agents}
    for ext in expand_agent_dirs(cfg.population.agents, "population"):
        ap = ext.resolve()
        name = _slug(ap.name)
        while name in seen:
            name += "_"
        seen.add(name)
        agents.append(AgentSpec(name=name, agent_dir=str(ap), run="", step=None))
    return agents


def _list_runs(ctx: Context[StudyConfig]) -> list[RunSpec]:
    return training_runs(ctx.config)


def _list_agents(ctx: Context[StudyConfig]) -> list[AgentSpec]:
    agents = population(ctx.config, ctx.run_dir)
    if not agents:
        raise RlsaeError("the population is empty: training wrote no agent to study")
    return agents


# --------------------------------------------------------------------------------------------
# Where things go


# --------------------------------------------------------------------------------------------
# The stages


def train(ctx: Context[StudyConfig], spec: RunSpec) -> TrainRun:
    """Train one run of the population (resuming a partial one)."""
    from rlsae.agents.dqn import train_dqn

    p = ctx.config.population
    out = ctx.run_dir / "agents" / spec.name
    kw: dict[str, Any] = {**p.hyperparameters, **spec.overrides}
    if p.n_envs is not None:
        kw["n_envs"] = p.n_envs
    train_dqn(
        p.arch,
        p.train_steps,
        out,
        seed=spec.seed,
        checkpoint_every=p.checkpoint_every,
        resume=out.exists(),
        **kw,
    )
    return TrainRun(run=spec.name, seed=spec.seed, overrides=spec.overrides)


def evaluate(ctx: Context[StudyConfig], spec: AgentSpec) -> Evaluation:
    """The agent's mean return over ``evaluation.episodes`` seeded episodes."""
    from rlsae.agents.evaluate import evaluate_agent

    e = ctx.config.evaluation
    res = evaluate_agent(
        spec.path(ctx.run_dir),
        episodes=e.episodes,
        epsilon=e.epsilon,
        seed=e.seed,
        max_episode_steps=e.max_episode_steps,
    )
    return res


def record(ctx: Context[StudyConfig], spec: AgentSpec) -> Recording:
    """Activations of ``recording.layer`` over ``recording.steps`` steps."""
    from rlsae.agents.record import record_activations

    cfg, run_dir = ctx.config, ctx.run_dir
    r = cfg.recording
    out = acts_dir(run_dir, cfg, spec.name)
    if not (out / "meta.json").is_file():
        if out.exists():  # a directory without meta.json is not a store: an interrupted write
            shutil.rmtree(out)
        record_activations(
            spec.path(run_dir), r.layer, r.steps, out, epsilon=r.epsilon, seed=r.seed
        )
    meta = read_json(out / "meta.json")
    return Recording(str(out.relative_to(run_dir)), int(meta["rows"]), int(meta["d_in"]))


def _train_config(cfg: StudyConfig, d_in: int) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}  # sae.train's keys: validated
    base = {"arch": cfg.sae.arch, "d_sae": cfg.sae.d_sae, "k": cfg.sae.k, "d_in": d_in}
    return TrainConfig(**{k: v for k, v in {**base, **cfg.sae.train}.items() if k in known})


def train_agent_sae(ctx: Context[StudyConfig], spec: AgentSpec) -> TrainedSAE:
    """An SAE on the agent's activations (resuming a partial training)."""
    from rlsae.sae import ActivationStore, TrainingRecord, train_sae

    cfg, run_dir = ctx.config, ctx.run_dir
    store = ActivationStore(acts_dir(run_dir, cfg, spec.name))
    out = sae_dir(run_dir, cfg, spec.name)
    tcfg = _train_config(cfg, store.d_in)
    t0 = time.perf_counter()
    train_sae(store, out, tcfg, resume=True)
    final = TrainingRecord.read(out / "training.json").final
    return TrainedSAE(
        path=str(out.relative_to(run_dir)),
        train_config=tcfg,
        train_seconds=time.perf_counter() - t0,
        final={} if final is None else final.to_json(),
    )


def count_live(ctx: Context[StudyConfig], spec: AgentSpec) -> LiveFeatures:
    """Live and dead latents over every recorded row, plus the SAE's reconstruction metrics.

    Uses the statistics ``train_sae`` wrote at the end of training (``feature_stats`` and
    ``training.json``'s final evaluation over the whole store) when they cover every row of the
    store; otherwise evaluates the SAE over the store again.
    """
    from rlsae.sae import ActivationStore, FeatureStats, TrainingRecord, evaluate_sae, load_sae

    cfg = ctx.config
    store = ActivationStore(acts_dir(ctx.run_dir, cfg, spec.name))
    sdir = sae_dir(ctx.run_dir, cfg, spec.name)
    source, final, counts = "feature_stats.safetensors", None, None
    if (sdir / "feature_stats.safetensors").is_file() and (sdir / "training.json").is_file():
        stats = FeatureStats.read(sdir)
        final = TrainingRecord.read(sdir / "training.json").final
        if stats.rows == store.rows and final is not None and final.rows == store.rows:
            counts = stats.firing_counts
    if counts is None or final is None:
        result = evaluate_sae(load_sae(sdir), store)
        source, final, counts = "evaluate_sae", result.metrics, result.stats.firing_counts
    return LiveFeatures.count(counts, cfg.evaluation.live_threshold, final, source)


def splice(ctx: Context[StudyConfig], spec: AgentSpec) -> SpliceResult:
    """The agent's returns with the SAE's reconstruction in place of the layer."""
    from rlsae.agents.splice import splice_metrics

    cfg = ctx.config
    res = splice_metrics(
        spec.path(ctx.run_dir),
        sae_dir(ctx.run_dir, cfg, spec.name),
        episodes=cfg.evaluation.splice_episodes,
        seed=cfg.evaluation.seed,
        layer=cfg.recording.layer,
        epsilon=cfg.evaluation.epsilon,
        max_episode_steps=cfg.evaluation.max_episode_steps,
    )
    return res


def _no_splice(cfg: StudyConfig) -> bool:
    return cfg.evaluation.splice_episodes == 0


CONCEPT_ROWS = 100_000
"""The most recorded rows (evenly spaced) the ``concepts`` stage matches on."""


def concepts(ctx: Context[StudyConfig], spec: AgentSpec) -> AgentConcepts:
    """The game-state concepts of the SAE's features (``SAE_DIR/concepts.json``); an agent
    whose recording cannot be matched (a game without a RAM table) gets a note instead."""
    cfg, run_dir = ctx.config, ctx.run_dir
    acts, sdir = acts_dir(run_dir, cfg, spec.name), sae_dir(run_dir, cfg, spec.name)
    try:
        check_concept_inputs(None, sdir, acts)
    except RlsaeError as e:
        return AgentConcepts(note=str(e))
    res = sae_concepts(None, sdir, acts, max_rows=CONCEPT_ROWS)
    path = res.write(sdir / CONCEPTS_FILE)
    return AgentConcepts(
        path=str(path.relative_to(run_dir)),
        coverage=res.coverage,
        coverage_auroc=res.coverage_auroc,
        live_features=res.live_features,
        rows=res.n_rows,
    )


_EVAL_COLUMNS = tuple(
    "mean_return std_return min_return max_return episodes mean_length human_normalized "
    "return_ci_low return_ci_high".split()
)
_LIVE_COLUMNS = (
    "live",
    "dead",
    "d_sae",
    "live_threshold",
    "fvu",
    "explained_variance",
    "mse",
    "l0",
    "dense",
    "rows",
)


def _agent_row(ctx: Context[StudyConfig], a: AgentSpec) -> dict[str, Any]:
    row: dict[str, Any] = {
        "agent": a.name,
        "run": a.run,
        "seed": a.seed,
        "step": a.step,
        "agent_dir": a.agent_dir,
    }
    row.update({f"hp_{k}": v for k, v in a.overrides.items()})
    ev = ctx.result(Evaluation, "eval", a.name)
    row.update({k: getattr(ev, k) for k in _EVAL_COLUMNS})
    live = ctx.result(LiveFeatures, "live", a.name)
    row.update({k: getattr(live, k) for k in _LIVE_COLUMNS if getattr(live, k) is not None})
    if not _no_splice(ctx.config):
        sp = ctx.result(SpliceResult, "splice", a.name)
        for f in dataclasses.fields(sp):  # not __dataclass_fields__: it lists FORMAT, VERSION
            v = getattr(sp, f.name)
            if isinstance(v, int | float) and not isinstance(v, bool):
                row[f"splice_{f.name}"] = v
    con = ctx.result(AgentConcepts, "concepts", a.name)
    row["concept_coverage"] = con.coverage
    return row


def agents_table(ctx: Context[StudyConfig]) -> AgentsTable:
    """One row per agent with every stage's numbers: ``analysis/agents.csv``."""
    import pandas as pd

    agents = [a for a in ctx.units("agent") if isinstance(a, AgentSpec)]
    df = pd.DataFrame([_agent_row(ctx, a) for a in agents])
    path = ctx.run_dir / "analysis" / "agents.csv"
    atomic_write_bytes(path, df.to_csv(index=False).encode())
    return AgentsTable("analysis/agents.csv", [a.name for a in agents], list(df.columns))


def fit(ctx: Context[StudyConfig]) -> FitOutcome:
    """``fit.y`` against ``fit.x`` across agents: ``analysis/fit_live_vs_return.{json,html}``."""
    import pandas as pd

    from rlsae.analysis.figures import fit_figure, write_figure_html
    from rlsae.analysis.fit import fit_xy

    cfg, analysis = ctx.config, ctx.run_dir / "analysis"
    df = pd.read_csv(analysis / "agents.csv")
    fx, fy = cfg.fit.x, cfg.fit.y
    if fx not in df.columns or fy not in df.columns:
        return FitOutcome(error=f"agents.csv lacks {fx!r} or {fy!r}")
    x, y = df[fx].to_numpy(float), df[fy].to_numpy(float)
    try:
        res = fit_xy(x, y, bootstrap=cfg.fit.bootstrap, seed=cfg.fit.seed)
    except RlsaeError as e:
        return FitOutcome(error=str(e))
    res.x, res.y, res.table = fx, fy, "agents.csv"
    res.write(analysis / "fit_live_vs_return.json")
    fig = fit_figure(
        x,
        y,
        res,
        x_label=fx,
        y_label=fy,
        labels=df["agent"].tolist(),
        title=f"{cfg.name}: {fy} vs {fx} ({len(df)} agents)",
    )
    write_figure_html(fig, analysis / "fit_live_vs_return.html", title=f"{cfg.name}: fit")
    cov, cov_error = _coverage_fit(ctx, df)
    return FitOutcome(fit=res, coverage_fit=cov, coverage_error=cov_error)


def _coverage_fit(ctx: Context[StudyConfig], df: Any) -> tuple[FitResult | None, str | None]:
    """``fit.y`` against the concept coverage of the agents that have one (the same fit as the
    live features'): ``analysis/fit_coverage_vs_return.json``, or why there is none."""
    from rlsae.analysis.fit import fit_xy

    cfg, fy = ctx.config, ctx.config.fit.y
    if "concept_coverage" not in df.columns:
        return None, "no agent has a concept coverage"
    have = df[df["concept_coverage"].notna()]
    try:
        res = fit_xy(
            have["concept_coverage"].to_numpy(float),
            have[fy].to_numpy(float),
            bootstrap=cfg.fit.bootstrap,
            seed=cfg.fit.seed,
        )
    except RlsaeError as e:
        return None, str(e)
    res.x, res.y, res.table = "concept_coverage", fy, "agents.csv"
    res.write(ctx.run_dir / "analysis" / "fit_coverage_vs_return.json")
    return res, None


def report(ctx: Context[StudyConfig]) -> Report:
    """``analysis/report.html``: the headline, the fit, the agents, the training curves, and
    where the time went (``analysis/stage_times.csv``)."""
    write_stage_times(ctx, ctx.run_dir / "analysis" / "stage_times.csv", skip=("report",))
    path = write_atari_report(ctx.run_dir)
    return Report(str(Path(path).relative_to(ctx.run_dir)))


# --------------------------------------------------------------------------------------------
# The declaration

ATARI = Study(
    kind=STUDY_KIND,
    config=StudyConfig,
    presets=ATARI_PRESETS,
    versions=("rlsae", "torch", "stable-baselines3", "ale-py", "gymnasium", "numpy"),
    units=(
        Units("run", _list_runs, markers="analysis/runs/{unit}"),
        Units("agent", _list_agents, markers="analysis/agents/{unit}"),
    ),
    stages=(
        Stage("import", imports.import_population, imports.ImportedAgents, skip_if=imports.off),
        Stage("train", train, TrainRun, per="run"),
        # an agent's model never changes once written: the population listing is what
        # depends on training, so the agent stages do not list ``train`` as an input
        Stage("eval", evaluate, Evaluation, per="agent"),
        Stage("record", record, Recording, per="agent"),
        Stage("sae", train_agent_sae, TrainedSAE, after=("record",), per="agent"),
        Stage("live", imports.survey_or(count_live), LiveFeatures, after=("sae",), per="agent"),
        Stage("splice", splice, SpliceResult, after=("sae",), per="agent", skip_if=_no_splice),
        Stage("concepts", concepts, AgentConcepts, after=("sae",), per="agent"),
        SWEEP,
        DIFF,
        Stage("table", agents_table, AgentsTable, after=("eval", "live", "splice", "concepts")),
        Stage("fit", fit, FitOutcome, after=("table",)),
        Stage("prefixes", prefixes, PrefixCurves, after=("sae", "splice"), skip_if=no_prefixes),
        Stage("report", report, Report, after=("table", "fit", "prefixes", "diff")),
    ),
)


# --------------------------------------------------------------------------------------------
# Entry points


def resolve_config(preset_or_path: str | os.PathLike | StudyConfig) -> tuple[StudyConfig, str]:
    """A preset name (smoke, demo, paper) or a config file -> (config, where it came from)."""
    return resolve_study_config(ATARI, preset_or_path)


def load_study_config(path: str | os.PathLike) -> StudyConfig:
    """Read a study config from YAML (``.yaml``/``.yml``/``.json``) or TOML (``.toml``)."""
    return load_config(ATARI, path)


def preset_dict(name: str) -> dict[str, Any]:
    """A copy of a preset's config mapping."""
    if name not in ATARI_PRESETS:
        raise RlsaeError(f"unknown preset {name!r}; use one of {', '.join(ATARI_PRESETS)}")
    return copy.deepcopy(ATARI_PRESETS[name])


def preset_config(name: str) -> StudyConfig:
    """A preset as a validated :class:`StudyConfig`."""
    return from_mapping(StudyConfig, preset_dict(name), f"preset {name}")


def _headline(outcome: FitOutcome) -> dict[str, Any] | None:
    f = outcome.fit
    if f is None:
        return None
    return {
        "n": f.n,
        "quadratic_r2": f.quadratic.r2,
        "quadratic_p": f.quadratic.f_pvalue,
        "linear_r2": f.linear.r2,
        "linear_p": f.linear.f_pvalue,
        "vertex_live": f.quadratic.vertex_x,
        "spearman_rho": f.spearman.rho,
        "spearman_p": f.spearman.pvalue,
    }


def run_study(
    cfg: StudyConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    engine: str = "local",
    workers: int | None = None,
    address: str | None = None,
    source: str = "config",
    study: Study[StudyConfig] = ATARI,
) -> dict[str, Any]:
    """Run (or resume) a whole study into ``out_dir``; returns the headline numbers.

    ``engine``: ``serial`` (in this process), ``local`` (a process pool of ``workers``, default
    one per ``resources.cpus`` cores; a single task runs in this process), or ``ray`` (one Ray
    task per training run and per agent, each with ``cfg.resources``; ``address`` of an
    existing cluster, or a local instance when ``None``). The pool (or Ray) is started only
    when some agent has work left. ``study``: the declaration to run (a variant of
    :data:`ATARI` with a stage added or replaced).
    """
    check_engine(engine, address)
    cfg, _ = resolve_study_config(study, cfg)  # validated, a copy

    def executor() -> Any:
        return make_engine(engine, workers=workers, address=address, resources=cfg.resources)

    out = run_engine(study, cfg, out_dir, resume=resume, source=source, executor=executor)
    ctx = Context(study, cfg, Path(out_dir))
    fit_outcome = ctx.result(FitOutcome, "fit")
    table = ctx.result(AgentsTable, "table")
    return {
        "run_dir": str(out_dir),
        "study": cfg.name,
        "engine": engine,
        "agents": len(table.agents),
        "stages_run": out.count("agent"),
        "stages_skipped": out.count("agent", "skipped"),
        "stages_off": out.count("agent", "off"),
        "worker_pids": sorted(out.worker_pids.get("agent", ())),
        "seconds": out.seconds,
        "agents_csv": str(Path(out_dir) / table.path),
        "report": str(Path(out_dir) / ctx.result(Report, "report").path),
        "fit": _headline(fit_outcome),
        "fit_error": fit_outcome.error,
    }


def run_atari_pipeline(
    out_dir: str | os.PathLike,
    preset: str | os.PathLike | StudyConfig = "demo",
    resume: bool = False,
    **engine_kwargs: Any,
) -> dict[str, Any]:
    """The dead-features study from a preset (``smoke``, ``demo``, ``paper``) or a config file."""
    cfg, source = resolve_config(preset)
    return run_study(cfg, out_dir, resume=resume, source=source, **engine_kwargs)
