"""The dead-features study's ``sweep`` stage: every live feature of an agent's SAE ablated in
turn (:func:`rlsae.agents.sweep.ablation_sweep`, ``rlsae dqn sweep`` on the command line).

Off unless ``evaluation.sweep_episodes`` is above 0 (it plays ``1 + live features`` sets of
episodes per agent: about 9 features a minute for a poster ``fc1`` SAE on 2 cores with 200-step
episodes, see docs/benchmarks.md); ``evaluation.sweep_features`` keeps only that many of the
most-firing live features. Per agent, after its ``sae``: the sweep goes to
``SAE_DIR/ablation_sweep.json``, where ``rlsae viewer export`` finds it for the feature pages;
the stage's result holds the path and the features with the largest |Δreturn|.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from rlsae.artifacts import Artifact
from rlsae.study.atari_config import StudyConfig, acts_dir, sae_dir
from rlsae.study.engine import Context, Stage

TOP = 5
"""Features listed in the stage's result (largest |Δreturn| first)."""


class _Agent(Protocol):
    name: str

    def path(self, run_dir: Path) -> Path: ...


@dataclass
class AgentSweep(Artifact):
    """One agent's ablation sweep: where it is and what stood out."""

    FORMAT: ClassVar[str] = "rlsae.atari_sweep"
    VERSION: ClassVar[int] = 1

    path: str
    """The :class:`~rlsae.agents.results.AblationSweep`, relative to the run directory."""
    features: int
    """Features ablated."""
    episodes: int
    """Episodes per variant."""
    return_spliced: float
    """Mean return of the spliced agent (no intervention)."""
    features_per_minute: float
    """Features ablated per minute of wall time."""
    top_features: list[int] = field(default_factory=list)
    """The features with the largest |Δreturn|, largest first."""
    top_deltas: list[float] = field(default_factory=list)
    """Their Δreturn (ablated - spliced mean return)."""


def no_sweep(cfg: StudyConfig) -> bool:
    """The stage is off unless ``evaluation.sweep_episodes`` is above 0."""
    return cfg.evaluation.sweep_episodes == 0


def sweep(ctx: Context[StudyConfig], spec: _Agent) -> AgentSweep:
    """Ablate the agent's live features (over its recording) in turn."""
    from rlsae.agents.sweep import ABLATION_FILE, ablation_sweep

    cfg, run_dir = ctx.config, ctx.run_dir
    ev, sdir = cfg.evaluation, sae_dir(run_dir, cfg, spec.name)
    res = ablation_sweep(
        spec.path(run_dir), sdir, acts_dir(run_dir, cfg, spec.name), episodes=ev.sweep_episodes,
        seed=ev.seed, layer=cfg.recording.layer, epsilon=ev.epsilon,
        max_episode_steps=ev.max_episode_steps, max_features=ev.sweep_features,
        torch_threads=None,
    )  # fmt: skip
    path = res.write(sdir / ABLATION_FILE)
    return AgentSweep(
        path=str(Path(path).relative_to(run_dir)), features=len(res.rows), episodes=res.episodes,
        return_spliced=res.return_spliced, features_per_minute=res.features_per_minute,
        top_features=[r.feature for r in res.rows[:TOP]],
        top_deltas=[r.delta_return for r in res.rows[:TOP]],
    )  # fmt: skip


SWEEP = Stage("sweep", sweep, AgentSweep, after=("sae",), per="agent", skip_if=no_sweep)
"""The stage as the study declares it."""
