"""The dead-features study's ``prefixes`` stage: how reconstruction and return depend on the
number of features, from a Matryoshka SAE's nested prefixes.

On when ``sae.arch`` is ``matryoshka``. For every agent and every prefix of its SAE (the first
1, 2, ... groups of ``matryoshka_groups``, the last being the whole SAE), the prefix's FVU and
L0 over the agent's whole recording, and (with ``evaluation.splice_episodes`` above 0) the
returns with only that prefix's reconstruction spliced into the network
(:func:`rlsae.agents.splice.splice_metrics` with ``prefix``; ``dqn splice --prefix`` on the
command line). The rows go to ``analysis/prefixes.csv``; the report plots FVU and spliced return
against the prefix, one line per agent. This speaks to the poster's open question: are a few
hundred features enough to play the game well?

One stage for the whole study (after every agent's ``sae`` and ``splice``): a switched-off
per-agent stage would count as skipped in every study that is not Matryoshka.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, cast

from rlsae.artifacts import Artifact
from rlsae.fsutil import atomic_write_bytes
from rlsae.study.atari_config import StudyConfig
from rlsae.study.engine import Context
from rlsae.study.results import Recording, TrainedSAE

PREFIXES_CSV = "analysis/prefixes.csv"
"""The stage's table, relative to the run directory."""


class _Agent(Protocol):
    name: str

    def path(self, run_dir: Path) -> Path: ...


@dataclass
class PrefixPoint:
    """One agent's figures with the first ``prefix`` latents of its SAE."""

    agent: str
    prefix: int
    """Latents in the prefix."""
    fvu: float | None
    """FVU of the prefix's reconstruction over the agent's whole recording."""
    l0: float
    """Mean active latents of the prefix per recorded row."""
    return_sae: float | None = None
    """Mean return with the prefix's reconstruction spliced in (None: no splice)."""
    return_original: float | None = None
    """Mean return of the original agent on the same episodes."""
    return_recovered: float | None = None
    """(R_prefix - R_ablated) / (R_orig - R_ablated) (None: no splice, or nothing to recover)."""
    action_agreement: float | None = None
    """Fraction of the original agent's states where the spliced greedy action agrees."""
    q_fvu: float | None = None
    """Fraction of Q-value variance unexplained with the prefix spliced in."""


@dataclass
class PrefixCurves(Artifact):
    """Every agent's per-prefix FVU and spliced return (``analysis/prefixes.csv``)."""

    FORMAT: ClassVar[str] = "rlsae.atari_prefixes"
    VERSION: ClassVar[int] = 1

    path: str
    """The table, relative to the run directory."""
    points: list[PrefixPoint] = field(default_factory=list)
    """One per agent and prefix, narrowest prefix first."""


def no_prefixes(cfg: StudyConfig) -> bool:
    """The stage is off unless the study trains Matryoshka SAEs."""
    return cfg.sae.arch != "matryoshka"


def prefixes(ctx: Context[StudyConfig]) -> PrefixCurves:
    """Per agent and prefix: FVU and L0 over the recording, and the spliced return."""
    import pandas as pd

    agents = [cast(_Agent, a) for a in ctx.units("agent")]
    points = [p for a in agents for p in _agent_points(ctx, a)]
    df = pd.DataFrame([vars(p) for p in points])
    atomic_write_bytes(ctx.run_dir / PREFIXES_CSV, df.to_csv(index=False).encode())
    return PrefixCurves(path=PREFIXES_CSV, points=points)


def _agent_points(ctx: Context[StudyConfig], agent: _Agent) -> list[PrefixPoint]:
    from rlsae.agents.splice import splice_metrics
    from rlsae.sae import ActivationStore, TrainingRecord, evaluate_sae, load_sae

    cfg, run_dir = ctx.config, ctx.run_dir
    sdir = run_dir / ctx.result(TrainedSAE, "sae", agent.name).path
    store = ActivationStore(run_dir / ctx.result(Recording, "record", agent.name).path)
    final = TrainingRecord.read(sdir / "training.json").final
    if final is None or final.prefixes is None or final.rows != store.rows:
        final = evaluate_sae(load_sae(sdir), store, progress=False).metrics
    assert final.prefixes is not None  # a matryoshka SAE has them
    e = cfg.evaluation
    out = []
    for pm in final.prefixes:
        point = PrefixPoint(agent.name, pm.width, pm.fvu, pm.l0)
        if e.splice_episodes:
            res = splice_metrics(
                agent.path(run_dir),
                sdir,
                episodes=e.splice_episodes,
                seed=e.seed,
                layer=cfg.recording.layer,
                epsilon=e.epsilon,
                max_episode_steps=e.max_episode_steps,
                prefix=pm.width,
            )
            point.return_sae, point.return_original = res.return_sae, res.return_original
            point.return_recovered, point.q_fvu = res.return_recovered, res.q_fvu
            point.action_agreement = res.action_agreement
        out.append(point)
    return out
