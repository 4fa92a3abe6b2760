"""The dead-features study: a population of DQN agents, an SAE per agent, live features vs return.

One YAML (or TOML) file describes the whole study::

    name: my-study
    population:              # who the agents are
      arch: poster           # poster | nature
      train_steps: 200000    # environment steps per training run
      seeds: [0, 1, 2]       # one training run per seed (and per grid point)
      grid:                  # optional hyperparameter grid (train_dqn overrides)
        learning_rate: [0.0001, 0.0005]
      checkpoint_every: 50000  # optional: every checkpoint of every run is an agent too
      agents: []             # optional: existing agent directories, used as they are
    recording: {layer: fc1, steps: 1500000, epsilon: 0.2}
    sae: {arch: topk, d_sae: 2048, k: 50}
    evaluation: {episodes: 10, epsilon: 0.05, live_threshold: 1, splice_episodes: 5}

For every agent the study runs five stages — ``eval`` (mean return), ``record`` (activations of
``recording.layer`` over ``recording.steps`` steps at ``recording.epsilon``), ``sae`` (train an
SAE on them), ``live`` (count latents that fire at least ``live_threshold`` times over the recorded
rows) and ``splice`` (the agent's return with the SAE's reconstruction in place of the layer).
Each finished stage leaves ``analysis/agents/AGENT/STAGE.json`` (and its artifact in the run
directory layout), so a re-run skips it. The study then writes ``analysis/agents.csv``, the fit of
live features against mean return (``analysis/fit_live_vs_return.{json,html}``) and
``analysis/report.html``.

Entry points: :func:`run_atari_pipeline` (a preset or a config file) and :func:`run_study`
(a :class:`StudyConfig`, with a choice of engine: serial, a local process pool, or Ray).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_json, read_json
from rlsae.provenance import git_commit, package_versions

STUDY_KIND = "atari-dead-features-study"
STAGES = ("eval", "record", "sae", "live", "splice")


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass
class PopulationConfig:
    """Which agents the study compares."""

    arch: str = "poster"
    """Q-network: ``poster`` (the poster's CNN on raw RGB) or ``nature`` (NatureCNN, 84x84x4)."""
    train_steps: int = 200_000
    """Environment steps per training run (0: no training; use ``agents`` only)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Independent training runs, one per seed (and per grid point)."""
    grid: dict[str, list[Any]] = field(default_factory=dict)
    """Hyperparameter grid: every combination x every seed is one training run. Keys are
    ``train_dqn`` overrides (SB3 ``DQN`` arguments such as ``learning_rate``)."""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    """``train_dqn`` overrides for every run (SB3 ``DQN`` arguments, e.g. ``buffer_size``)."""
    checkpoint_every: int | None = None
    """With a value, every checkpoint of every run is an agent too: a cheap way to get agents of
    very different skill. Without, each run's final model is one agent."""
    n_envs: int | None = None
    """Parallel environments per training run (``None``: ``train_dqn``'s default)."""
    agents: list[str] = field(default_factory=list)
    """Existing agent directories to add to the population as they are (not trained here)."""


@dataclass
class RecordingConfig:
    """Where and how long activations are recorded for each agent's SAE."""

    layer: str = "fc1"
    """Layer to record (poster: ``conv3``, ``fc1``, ``fc2``; nature: ``conv3``, ``fc1``)."""
    steps: int = 1_500_000
    """Environment steps surveyed per agent (the poster: about 1.5 M)."""
    epsilon: float = 0.2
    """Exploration rate while recording (the poster: 0.2)."""
    seed: int = 0
    """Seed of the recording episodes."""


@dataclass
class SAESettings:
    """The SAE trained on each agent's activations (poster defaults: TopK, 2048 latents, k 50)."""

    arch: str = "topk"
    """``topk`` or ``relu`` (ReLU + L1)."""
    d_sae: int = 2048
    """Latents (the poster: 512 -> 2048)."""
    k: int = 50
    """Active latents per row for TopK (the poster: 50)."""
    train: dict[str, Any] = field(default_factory=dict)
    """Further ``rlsae.sae.train.TrainConfig`` fields (e.g. ``epochs``, ``batch_size``, ``lr``)."""


@dataclass
class EvaluationConfig:
    """How agents are scored and features counted."""

    episodes: int = 10
    """Evaluation episodes per agent (mean return over these)."""
    epsilon: float = 0.05
    """Exploration rate during evaluation (0.05 is the usual Atari evaluation setting)."""
    seed: int = 1000
    """Seed of the evaluation episodes (distinct from the recording seed)."""
    live_threshold: int = 1
    """A latent is live if it fires at least this many times over the recorded rows."""
    splice_episodes: int = 5
    """Episodes with the SAE spliced into the network (0: skip the splice stage)."""
    max_episode_steps: int | None = None
    """Cut evaluation, recording and splice episodes after this many steps (None: whole games)."""


@dataclass
class ResourcesConfig:
    """What one agent's work asks of a sweep engine (a Ray task's resource request)."""

    cpus: float = 1.0
    """CPU cores per task (also its torch thread count)."""
    gpus: float = 0.0
    """GPUs per task (Ray only)."""


@dataclass
class FitConfig:
    """The fit across agents."""

    x: str = "live"
    """Column of agents.csv on the x axis."""
    y: str = "mean_return"
    """Column of agents.csv on the y axis."""
    bootstrap: int = 2000
    """Bootstrap resamples for the vertex interval."""
    seed: int = 0
    """Seed of the bootstrap."""


@dataclass
class StudyConfig:
    """One dead-features study. Saved in the run directory's ``run.json``."""

    name: str = "study"
    """Name of the study (a run directory belongs to exactly one study)."""
    population: PopulationConfig = field(default_factory=PopulationConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    sae: SAESettings = field(default_factory=SAESettings)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    fit: FitConfig = field(default_factory=FitConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> StudyConfig:
        """Build and validate a config; unknown keys and bad values raise one-line errors."""
        if not isinstance(d, dict):
            raise RlsaeError(f"{where}: the study config must be a mapping of sections")
        sections = {f.name: f for f in fields(cls)}
        _check_keys(d, sections, where, "")
        kwargs: dict[str, Any] = {}
        for name, value in d.items():
            if name == "name":
                kwargs[name] = str(value)
                continue
            sub_cls = _SECTIONS[name]
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise RlsaeError(f"{where}: section {name!r} must be a mapping")
            _check_keys(value, {f.name: f for f in fields(sub_cls)}, where, f"{name}.")
            try:
                kwargs[name] = sub_cls(**value)
            except TypeError as e:
                raise RlsaeError(f"{where}: section {name!r}: {e}") from None
        cfg = cls(**kwargs)
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "config") -> None:
        p, r, s, e, res = self.population, self.recording, self.sae, self.evaluation, self.resources
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise RlsaeError(f"{where}: name {self.name!r} may hold only letters, digits, _ . -")
        from rlsae.agents.networks import LAYERS, check_layer

        if p.arch not in LAYERS:
            raise RlsaeError(
                f"{where}: unknown architecture {p.arch!r} in population.arch; use one of "
                f"{', '.join(LAYERS)}"
            )
        check_layer_msg(check_layer, p.arch, r.layer, where)
        _require(where, "population.train_steps", p.train_steps, int, lo=0)
        if p.train_steps == 0 and not p.agents:
            raise RlsaeError(f"{where}: population.train_steps is 0 and population.agents is empty")
        if not isinstance(p.seeds, list) or not all(isinstance(x, int) for x in p.seeds):
            raise RlsaeError(f"{where}: population.seeds must be a list of integers")
        if len(set(p.seeds)) != len(p.seeds):
            raise RlsaeError(f"{where}: population.seeds has duplicates")
        if not isinstance(p.grid, dict) or not all(
            isinstance(v, list) and v for v in p.grid.values()
        ):
            raise RlsaeError(f"{where}: population.grid must map names to non-empty lists")
        if not isinstance(p.hyperparameters, dict):
            raise RlsaeError(f"{where}: population.hyperparameters must be a mapping")
        if p.checkpoint_every is not None:
            _require(where, "population.checkpoint_every", p.checkpoint_every, int, lo=1)
        if p.n_envs is not None:
            _require(where, "population.n_envs", p.n_envs, int, lo=1)
        if not isinstance(p.agents, list):
            raise RlsaeError(f"{where}: population.agents must be a list of agent directories")
        for ext in p.agents:
            if not (Path(str(ext)).expanduser() / "model.zip").is_file():
                raise RlsaeError(
                    f"{where}: population.agents: {ext} is not an agent directory (no model.zip)"
                )
        _require(where, "recording.steps", r.steps, int, lo=1)
        _require(where, "recording.epsilon", r.epsilon, (int, float), lo=0, hi=1)
        if s.arch not in ("topk", "relu"):
            raise RlsaeError(f"{where}: unknown SAE architecture {s.arch!r}; use topk or relu")
        _require(where, "sae.d_sae", s.d_sae, int, lo=1)
        if s.arch == "topk":
            _require(where, "sae.k", s.k, int, lo=1, hi=s.d_sae)
        if not isinstance(s.train, dict):
            raise RlsaeError(f"{where}: sae.train must be a mapping of TrainConfig fields")
        _require(where, "evaluation.episodes", e.episodes, int, lo=1)
        _require(where, "evaluation.epsilon", e.epsilon, (int, float), lo=0, hi=1)
        _require(where, "evaluation.live_threshold", e.live_threshold, int, lo=1)
        _require(where, "evaluation.splice_episodes", e.splice_episodes, int, lo=0)
        if e.max_episode_steps is not None:
            _require(where, "evaluation.max_episode_steps", e.max_episode_steps, int, lo=1)
        _require(where, "resources.cpus", res.cpus, (int, float), lo=0)
        _require(where, "resources.gpus", res.gpus, (int, float), lo=0)

    def config_hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_SECTIONS = {
    "population": PopulationConfig,
    "recording": RecordingConfig,
    "sae": SAESettings,
    "evaluation": EvaluationConfig,
    "resources": ResourcesConfig,
    "fit": FitConfig,
}


def check_layer_msg(
    check_layer: Callable[[str, str], Any], arch: str, layer: str, where: str
) -> None:
    try:
        check_layer(arch, layer)
    except RlsaeError as e:
        raise RlsaeError(f"{where}: recording.layer: {e}") from None


def _check_keys(d: dict[str, Any], known: dict[str, Any], where: str, prefix: str) -> None:
    for key in d:
        if key not in known:
            raise RlsaeError(
                f"{where}: unknown key {prefix + str(key)!r}; known keys: "
                f"{', '.join(prefix + k for k in known)}"
            )


def _require(
    where: str, name: str, value: Any, types: Any, lo: float | None = None, hi: float | None = None
) -> None:
    if isinstance(value, bool) or not isinstance(value, types):
        raise RlsaeError(f"{where}: {name} must be a number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise RlsaeError(f"{where}: {name} must be {rng}, got {value!r}")


def load_study_config(path: str | os.PathLike) -> StudyConfig:
    """Read a study config from YAML (``.yaml``/``.yml``/``.json``) or TOML (``.toml``)."""
    path = Path(path)
    if not path.is_file():
        raise RlsaeError(f"study config {path} not found")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError, tomllib.TOMLDecodeError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RlsaeError(
            f"{path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {first}"
        ) from None
    return StudyConfig.from_dict(data or {}, where=str(path))


def resolve_config(preset_or_path: str | os.PathLike | StudyConfig) -> tuple[StudyConfig, str]:
    """A preset name (smoke, demo, paper) or a config file -> (config, where it came from)."""
    if isinstance(preset_or_path, StudyConfig):
        preset_or_path.validate()
        return preset_or_path, "config"
    from rlsae.study.presets import PRESETS, preset_config

    s = str(preset_or_path)
    if s in PRESETS:
        return preset_config(s), f"preset:{s}"
    p = Path(s)
    if p.suffix in (".yaml", ".yml", ".toml", ".json") or p.exists():
        return load_study_config(p), str(p)
    raise RlsaeError(
        f"unknown preset {s!r}; use one of {', '.join(PRESETS)} or a path to a study config file"
    )


# --------------------------------------------------------------------------------------------
# The population


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


def _checkpoint_steps(run_agent_dir: Path) -> list[int]:
    ck = run_agent_dir / "checkpoints"
    steps = []
    if ck.is_dir():
        for d in ck.iterdir():
            m = re.fullmatch(r"step_(\d+)", d.name)
            if m and d.is_dir() and (d / "model.zip").is_file():
                steps.append(int(m.group(1)))
    return sorted(steps)


def population(cfg: StudyConfig, run_dir: Path) -> list[AgentSpec]:
    """The agents of the study. With checkpoints, reads which checkpoints training wrote."""
    p = cfg.population
    agents: list[AgentSpec] = []
    for run in training_runs(cfg):
        rdir = Path("agents") / run.name
        final_step = p.train_steps
        if p.checkpoint_every:
            for step in _checkpoint_steps(run_dir / rdir):
                if step > final_step:
                    continue
                agents.append(
                    AgentSpec(
                        name=f"{run.name}-step{step}",
                        agent_dir=str(rdir / "checkpoints" / f"step_{step}"),
                        run=run.name,
                        seed=run.seed,
                        step=step,
                        overrides=run.overrides,
                    )
                )
            if any(a.step == final_step and a.run == run.name for a in agents):
                continue
        agents.append(
            AgentSpec(
                name=f"{run.name}-step{final_step}",
                agent_dir=str(rdir),
                run=run.name,
                seed=run.seed,
                step=final_step,
                overrides=run.overrides,
            )
        )
    seen = {a.name for a in agents}
    for ext in p.agents:
        ap = Path(ext).expanduser().resolve()
        if not (ap / "model.zip").is_file():
            raise RlsaeError(f"population.agents: {ext} is not an agent directory (no model.zip)")
        name = _slug(ap.name)
        while name in seen:
            name += "_"
        seen.add(name)
        agents.append(AgentSpec(name=name, agent_dir=str(ap), run="", step=None))
    return agents


# --------------------------------------------------------------------------------------------
# Run directory


def prepare_run_dir(run_dir: Path, cfg: StudyConfig, source: str, resume: bool) -> dict[str, Any]:
    """Create or re-open a study's run directory; refuse one that belongs to another study."""
    run_json = run_dir / "run.json"
    if run_json.exists():
        info = read_json(run_json)
        if info.get("kind") != STUDY_KIND:
            raise RlsaeError(
                f"{run_dir} holds a {info.get('kind', 'different')!r} run, not a dead-features "
                "study; choose another --out"
            )
        if info.get("config_hash") != cfg.config_hash():
            raise RlsaeError(
                f"{run_dir} belongs to another study ({info.get('study')!r} from "
                f"{info.get('source')}, config {info.get('config_hash')}); choose another --out"
            )
        if not resume:
            raise RlsaeError(f"{run_dir} already holds this study; pass --resume to continue it")
        return info
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RlsaeError(f"{run_dir} exists and is not a study run directory; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "format": "rlsae-run",
        "kind": STUDY_KIND,
        "study": cfg.name,
        "source": source,
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(),
        "versions": package_versions(
            "rlsae", "torch", "stable-baselines3", "ale-py", "gymnasium", "numpy"
        ),
        "git_commit": git_commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": "running",
    }
    atomic_write_json(run_json, info)
    return info


def read_study_config(run_dir: Path) -> StudyConfig:
    info = read_json(Path(run_dir) / "run.json")
    if info.get("kind") != STUDY_KIND:
        raise RlsaeError(f"{run_dir} is not a dead-features study run directory")
    return StudyConfig.from_dict(info["config"], where=str(Path(run_dir) / "run.json"))


# --------------------------------------------------------------------------------------------
# Stages (each one a function of (run_dir, config, spec); done when its JSON exists)


def stage_dir(run_dir: Path, agent: str) -> Path:
    return Path(run_dir) / "analysis" / "agents" / agent


def sae_name(cfg: StudyConfig) -> str:
    s = cfg.sae
    return f"{s.arch}-{s.d_sae}" + (f"-k{s.k}" if s.arch == "topk" else "")


def acts_dir(run_dir: Path, cfg: StudyConfig, agent: str) -> Path:
    return Path(run_dir) / "acts" / agent / cfg.recording.layer


def sae_dir(run_dir: Path, cfg: StudyConfig, agent: str) -> Path:
    return Path(run_dir) / "saes" / agent / cfg.recording.layer / sae_name(cfg)


def _stage_eval(run_dir: Path, cfg: StudyConfig, spec: AgentSpec) -> dict[str, Any]:
    from rlsae.agents.evaluate import evaluate_agent

    e = cfg.evaluation
    res = evaluate_agent(
        spec.path(run_dir),
        episodes=e.episodes,
        epsilon=e.epsilon,
        seed=e.seed,
        max_episode_steps=e.max_episode_steps,
    )
    return _jsonable(res)


def _stage_record(run_dir: Path, cfg: StudyConfig, spec: AgentSpec) -> dict[str, Any]:
    from rlsae.agents.record import record_activations

    r = cfg.recording
    out = acts_dir(run_dir, cfg, spec.name)
    if not (out / "meta.json").is_file():
        if out.exists():  # a directory without meta.json is not a store: an interrupted write
            shutil.rmtree(out)
        record_activations(
            spec.path(run_dir), r.layer, r.steps, out, epsilon=r.epsilon, seed=r.seed
        )
    meta = read_json(out / "meta.json")
    return {"path": str(out.relative_to(run_dir)), "rows": meta["rows"], "d_in": meta["d_in"]}


def _train_config(cfg: StudyConfig, store: Any) -> Any:
    from rlsae.sae.train import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    kw: dict[str, Any] = {}
    base = {"arch": cfg.sae.arch, "d_sae": cfg.sae.d_sae, "k": cfg.sae.k, "d_in": store.d_in}
    for k, v in {**base, **cfg.sae.train}.items():
        if k in known:
            kw[k] = v
        elif k in cfg.sae.train:
            raise RlsaeError(
                f"sae.train: unknown TrainConfig field {k!r}; known: {', '.join(sorted(known))}"
            )
    return TrainConfig(**kw)


def _stage_sae(run_dir: Path, cfg: StudyConfig, spec: AgentSpec) -> dict[str, Any]:
    from rlsae.sae.store import ActivationStore
    from rlsae.sae.train import train_sae

    store = ActivationStore(acts_dir(run_dir, cfg, spec.name))
    out = sae_dir(run_dir, cfg, spec.name)
    tcfg = _train_config(cfg, store)
    t0 = time.perf_counter()
    train_sae(store, out, tcfg, resume=True)
    hist_path = out / "training.json"
    final: dict[str, Any] = {}
    if hist_path.is_file():
        hist = read_json(hist_path)
        final = hist.get("final", {}) if isinstance(hist, dict) else {}
    return {
        "path": str(out.relative_to(run_dir)),
        "train_config": _jsonable(asdict(tcfg)),
        "train_seconds": time.perf_counter() - t0,
        "final": _jsonable(final),
    }


def _stage_live(run_dir: Path, cfg: StudyConfig, spec: AgentSpec) -> dict[str, Any]:
    """Live and dead latents over every recorded row, plus the SAE's reconstruction metrics.

    Uses the statistics ``train_sae`` wrote at the end of training (``feature_stats`` and
    ``training.json``'s final evaluation over the whole store) when they cover every row of the
    store; otherwise evaluates the SAE over the store again.
    """
    import torch

    from rlsae.sae.io import load_sae
    from rlsae.sae.metrics import evaluate_sae, json_metrics, live_feature_count
    from rlsae.sae.store import ActivationStore

    store = ActivationStore(acts_dir(run_dir, cfg, spec.name))
    sdir = sae_dir(run_dir, cfg, spec.name)
    metrics: dict[str, Any] | None = None
    counts = None
    stats_file = sdir / "feature_stats.safetensors"
    training = sdir / "training.json"
    if stats_file.is_file() and training.is_file():
        from rlsae.sae.metrics import load_feature_stats

        stats = load_feature_stats(sdir)
        final = read_json(training).get("final") or {}
        if int(stats["rows"].reshape(-1)[0]) == store.rows and final.get("rows") == store.rows:
            counts = stats["firing_counts"]
            metrics = dict(final)
            metrics["source_of_counts"] = "feature_stats.safetensors"
    if metrics is None:
        result = evaluate_sae(load_sae(sdir), store)
        counts = result["firing_counts"]
        metrics = json_metrics(result)
        metrics["source_of_counts"] = "evaluate_sae"
    thr = cfg.evaluation.live_threshold
    counts = torch.as_tensor(counts)
    live = live_feature_count(counts, thr)
    q = torch.quantile(counts.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    metrics.update(
        {
            "live": live,
            "dead": int(counts.numel() - live),
            "d_sae": int(counts.numel()),
            "live_threshold": thr,
            "firing_counts_q10_q50_q90": [float(v) for v in q],
        }
    )
    return _jsonable(metrics)


def _stage_splice(run_dir: Path, cfg: StudyConfig, spec: AgentSpec) -> dict[str, Any]:
    if cfg.evaluation.splice_episodes == 0:
        return {"skipped": True}
    from rlsae.agents.splice import splice_metrics

    res = splice_metrics(
        spec.path(run_dir),
        sae_dir(run_dir, cfg, spec.name),
        episodes=cfg.evaluation.splice_episodes,
        seed=cfg.evaluation.seed,
        layer=cfg.recording.layer,
        epsilon=cfg.evaluation.epsilon,
        max_episode_steps=cfg.evaluation.max_episode_steps,
    )
    return _jsonable(res)


STAGE_FUNCS: dict[str, Callable[[Path, StudyConfig, AgentSpec], dict[str, Any]]] = {
    "eval": _stage_eval,
    "record": _stage_record,
    "sae": _stage_sae,
    "live": _stage_live,
    "splice": _stage_splice,
}


def _jsonable(obj: Any) -> Any:
    """Drop tensors and arrays that are not scalars; turn numpy/torch scalars into floats."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            j = _jsonable(v)
            if j is not _DROP:
                out[str(k)] = j
        return out
    if isinstance(obj, list | tuple):
        return [x for x in (_jsonable(v) for v in obj) if x is not _DROP]
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "numel") and hasattr(obj, "item"):  # torch tensor
        return (
            _jsonable(obj.item())
            if obj.numel() == 1
            else (obj.tolist() if obj.numel() <= 64 else _DROP)
        )
    if hasattr(obj, "size") and hasattr(obj, "tolist"):  # numpy
        return _jsonable(obj.tolist()) if obj.size <= 64 else _DROP
    return str(obj)


_DROP = object()


def run_agent(run_dir: str | os.PathLike, spec: AgentSpec | dict[str, Any]) -> dict[str, Any]:
    """All stages of one agent, skipping those already finished. The unit of a sweep.

    Returns ``{"agent", "done": [stages run now], "skipped": [stages already done], "pid"}``.
    """
    run_dir = Path(run_dir)
    if isinstance(spec, dict):
        spec = AgentSpec(**spec)
    cfg = read_study_config(run_dir)
    sdir = stage_dir(run_dir, spec.name)
    sdir.mkdir(parents=True, exist_ok=True)
    done, skipped = [], []
    for stage in STAGES:
        marker = sdir / f"{stage}.json"
        if marker.is_file():
            skipped.append(stage)
            continue
        t0 = time.perf_counter()
        try:
            result = STAGE_FUNCS[stage](run_dir, cfg, spec)
        except RlsaeError as e:
            raise RlsaeError(f"agent {spec.name}, stage {stage}: {e}") from None
        atomic_write_json(
            marker,
            {
                "stage": stage,
                "agent": spec.name,
                "seconds": time.perf_counter() - t0,
                "result": result,
            },
        )
        done.append(stage)
    return {"agent": spec.name, "done": done, "skipped": skipped, "pid": os.getpid()}


def train_run(run_dir: str | os.PathLike, spec: RunSpec | dict[str, Any]) -> dict[str, Any]:
    """Train one run of the population (resuming a partial one); done when its marker exists."""
    run_dir = Path(run_dir)
    if isinstance(spec, dict):
        spec = RunSpec(**spec)
    cfg = read_study_config(run_dir)
    marker = run_dir / "analysis" / "runs" / f"{spec.name}.json"
    if marker.is_file():
        return {"run": spec.name, "done": [], "skipped": ["train"]}
    from rlsae.agents.dqn import train_dqn

    p = cfg.population
    out = run_dir / "agents" / spec.name
    kw: dict[str, Any] = {**p.hyperparameters, **spec.overrides}
    if p.n_envs is not None:
        kw["n_envs"] = p.n_envs
    t0 = time.perf_counter()
    train_dqn(
        p.arch,
        p.train_steps,
        out,
        seed=spec.seed,
        checkpoint_every=p.checkpoint_every,
        resume=out.exists(),
        **kw,
    )
    atomic_write_json(
        marker,
        {
            "run": spec.name,
            "seed": spec.seed,
            "overrides": spec.overrides,
            "seconds": time.perf_counter() - t0,
        },
    )
    return {"run": spec.name, "done": ["train"], "skipped": []}


# --------------------------------------------------------------------------------------------
# Aggregation


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def agents_table(run_dir: Path, cfg: StudyConfig, agents: list[AgentSpec]) -> Any:
    """One row per agent with every finished stage's numbers (``analysis/agents.csv``)."""
    import pandas as pd

    rows = []
    for a in agents:
        sdir = stage_dir(run_dir, a.name)
        row: dict[str, Any] = {
            "agent": a.name,
            "run": a.run,
            "seed": a.seed,
            "step": a.step,
            "agent_dir": a.agent_dir,
        }
        for k, v in a.overrides.items():
            row[f"hp_{k}"] = v
        ev = _stage_result(sdir, "eval")
        if ev:
            for k in (
                "mean_return",
                "std_return",
                "min_return",
                "max_return",
                "episodes",
                "mean_length",
            ):
                if k in ev:
                    row[k] = ev[k]
        live = _stage_result(sdir, "live")
        if live:
            for k in (
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
            ):
                if k in live:
                    row[k] = live[k]
        sp = _stage_result(sdir, "splice")
        if sp and not sp.get("skipped"):
            for k, v in sp.items():
                if _num(v):
                    row[f"splice_{k}"] = v
        rows.append(row)
    return pd.DataFrame(rows)


def _stage_result(sdir: Path, stage: str) -> dict[str, Any] | None:
    p = sdir / f"{stage}.json"
    if not p.is_file():
        return None
    return read_json(p).get("result")


def finish_study(run_dir: Path, cfg: StudyConfig, agents: list[AgentSpec]) -> dict[str, Any]:
    """agents.csv, the fit of live features vs mean return, and the report."""
    from rlsae.analysis.fit import fit_xy
    from rlsae.fsutil import atomic_write_bytes

    analysis = run_dir / "analysis"
    df = agents_table(run_dir, cfg, agents)
    atomic_write_bytes(analysis / "agents.csv", df.to_csv(index=False).encode())
    fit: dict[str, Any] | None = None
    fit_error = None
    fx, fy = cfg.fit.x, cfg.fit.y
    if fx in df.columns and fy in df.columns:
        try:
            fit = fit_xy(
                df[fx].to_numpy(float),
                df[fy].to_numpy(float),
                bootstrap=cfg.fit.bootstrap,
                seed=cfg.fit.seed,
            )
            fit.update({"x": fx, "y": fy, "table": "agents.csv"})
        except RlsaeError as e:
            fit_error = str(e)
    else:
        fit_error = f"agents.csv lacks {fx!r} or {fy!r}"
    if fit is not None:
        atomic_write_json(analysis / "fit_live_vs_return.json", fit)
        from rlsae.analysis.figures import fit_figure, write_figure_html

        fig = fit_figure(
            df[fx].to_numpy(float),
            df[fy].to_numpy(float),
            fit,
            x_label=fx,
            y_label=fy,
            labels=df["agent"].tolist(),
            title=f"{cfg.name}: {fy} vs {fx} ({len(df)} agents)",
        )
        write_figure_html(fig, analysis / "fit_live_vs_return.html", title=f"{cfg.name}: fit")
    from rlsae.analysis.report import write_report

    report = write_report(run_dir)
    return {
        "agents_csv": str(analysis / "agents.csv"),
        "fit": fit,
        "fit_error": fit_error,
        "report": str(report),
    }


# --------------------------------------------------------------------------------------------
# Entry points


def run_study(
    cfg: StudyConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    engine: str = "local",
    workers: int | None = None,
    address: str | None = None,
    source: str = "config",
) -> dict[str, Any]:
    """Run (or resume) a whole study into ``out_dir``; returns the headline numbers.

    ``engine``: ``serial`` (in this process), ``local`` (a process pool of ``workers``, default
    one per ``resources.cpus`` cores; a single task runs in this process), or
    ``ray`` (one Ray task per training run and per agent, each with ``cfg.resources``;
    ``address`` of an existing cluster, or a local instance when ``None``).
    """
    from rlsae.study.sweep import make_engine

    run_dir = Path(out_dir)
    cfg.validate()
    t0 = time.perf_counter()
    info = prepare_run_dir(run_dir, cfg, source, resume)
    eng = make_engine(engine, workers=workers, address=address, resources=cfg.resources)
    try:
        runs = training_runs(cfg)
        eng.map(train_run, run_dir, [asdict(r) for r in runs], label="train")
        agents = population(cfg, run_dir)
        if not agents:
            raise RlsaeError("the population is empty: training wrote no agent to study")
        results = eng.map(run_agent, run_dir, [asdict(a) for a in agents], label="agents")
    finally:
        eng.close()
    summary = finish_study(run_dir, cfg, agents)
    info.update(
        {
            "status": "finished",
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "agents": [a.name for a in agents],
        }
    )
    atomic_write_json(run_dir / "run.json", info)
    fit = summary["fit"]
    headline = None
    if fit:
        q = fit["quadratic"]
        headline = {
            "n": fit["n"],
            "quadratic_r2": q["r2"],
            "quadratic_p": q["f_pvalue"],
            "linear_r2": fit["linear"]["r2"],
            "linear_p": fit["linear"]["f_pvalue"],
            "vertex_live": q.get("vertex_x"),
            "spearman_rho": fit["spearman"]["rho"],
            "spearman_p": fit["spearman"]["pvalue"],
        }
    return {
        "run_dir": str(run_dir),
        "study": cfg.name,
        "engine": engine,
        "agents": len(agents),
        "stages_run": sum(len(r["done"]) for r in results),
        "stages_skipped": sum(len(r["skipped"]) for r in results),
        "worker_pids": sorted({r["pid"] for r in results}),
        "seconds": time.perf_counter() - t0,
        "agents_csv": summary["agents_csv"],
        "report": summary["report"],
        "fit": headline,
        "fit_error": summary["fit_error"],
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
