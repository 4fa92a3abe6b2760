"""The dead-features study's config: who the agents are, what is recorded, the SAE, the scoring.

One YAML (or TOML) file describes the whole study (``rlsae pipeline atari --preset demo
--print-config`` prints a complete one)::

    name: my-study
    population:              # who the agents are
      arch: poster           # poster | nature
      train_steps: 200000    # environment steps per training run
      seeds: [0, 1, 2]       # one training run per seed (and per grid point)
      grid:                  # optional hyperparameter grid (train_dqn overrides)
        learning_rate: [0.0001, 0.0005]
      checkpoint_every: 50000  # optional: every checkpoint of every run is an agent too
      agents: []             # optional: existing agent directories, used as they are
      imports: []            # optional: agent files to import (dqns/*.pt), a stage of the study
    recording: {layer: fc1, steps: 1500000, epsilon: 0.2}
    sae: {arch: topk, d_sae: 2048, k: 50}
    evaluation: {episodes: 10, epsilon: 0.05, live_threshold: 1, splice_episodes: 5}
"""

from __future__ import annotations

import glob
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlsae.agents.config import ARCHS, check_game, train_config
from rlsae.agents.layers import LAYERS, check_layer
from rlsae.agents.survey_config import SurveyConfig
from rlsae.configs import check_range, from_mapping
from rlsae.errors import RlsaeError
from rlsae.sae.config import TRAIN_ARCHS, TrainConfig
from rlsae.sae.crosscoder_config import CrosscoderConfig


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
    """Existing agent directories to add to the population as they are (not trained here); an
    entry may be a glob pattern (``runs/poster/agents/*``: every agent directory it matches, in
    name order), e.g. the folder ``dqn import`` wrote each of the poster's agents into."""
    imports: list[str] = field(default_factory=list)
    """Agent files to import as the study's first stage (``dqn import``): files (the poster's
    ``dqns/dqnN.pt``, ``.pth``/``.safetensors`` state dicts, SB3 or QR-DQN ``.zip``), folders
    of them or glob patterns (``dqns/*.pt``); each becomes ``agents/imported/<file stem>`` in
    the run and joins the population."""
    import_arch: str | None = None
    """Network of the imported files (``poster`` or ``nature``; None: read from their names)."""
    import_game: str = "ms_pacman"
    """The ALE game the imported agents were trained on."""
    import_env_id: str | None = None
    """The environment they were trained in (None: ``ALE/<Game>-v5`` for torch files, rl-zoo3's
    ``<Game>NoFrameskip-v4`` for SB3 zips; see ``dqn import --env-id``)."""


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
    """``topk``, ``relu`` (ReLU + L1), ``batchtopk``, ``jumprelu`` or ``matryoshka`` (its
    nested prefixes add the ``prefixes`` stage: FVU and spliced return per prefix)."""
    d_sae: int = 2048
    """Latents (the poster: 512 -> 2048)."""
    k: int = 50
    """Active latents per row for TopK, on average for BatchTopK and Matryoshka (the poster:
    50)."""
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
    sweep_episodes: int = 0
    """Episodes per variant of the ablation sweep (every live feature set to zero in turn, ranked
    by the change in return; SAE_DIR/ablation_sweep.json); 0: no sweep stage."""
    sweep_features: int | None = None
    """Sweep only this many live features per agent, those firing most (None: every live one)."""
    survey_episodes: int = 0
    """With N > 0, live features are counted on a survey with the poster's protocol instead of
    on the SAE's recorded rows: N whole episodes at epsilon 0.2, sticky actions off, the first
    66 steps of every episode skipped (the poster: 2,500 episodes); 0: on the recorded rows."""


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
    """Which agents the study compares."""
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    """Where and how long activations are recorded."""
    sae: SAESettings = field(default_factory=SAESettings)
    """The SAE trained per agent."""
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    """How agents are scored and features counted."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """What one agent's task asks of the executor."""
    fit: FitConfig = field(default_factory=FitConfig)
    """The fit across agents."""
    diff: CrosscoderConfig | None = None
    """The ``diff`` stage (``rlsae.study.atari_diff``): per training run, a crosscoder between
    each pair of consecutive checkpoints on the same recorded states (features that appear,
    vanish or persist over training, joined with the returns); off when absent. Needs
    ``population.checkpoint_every``."""

    def validate(self, where: str = "config") -> None:
        """Ranges and cross-field rules; the first problem is one line ``where: key: what``."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise RlsaeError(f"{where}: name {self.name!r} may hold only letters, digits, _ . -")
        _check_population(self.population, where)
        _check_layer(self.population.arch, self.recording.layer, where)
        _check_training_runs(self.population, where)
        r, s, e, res = self.recording, self.sae, self.evaluation, self.resources
        check_range(where, "recording.steps", r.steps, 1)
        check_range(where, "recording.epsilon", r.epsilon, 0, 1)
        if s.arch not in TRAIN_ARCHS:
            raise RlsaeError(
                f"{where}: sae.arch: unknown SAE architecture {s.arch!r}; use one of "
                f"{', '.join(TRAIN_ARCHS)}"
            )
        check_range(where, "sae.d_sae", s.d_sae, 1)
        if s.arch in ("topk", "batchtopk", "matryoshka"):
            check_range(where, "sae.k", s.k, 1, s.d_sae)
        _check_train(s, where)
        check_range(where, "evaluation.episodes", e.episodes, 1)
        check_range(where, "evaluation.epsilon", e.epsilon, 0, 1)
        check_range(where, "evaluation.live_threshold", e.live_threshold, 1)
        check_range(where, "evaluation.splice_episodes", e.splice_episodes, 0)
        check_range(where, "evaluation.sweep_episodes", e.sweep_episodes, 0)
        _check_survey(e, self.recording.layer, where)
        if e.sweep_features is not None:
            check_range(where, "evaluation.sweep_features", e.sweep_features, 1)
        if e.max_episode_steps is not None:
            check_range(where, "evaluation.max_episode_steps", e.max_episode_steps, 1)
        check_range(where, "resources.cpus", res.cpus, 0)
        check_range(where, "resources.gpus", res.gpus, 0)
        check_range(where, "fit.bootstrap", self.fit.bootstrap, 0)
        if self.diff is not None:
            self.diff.validate(f"{where}: diff")
            if not self.population.checkpoint_every or not self.population.train_steps:
                raise RlsaeError(
                    f"{where}: diff: compares consecutive checkpoints of the study's training "
                    "runs; set population.train_steps and population.checkpoint_every"
                )


def _check_population(p: PopulationConfig, where: str) -> None:
    check_range(where, "population.train_steps", p.train_steps, 0)
    if p.train_steps == 0 and not p.agents and not p.imports:
        raise RlsaeError(
            f"{where}: population.train_steps is 0 and population.agents and "
            "population.imports are empty"
        )
    _check_imports(p, where)
    if len(set(p.seeds)) != len(p.seeds):
        raise RlsaeError(f"{where}: population.seeds: has duplicates")
    for key, values in p.grid.items():
        if not values:
            raise RlsaeError(f"{where}: population.grid.{key}: needs at least one value")
    if p.checkpoint_every is not None:
        check_range(where, "population.checkpoint_every", p.checkpoint_every, 1)
    if p.n_envs is not None:
        check_range(where, "population.n_envs", p.n_envs, 1)
    expand_agent_dirs(p.agents, where)


def expand_agent_dirs(entries: list[str], where: str = "config") -> list[Path]:
    """The agent directories ``population.agents`` names: each entry is an agent directory (it
    has ``model.zip``) or a glob pattern such as ``runs/poster/agents/*`` (every match that is
    an agent directory, in name order; a pattern matching none is refused); one line each."""
    out: list[Path] = []
    for ext in entries:
        path = Path(ext).expanduser()
        if glob.has_magic(str(path)):
            found = sorted(Path(m) for m in glob.glob(str(path)) if Path(m, "model.zip").is_file())
            if not found:
                raise RlsaeError(
                    f"{where}: population.agents: {ext} matches no agent directory (no model.zip)"
                )
            out.extend(found)
        elif (path / "model.zip").is_file():
            out.append(path)
        else:
            raise RlsaeError(
                f"{where}: population.agents: {ext} is not an agent directory (no model.zip)"
            )
    return out


AGENT_FILES = (".pt", ".pth", ".safetensors", ".zip")
"""The files ``population.imports`` takes from a folder (as ``dqn import --from FOLDER``)."""


def expand_import_files(entries: list[str], where: str = "config") -> list[Path]:
    """The agent files ``population.imports`` names: a file, a folder (its agent files, in name
    order) or a glob pattern (every matching file, in name order); one line for an entry that
    names none, or for two files with the same stem (their agents would share a name)."""
    out: list[Path] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if glob.has_magic(str(path)):
            found = sorted(Path(m) for m in glob.glob(str(path)) if Path(m).is_file())
        elif path.is_dir():
            found = sorted(f for f in path.iterdir() if f.is_file() and f.suffix in AGENT_FILES)
        else:
            found = [path] if path.is_file() else []
        if not found:
            raise RlsaeError(f"{where}: population.imports: {entry} names no agent file")
        out.extend(found)
    stems = [f.stem for f in out]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise RlsaeError(
            f"{where}: population.imports: several files are named {dup[0]}.*; each imported "
            "agent is named by its file's stem"
        )
    return out


def _check_imports(p: PopulationConfig, where: str) -> None:
    if p.import_arch is not None and p.import_arch not in ARCHS:
        raise RlsaeError(
            f"{where}: population.import_arch: expected one of {', '.join(ARCHS)}, got "
            f"{p.import_arch!r}"
        )
    check_game(f"{where}: population.import_game", p.import_game)
    if p.imports and p.import_arch is not None and p.import_arch != p.arch:
        raise RlsaeError(
            f"{where}: population.import_arch {p.import_arch!r} differs from population.arch "
            f"{p.arch!r} (the recorded layer is checked against population.arch)"
        )
    expand_import_files(p.imports, where)


def _check_survey(e: EvaluationConfig, layer: str, where: str) -> None:
    """``evaluation.survey_episodes`` (and the episode cap it plays under) as the survey's own
    :class:`~rlsae.agents.survey_config.SurveyConfig` checks them."""
    check_range(where, "evaluation.survey_episodes", e.survey_episodes, 0)
    if e.survey_episodes > 0:
        SurveyConfig(
            layer=layer, episodes=e.survey_episodes, max_episode_steps=e.max_episode_steps
        ).validate(f"{where}: evaluation (survey)")


def _check_layer(arch: str, layer: str, where: str) -> None:
    """The agents' own layer table (rlsae.agents.layers, no torch) checks the recorded layer."""
    if arch not in LAYERS:
        raise RlsaeError(
            f"{where}: population.arch: unknown architecture {arch!r}; use one of "
            f"{', '.join(LAYERS)}"
        )
    try:
        check_layer(arch, layer)
    except RlsaeError as e:
        raise RlsaeError(f"{where}: recording.layer: {e}") from None


def _check_training_runs(p: PopulationConfig, where: str) -> None:
    """Every training run's DQN settings (hyperparameters with each grid point) as
    ``dqn train`` checks them, so a bad value is refused before any agent is trained."""
    if p.train_steps == 0:
        return
    keys = sorted(p.grid)
    for combo in itertools.product(*(p.grid[k] for k in keys)):
        overrides = {**p.hyperparameters, **dict(zip(keys, combo, strict=True))}
        train_config(
            p.arch,
            p.train_steps,
            checkpoint_every=p.checkpoint_every,
            n_envs=p.n_envs or 1,
            where=f"{where}: population",
            **overrides,
        )


def _check_train(s: SAESettings, where: str) -> None:
    """``sae.train`` as :class:`~rlsae.sae.config.TrainConfig` fields (names, types, ranges)."""
    from_mapping(
        TrainConfig, {"arch": s.arch, "d_sae": s.d_sae, "k": s.k, **s.train}, where, "sae.train"
    )


# --------------------------------------------------------------------------------------------
# Where a study keeps an agent's store and SAE


def sae_name(cfg: StudyConfig) -> str:
    """The SAE's folder name: its architecture and width (``topk-2048-k50``)."""
    s = cfg.sae
    return f"{s.arch}-{s.d_sae}" + (f"-k{s.k}" if s.arch == "topk" else "")


def acts_dir(run_dir: Path, cfg: StudyConfig, agent: str) -> Path:
    """The agent's activation store in the run: ``acts/AGENT/LAYER``."""
    return Path(run_dir) / "acts" / agent / cfg.recording.layer


def sae_dir(run_dir: Path, cfg: StudyConfig, agent: str) -> Path:
    """The agent's SAE in the run: ``saes/AGENT/LAYER/SAE_NAME``."""
    return Path(run_dir) / "saes" / agent / cfg.recording.layer / sae_name(cfg)
