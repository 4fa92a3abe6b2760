"""Crosscoders between consecutive checkpoints of one DQN run, on the same recorded states,
joined with each checkpoint's return: which features appear, vanish or persist over training
(issue 14).

``checkpoint_crosscoders(agent_dir, recording, out, cfg)`` runs every checkpoint of the run
(``checkpoints/step_N``, oldest first, then the final agent when it is newer) on the recording's
states (``record_on_recording``: ``out/acts/step_N``), evaluates each (``evaluate_agent``), trains
a crosscoder between each consecutive pair (``out/crosscoders/step_A-step_B``: base = the earlier
checkpoint, tuned = the later one) and classifies its latents; the result is
``out/checkpoints.json`` (``rlsae.checkpoint_crosscoders``). Everything already there is kept,
so an interrupted call continues where it stopped.
"""

from __future__ import annotations

import os
from pathlib import Path

from rlsae.agents.agent_dir import list_checkpoints
from rlsae.agents.crossrecord import record_on_recording
from rlsae.agents.dqn import load_agent
from rlsae.agents.evaluate import evaluate_agent
from rlsae.analysis.checkpoint_diffs import CheckpointCrosscoders, CheckpointEntry, CheckpointPair
from rlsae.errors import RlsaeError
from rlsae.sae.crosscoder_config import CrosscoderConfig
from rlsae.sae.crosscoder_train import TRAINING, CrosscoderRecord, train_crosscoder
from rlsae.sae.latents import analyse_latents
from rlsae.sae.paired import PairedStore

__all__ = [
    "CheckpointCrosscoders",
    "CheckpointEntry",
    "CheckpointPair",
    "checkpoint_crosscoders",
]


def checkpoint_crosscoders(
    agent_dir: str | os.PathLike,
    recording: str | os.PathLike,
    out: str | os.PathLike,
    cfg: CrosscoderConfig | None = None,
    *,
    eval_episodes: int = 3,
    max_episode_steps: int | None = None,
    progress: bool = False,
) -> CheckpointCrosscoders:
    """See the module docstring. ``eval_episodes`` 0 skips the evaluations."""
    cfg = cfg or CrosscoderConfig()
    cfg.validate("checkpoint_crosscoders")
    if isinstance(eval_episodes, bool) or not isinstance(eval_episodes, int) or eval_episodes < 0:
        raise RlsaeError(f"eval_episodes must be 0 or more, got {eval_episodes!r}")
    out = Path(out)
    steps = [(c.step, c.path) for c in list_checkpoints(agent_dir)]
    final = load_agent(agent_dir)
    if not steps or final.info.steps_trained > steps[-1][0]:
        steps.append((final.info.steps_trained, Path(agent_dir)))
    if len(steps) < 2:
        raise RlsaeError(f"{agent_dir} has one checkpoint; train with --checkpoint-every")
    result = CheckpointCrosscoders(agent=str(agent_dir), recording=str(recording), layer="")
    for step, path in steps:
        store = out / "acts" / f"step_{step}"
        if not (store / "meta.json").is_file():
            record_on_recording(recording, path, store, progress=progress)
        mean = None
        if eval_episodes:
            ev = evaluate_agent(path, eval_episodes, max_episode_steps=max_episode_steps)
            mean = float(ev.mean_return)
        result.checkpoints.append(CheckpointEntry(step, mean, f"acts/step_{step}"))
    for a, b in zip(result.checkpoints, result.checkpoints[1:], strict=False):
        name = f"crosscoders/step_{a.step}-step_{b.step}"
        cc = train_crosscoder(out / a.store, out / b.store, out / name, cfg, resume=True,
                              progress=progress)  # fmt: skip
        pair = PairedStore(out / a.store, out / b.store)
        result.layer = pair.hook
        info = analyse_latents(cc, pair)
        final_eval = CrosscoderRecord.read(out / name / TRAINING).final
        change = (
            b.mean_return - a.mean_return
            if a.mean_return is not None and b.mean_return is not None
            else None
        )
        result.pairs.append(
            CheckpointPair(
                a.step, b.step, name, info.counts, final_eval.fvu_base, final_eval.fvu_tuned, change
            )  # fmt: skip
        )
    result.write(out / "checkpoints.json")
    return result
