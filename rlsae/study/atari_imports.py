"""The dead-features study over agents trained elsewhere: an ``import`` stage and the poster's
live-feature survey as the way live features are counted.

- ``import`` (once per study, first; on when ``population.imports`` names files): each agent
  file (the poster's ``dqns/dqnN.pt``, state dicts, safetensors, SB3/QR-DQN zips, or a folder
  or glob of them) is imported with :func:`rlsae.agents.importer.import_agent` into
  ``agents/imported/<file stem>`` of the run and joins the population (the study's
  ``population`` lists them with :func:`imported_agents`). An agent already imported there is
  kept, so a resumed study does not import again.
- ``live`` with ``evaluation.survey_episodes`` > 0: instead of counting live features on the
  rows the SAE was trained on, the agent is surveyed with the poster's protocol
  (:mod:`rlsae.agents.survey`: epsilon 0.2, sticky actions off, the first 66 steps of every
  episode skipped, ``survey_episodes`` whole episodes) into ``survey/AGENT/LAYER``, and a
  feature is live if it fires (> 0) on at least ``live_threshold`` surveyed steps (the poster:
  on any). :func:`survey_or` wraps the study's own ``live`` stage with this switch.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from rlsae.artifacts import Artifact
from rlsae.study.atari_config import StudyConfig, expand_import_files, sae_dir
from rlsae.study.engine import Context
from rlsae.study.results import LiveFeatures

IMPORTED = Path("agents") / "imported"
"""Where the ``import`` stage puts the agents, relative to the run directory."""


class _Agent(Protocol):
    name: str

    def path(self, run_dir: Path) -> Path: ...


@dataclass
class ImportedAgents(Artifact):
    """The agents the ``import`` stage made: names, their files and the files' SHA-256."""

    FORMAT: ClassVar[str] = "rlsae.atari_imports"
    VERSION: ClassVar[int] = 1

    agents: list[str] = field(default_factory=list)
    """Agent names (the files' stems), in population order."""
    files: list[str] = field(default_factory=list)
    """The imported files, as given (resolved)."""
    sha256: list[str] = field(default_factory=list)
    """Each file's SHA-256, as ``agent.json``'s ``source.sha256`` records it."""


def off(cfg: StudyConfig) -> bool:
    """The ``import`` stage is off unless ``population.imports`` names files."""
    return not cfg.population.imports


def import_population(ctx: Context[StudyConfig]) -> ImportedAgents:
    """Import every file of ``population.imports`` into ``agents/imported/<stem>`` (an agent
    already there is kept: a resume does not import it again)."""
    from rlsae.agents.importer import import_agent
    from rlsae.agents.results import AgentInfo

    p = ctx.config.population
    out = ImportedAgents()
    for src in expand_import_files(p.imports, "population"):
        dest = ctx.run_dir / IMPORTED / src.stem
        if not (dest / "agent.json").is_file():
            if dest.exists():  # not published by import_agent: left by something else
                shutil.rmtree(dest)
            import_agent(src, dest, arch=p.import_arch, game=p.import_game, env_id=p.import_env_id)
        source = AgentInfo.read(dest / "agent.json").source
        out.agents.append(src.stem)
        out.files.append(str(src.resolve()))
        out.sha256.append(source.sha256 if source is not None else "")
    return out


def imported_agents(cfg: StudyConfig) -> list[tuple[str, str]]:
    """(name, agent directory relative to the run) of each agent the ``import`` stage makes,
    in the order of ``population.imports`` (the study's population adds them)."""
    files = expand_import_files(cfg.population.imports, "population")
    return [(f.stem, str(IMPORTED / f.stem)) for f in files]


def survey_dir(run_dir: Path, cfg: StudyConfig, agent: str) -> Path:
    """The agent's survey store in the run: ``survey/AGENT/LAYER``."""
    return Path(run_dir) / "survey" / agent / cfg.recording.layer


def survey_live(ctx: Context[StudyConfig], spec: _Agent) -> LiveFeatures:
    """Survey the agent with the poster's protocol and count its SAE's live features there."""
    from rlsae.agents.survey import survey_activations
    from rlsae.agents.survey_config import SurveyConfig
    from rlsae.sae import ActivationStore, evaluate_sae, load_sae

    cfg, run_dir = ctx.config, ctx.run_dir
    ev = cfg.evaluation
    out = survey_dir(run_dir, cfg, spec.name)
    if not (out / "meta.json").is_file():
        if out.exists():  # a directory without meta.json is not a store: an interrupted write
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        scfg = SurveyConfig(
            layer=cfg.recording.layer, episodes=ev.survey_episodes, seed=ev.seed,
            max_episode_steps=ev.max_episode_steps,
        )  # fmt: skip
        survey_activations(spec.path(run_dir), out, scfg, torch_threads=None)
    result = evaluate_sae(load_sae(sae_dir(run_dir, cfg, spec.name)), ActivationStore(out))
    source = f"survey ({out.relative_to(run_dir)}, {ev.survey_episodes} episodes)"
    return LiveFeatures.count(result.stats.firing_counts, ev.live_threshold, result.metrics, source)


@dataclass(frozen=True)
class SurveyOr:
    """The ``live`` stage: :func:`survey_live` when ``evaluation.survey_episodes`` > 0, else
    ``count_live`` (live features over the SAE's recorded rows). A class, not a closure, so the
    study (and its stages) pickles for a process pool or Ray."""

    count_live: Callable[..., LiveFeatures]

    def __call__(self, ctx: Context[StudyConfig], spec: Any) -> LiveFeatures:
        if ctx.config.evaluation.survey_episodes > 0:
            return survey_live(ctx, spec)
        return self.count_live(ctx, spec)


def survey_or(count_live: Callable[..., LiveFeatures]) -> SurveyOr:
    """Wrap the study's own ``live`` stage with the survey switch (see :class:`SurveyOr`)."""
    return SurveyOr(count_live)


__all__ = [
    "IMPORTED",
    "ImportedAgents",
    "import_population",
    "imported_agents",
    "off",
    "survey_dir",
    "SurveyOr",
    "survey_live",
    "survey_or",
]
