"""The IRM study's steering table (``analysis/llm_steer.json``, the ``steer`` stage's result):
each model's top shared features pushed both ways, with the reward's change. Written by
:mod:`rlsae.study.llm_steer`, shown in ``analysis/llm_steer.md`` and the model's report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from rlsae.analysis.html import esc, html_table, num
from rlsae.artifacts import Artifact

STEER_FILE = "llm_steer.json"
"""The table's file name in the model's ``analysis/`` directory."""


@dataclass
class SteerRow:
    """One feature of one model's SAE steered one way."""

    model: str
    """``base`` or ``tuned``: the model steered (its own SAE)."""
    layer: int
    """Block index."""
    feature: int
    """Feature of the small SAE."""
    alpha: float
    """Multiple of the decoder row added."""
    mean_unsteered: float
    """Mean reward of the unsteered completions."""
    mean_steered: float
    """Mean reward of the steered completions."""
    delta: float
    """mean_steered - mean_unsteered."""
    ci95: list[float]
    """95% paired bootstrap interval of delta."""
    changed: int
    """Completions that differ from the unsteered ones."""
    intervention: str = "add"
    """``add``: alpha x the direction added at the hook; ``ablate``: the feature's part of the
    SAE's reconstruction removed (alpha 0)."""
    latents: str = "shared"
    """Whose direction: ``shared`` (a top shared feature of the model's own small SAE) or
    ``tuned_only`` / ``base_only`` (a crosscoder latent's unit decoder direction in that
    model's side, the latent found by the study's ``diff`` stage)."""


@dataclass
class SteerTable(Artifact):
    """The ``steer`` stage's result (``analysis/llm_steer.json``)."""

    FORMAT: ClassVar[str] = "rlsae.llm_study_steer"
    VERSION: ClassVar[int] = 1

    features: int
    """Top shared features steered per model and layer."""
    scale: float
    """alpha = +/- scale x the mean norm of the hook's recorded activations."""
    prefixes: int
    """Prefixes per row."""
    rows: list[SteerRow] = field(default_factory=list)
    """Per model, layer, feature and sign of alpha."""

    def markdown(self, label: str = "") -> str:
        """The table of ``analysis/llm_steer.md``."""
        lines = [
            f"### Steering the top shared features{f' ({label})' if label else ''}",
            "",
            f"{self.prefixes} test prefixes per row; reward change steered - unsteered with its "
            "95% paired bootstrap interval.",
            "",
            "| model | layer | latents | feature | change | reward unsteered | steered | "
            "change [95% CI] |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.model} | {r.layer} | {r.latents} | {r.feature} | {_what(r)} | "
                f"{r.mean_unsteered:.3f} | {r.mean_steered:.3f} | {r.delta:+.3f} "
                f"[{r.ci95[0]:+.3f}, {r.ci95[1]:+.3f}] |"
            )
        return "\n".join(lines)

    def html(self) -> str:
        """The report's section."""
        headers = [
            "model", "layer", "latents", "feature", "intervention", "unsteered", "steered",
            "change", "95% CI",
        ]  # fmt: skip
        rows = [
            [
                esc(r.model),
                esc(r.layer),
                esc(r.latents),
                esc(r.feature),
                esc(_what(r)),
                num(r.mean_unsteered, ".3f"),
                num(r.mean_steered, ".3f"),
                num(r.delta, "+.3f"),
                f"[{num(r.ci95[0], '+.3f')}, {num(r.ci95[1], '+.3f')}]",
            ]  # fmt: skip
            for r in self.rows
        ]
        return (
            "<h2>Steering the top shared features</h2>"
            f"<p>Each model's top {esc(self.features)} shared features per layer, pushed with "
            f"±{num(self.scale, 'g')} × the hook's mean activation norm in that model, and "
            "ablated (its part of the SAE's reconstruction removed); with the study's crosscoder "
            "(the diff stage), its top tuned-only and base-only latents' unit decoder directions "
            "pushed the same way in each model. Mean "
            f"reward over {esc(self.prefixes)} test prefixes, steered against unsteered (same "
            "prefixes and seed), with the 95% paired bootstrap interval of the change.</p>"
            + html_table(headers, rows, left=("model",))
        )


def _what(r: SteerRow) -> str:
    """``ablate``, or the signed alpha added."""
    return "ablate" if r.intervention == "ablate" else f"alpha {r.alpha:+.3g}"
