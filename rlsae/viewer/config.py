"""What the viewer export computes (:class:`ExportConfig`) and the checks of its arguments.

Imports nothing heavy, so the command line refuses bad arguments before torch loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rlsae.configs import check_range
from rlsae.errors import RlsaeError

RUN_PARTS = ("saes", "acts", "agents", "analysis", "models")
"""Folders of a run that an export must never overwrite."""


@dataclass
class ExportConfig:
    """What the viewer export computes; saved in the site as part of ``data/index.js``."""

    top: int = 25
    """Top-activating states/contexts per feature, each from a different episode/document."""
    batch_size: int = 1024
    """Rows encoded at a time in the passes over each activation store."""
    hist_bins: int = 30
    """Bins of each feature's activation histogram."""
    neighbours: int = 8
    """Most similar features by decoder cosine listed per feature."""
    context_before: int = 12
    """Tokens shown before the activating token (language models)."""
    context_after: int = 4
    """Tokens shown after it."""
    lm_intervals: tuple[tuple[float, float], ...] = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75))
    """Lower activation intervals (fractions of the feature's max) to sample contexts from."""
    samples_per_interval: int = 5
    """Contexts sampled from each interval."""
    logit_tokens: int = 10
    """Promoted and suppressed tokens listed per feature."""
    clip_before: int = 6
    """Frames before the state in each agent clip."""
    clip_after: int = 2
    """Frames after it."""
    frames: bool = True
    """Replay episodes for colour frames and clips (agents)."""
    effects: bool = True
    """Compute the 3×3 action-effect grid of each top state (agents; needs the agent)."""
    saliency: int = 5
    """Top states per feature that get a saliency overlay (gradient × input of the feature's
    activation with respect to the pixels; agents, needs the agent and frames); 0: none."""
    seed: int = 0
    """Seed of the interval sampling."""

    def validate(self, where: str = "viewer export") -> None:
        """Refuse a value out of range in one line."""
        if isinstance(self.top, bool) or not isinstance(self.top, int) or self.top < 1:
            raise RlsaeError(f"--top must be at least 1, got {self.top}")
        for name in ("batch_size", "hist_bins"):
            check_range(where, name, getattr(self, name), 1)
        for name in (
            "neighbours", "context_before", "context_after", "samples_per_interval",
            "logit_tokens", "clip_before", "clip_after", "seed", "saliency",
        ):  # fmt: skip
            check_range(where, name, getattr(self, name), 0)
        for lo, hi in self.lm_intervals:
            check_range(where, "lm_intervals", lo, 0.0, 1.0)
            check_range(where, "lm_intervals", hi, lo, 1.0, lo_open=True)


def check_export(run_dir: Path, out: Path, config: ExportConfig) -> None:
    """Refuse, in one line, a missing run directory, a bad config, or an output folder that is
    (or holds) the run's own files or is some other non-empty folder than an earlier export."""
    if not run_dir.is_dir():
        raise RlsaeError(f"run directory {run_dir} not found")
    config.validate()
    ro, rr = out.resolve(), run_dir.resolve()
    inside = any((rr / part) == ro or (rr / part) in ro.parents for part in RUN_PARTS)
    if ro == rr or ro in rr.parents or inside:
        raise RlsaeError(f"--out {out} would overwrite the run's own files; choose another folder")
    if out.exists() and not (out / "index.html").is_file() and any(out.iterdir()):
        raise RlsaeError(f"{out} exists and is not a viewer export; choose another --out")


def site_folder(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None) -> Path:
    """Where the site goes: ``out_dir``, by default ``run_dir/viewer``."""
    return Path(out_dir) if out_dir is not None else Path(run_dir) / "viewer"
