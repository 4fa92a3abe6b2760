"""The dead-features study's ``diff`` stage (issue 14): which features appear, vanish or persist
over training, per training run, joined with the checkpoints' returns.

Per training run (after the agents' ``eval`` and ``record``), every checkpoint of the run and
its end are run on the same recorded states — the run's last agent's recording
(``acts/AGENT/LAYER``) — and a crosscoder is trained between each pair of consecutive
checkpoints (:func:`rlsae.agents.checkpoint_diff.checkpoint_crosscoders`; base = the earlier
checkpoint, tuned = the later one), its latents classed by decoder-norm ratio and Latent
Scaling. The checkpoints' mean returns are the study's own evaluations (``eval``), so nothing is
played twice. Files under ``diff/RUN/`` (``checkpoints.json``, ``acts/step_N``,
``crosscoders/step_A-step_B``); the report's section "Features over training" lists every pair.
Off unless the study config has ``diff`` (a :class:`~rlsae.sae.crosscoder_config.CrosscoderConfig`).
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from rlsae.agents.results import Evaluation
from rlsae.analysis.checkpoint_diffs import CheckpointCrosscoders
from rlsae.study.atari_config import StudyConfig, acts_dir
from rlsae.study.engine import Context, Stage


class _Agent(Protocol):
    name: str
    run: str
    step: int | None


def checkpoint_diff(ctx: Context[StudyConfig], run: Any) -> CheckpointCrosscoders:
    """The stage for one training run (see the module docstring)."""
    from rlsae.agents.checkpoint_diff import checkpoint_crosscoders

    cfg = ctx.config
    assert cfg.diff is not None  # the stage is off without it
    mine = [cast(_Agent, a) for a in ctx.units("agent") if cast(_Agent, a).run == run.name]
    agents = sorted(mine, key=lambda a: a.step or 0)
    out = ctx.run_dir / "diff" / run.name
    res = checkpoint_crosscoders(
        ctx.run_dir / "agents" / run.name,
        acts_dir(ctx.run_dir, cfg, agents[-1].name),
        out,
        cfg.diff,
        eval_episodes=0,
        progress=ctx.progress,
    )
    returns = {a.step: ctx.result(Evaluation, "eval", a.name).mean_return for a in agents}
    for c in res.checkpoints:
        c.mean_return = returns.get(c.step)
    by_step = {c.step: c.mean_return for c in res.checkpoints}
    for p in res.pairs:
        a, b = by_step.get(p.earlier), by_step.get(p.later)
        p.return_change = None if a is None or b is None else float(b - a)
    res.write(out / "checkpoints.json")
    return res


def no_diff(cfg: StudyConfig) -> bool:
    """The stage is off unless the config has ``diff``."""
    return cfg.diff is None


DIFF = Stage(
    "diff", checkpoint_diff, CheckpointCrosscoders, after=("eval", "record"), per="run",
    skip_if=no_diff,
)  # fmt: skip
"""The stage as the study declares it."""
