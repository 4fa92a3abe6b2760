"""Crosscoders between consecutive checkpoints of a DQN run, joined with their returns: the
record :func:`rlsae.agents.checkpoint_diff.checkpoint_crosscoders` writes
(``checkpoints.json``), and the dead-features report's section over a study's runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rlsae.analysis.html import esc, html_table, num
from rlsae.artifacts import Artifact


@dataclass
class CheckpointEntry:
    """One checkpoint: its training step, return and store of activations."""

    step: int
    mean_return: float | None
    """Mean return over the evaluation episodes (None: not evaluated)."""
    store: str
    """Its activations on the recording's states, relative to ``out``."""


@dataclass
class CheckpointPair:
    """The crosscoder between two consecutive checkpoints."""

    earlier: int
    later: int
    crosscoder: str
    """Relative to ``out``."""
    counts: dict[str, int]
    """Latents per class: tuned_only = appeared, base_only = vanished, shared = persisted."""
    fvu_earlier: float
    fvu_later: float
    return_change: float | None
    """Later mean return minus earlier (None: not evaluated)."""


@dataclass
class CheckpointCrosscoders(Artifact):
    """``checkpoints.json``: consecutive checkpoints' crosscoders joined with their returns."""

    FORMAT: ClassVar[str] = "rlsae.checkpoint_crosscoders"
    VERSION: ClassVar[int] = 1
    agent: str
    recording: str
    layer: str
    checkpoints: list[CheckpointEntry] = field(default_factory=list)
    pairs: list[CheckpointPair] = field(default_factory=list)


def checkpoint_diff_section(run_dir: str | Path) -> str:
    """The report's section (nothing without ``run_dir/diff/*/checkpoints.json``): per run and
    pair of consecutive checkpoints, the latents that appeared (tuned-only: the later one's
    own), vanished (base-only), persisted (shared), the artefacts, both FVUs and the change in
    mean return."""
    rows = []
    for path in sorted(Path(run_dir).glob("diff/*/checkpoints.json")):
        res = CheckpointCrosscoders.read(path)
        for p in res.pairs:
            c = p.counts
            rows.append(
                [
                    esc(path.parent.name),
                    f"{esc(p.earlier)} → {esc(p.later)}",
                    *(esc(c.get(k, 0)) for k in ("tuned_only", "base_only", "shared", "artefact")),
                    f"{num(p.fvu_earlier, '.3f')} / {num(p.fvu_later, '.3f')}",
                    num(p.return_change, "+.1f", "–"),
                ]
            )
    if not rows:
        return ""
    headers = [
        "run", "checkpoints", "appeared", "vanished", "persisted", "artefacts",
        "FVU earlier / later", "return change",
    ]  # fmt: skip
    return (
        "<h2>Features over training: crosscoders between checkpoints</h2><p>One crosscoder per "
        "pair of consecutive checkpoints of a run, both run on the same recorded states (the "
        "run's last agent's recording); latents classed by decoder-norm ratio and Latent "
        "Scaling: <em>appeared</em> = the later checkpoint's own (tuned-only), <em>vanished</em> "
        "= the earlier one's own (base-only), <em>persisted</em> = shared. Return change: the "
        "later checkpoint's mean evaluation return minus the earlier one's. Files: "
        "<code>diff/RUN/</code>.</p>" + html_table(headers, rows, left=("run",))
    )
