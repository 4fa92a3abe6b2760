"""RLHF tuning runs: PPO (ours) or RLOO (TRL), with checkpoints, resume, logs and a curve.

A run directory holds:

```
OUT/
  rlhf.json      the RLHFConfig of the run (what ran, versions)
  log.json       one entry per step: mean reward, KL, KL coefficient, losses, seconds
  curve.html     plotly curve of the log (plotly.js embedded, opens offline)
  checkpoint/    latest checkpoint (PPO: policy/ in HF format, trainer_state.pt; RLOO: trl/)
  model/         the tuned model in Hugging Face format, its tokenizer and rlhf.json
  result.json    RLHFResult: first and last mean reward, steps, seconds, model_dir
```

:func:`run_rlhf` (an :class:`RLHFConfig`) and :func:`rlhf_tune` (keyword options) are the entry
points for the CLI and the study. Every check (options, output directory, resume config, utility
table, model directory) runs before anything is written, so a refused command leaves ``OUT`` as
it was and the corrected command needs no ``--resume``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from rlsae.configs import from_mapping, to_mapping
from rlsae.llm.configs import DEFAULT_MODEL, PPOConfig, RLHFConfig
from rlsae.llm.ppo_run import run_ppo
from rlsae.llm.rloo import run_rloo
from rlsae.llm.tuning import RLHFResult, StepCallback, make_reward_fn, preflight

__all__ = ["PPOConfig", "RLHFConfig", "RLHFResult", "StepCallback", "rlhf_tune", "run_rlhf"]


def run_rlhf(
    cfg: RLHFConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    callback: StepCallback | None = None,
) -> RLHFResult:
    """Tune ``cfg.model`` with RLHF into ``out_dir``; returns the result (also result.json).

    With ``resume`` an interrupted run continues from its last checkpoint (and a finished run
    asked for more steps continues too); a config that differs from the run's in anything but
    ``steps`` and ``checkpoint_every`` is refused, naming the keys. Without ``resume`` an
    existing non-empty ``out_dir`` is an error. ``callback(step, stats)`` runs after every step.
    """
    out = Path(out_dir)
    preflight(cfg, out, resume)
    reward_fn = make_reward_fn(cfg)  # the classifier loads here, still before anything is written
    run = run_ppo if cfg.algo == "ppo" else run_rloo
    return run(cfg, out, reward_fn, resume=resume, progress=progress, callback=callback)


def rlhf_tune(
    model: str | os.PathLike = DEFAULT_MODEL,
    out_dir: str | os.PathLike = "rlhf",
    *,
    resume: bool = False,
    progress: bool = True,
    callback: StepCallback | None = None,
    **options: Any,
) -> RLHFResult:
    """:func:`run_rlhf` with the config given as :class:`RLHFConfig` fields.

    ``options`` are fields (``reward``, ``algo``, ``steps``, ``seed``, ...) and ``ppo``, a
    mapping of :class:`PPOConfig` fields or a ``PPOConfig``, e.g.
    ``rlhf_tune("tiny", "out", steps=40, ppo={"batch_size": 32, "learning_rate": 3e-5})``.
    An unknown or mistyped option is one line naming it.
    """
    data = {
        k: to_mapping(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
        for k, v in options.items()
    }
    cfg = from_mapping(RLHFConfig, {"model": os.fspath(model), **data}, "RLHF options")
    return run_rlhf(cfg, out_dir, resume=resume, progress=progress, callback=callback)
