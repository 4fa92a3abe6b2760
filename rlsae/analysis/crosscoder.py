"""Figures of a crosscoder's latents (``rlsae.sae.latents``): the norm-ratio histogram with the
classes coloured, as in Minder et al. 2025's figures; and the explained latents' record
(``CrosscoderExplanations``, written by the LM study's ``diff`` stage, read by the pages)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rlsae.artifacts import Artifact
from rlsae.sae.latents import CLASSES, LatentAnalysis

COLOURS = {
    "shared": "#7f7f7f",
    "base_only": "#1f77b4",
    "tuned_only": "#d62728",
    "artefact": "#ff7f0e",
    "dead": "#c7c7c7",
}
"""Colour of each class."""


@dataclass
class LatentExplanation:
    """One explained crosscoder latent."""

    latent: int
    kind: str
    """Its class (``rlsae.sae.latents.CLASSES``)."""
    explanation: str
    utility: float
    """|utility| of the explanation under the study's utility table."""


@dataclass
class CrosscoderExplanations(Artifact):
    """``crosscoders/HOOK/explanations.json``: explained latents of one layer's crosscoder."""

    FORMAT: ClassVar[str] = "rlsae.crosscoder_explanations"
    VERSION: ClassVar[int] = 1
    method: str
    """The explainer (``offline-lift`` or ``llm:MODEL``)."""
    latents: list[LatentExplanation] = field(default_factory=list)


def norm_ratio_figure(info: LatentAnalysis, *, bins: int = 50, title: str = "") -> Any:
    """Stacked histogram of the latents' norm ratios (0 base only, 0.5 equal, 1 tuned only),
    one colour per class; dead latents are left out (their count is in the title)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for kind in CLASSES:
        if kind == "dead":
            continue
        xs = [r.norm_ratio for r in info.latents if r.kind == kind and r.norm_ratio is not None]
        fig.add_trace(
            go.Histogram(
                x=xs,
                name=f"{kind} ({info.counts.get(kind, 0)})",
                marker_color=COLOURS[kind],
                xbins={"start": 0.0, "end": 1.0 + 1e-9, "size": 1.0 / bins},
            )
        )
    cfg = info.config
    for x in (cfg.base_only_ratio, cfg.tuned_only_ratio):
        fig.add_vline(x=x, line_dash="dot", line_color="#444")
    fig.update_layout(
        barmode="stack",
        title=title or f"{info.n_latents} latents ({info.counts.get('dead', 0)} dead)",
        xaxis_title="decoder norm ratio (0 base only, 1 tuned only)",
        yaxis_title="latents",
        xaxis_range=[0, 1],
        template="plotly_white",
        height=360,
        margin={"l": 50, "r": 20, "t": 50, "b": 50},
    )
    return fig


def crosscoder_section(home: str | os.PathLike, top: int = 5) -> str:
    """The LM report's crosscoder section (nothing without ``home/crosscoders/*/latents.json``):
    per layer, the latents per class; per explained class, how many were explained and their
    mean |utility| (the paper's Table 3 question asked of the crosscoder: do the latents RLHF
    added carry the reward's utility?); and the ``top`` tuned-only explanations."""
    from rlsae.analysis.html import esc, html_table, num

    home = Path(home)
    rows, notes = [], []
    for info_path in sorted(home.glob("crosscoders/*/latents.json")):
        hook = info_path.parent.name
        info = LatentAnalysis.read(info_path)
        expl_path = info_path.parent / "explanations.json"
        expl = CrosscoderExplanations.read(expl_path) if expl_path.is_file() else None
        util: dict[str, list[float]] = {}
        for e in expl.latents if expl else []:
            util.setdefault(e.kind, []).append(e.utility)
        cells = [esc(hook), *(esc(info.counts.get(c, 0)) for c in CLASSES)]
        for kind in ("tuned_only", "base_only", "shared"):
            vals = util.get(kind, [])
            mean = sum(vals) / len(vals) if vals else None
            cells.append(f"{len(vals)} / {num(sum(vals), '.2f')} / {num(mean, '.2f', '–')}")
        rows.append(cells)
        tuned = [e for e in (expl.latents if expl else []) if e.kind == "tuned_only"][:top]
        if tuned:
            items = "".join(
                f"<li>latent {esc(e.latent)}: {esc(e.explanation)} (|utility| "
                f"{num(e.utility, '.2f')})</li>"
                for e in tuned
            )
            notes.append(f"<p>{esc(hook)}, tuned-only latents:</p><ul>{items}</ul>")
    if not rows:
        return ""
    headers = [
        "hook", *CLASSES,
        "tuned-only: explained / summed / mean |utility|", "base-only …", "shared …",
    ]  # fmt: skip
    return (
        "<h2>What RLHF added: the crosscoder</h2><p>One BatchTopK (or L1) crosscoder per chosen "
        "layer on both models' activations at the same tokens; latents classed by decoder-norm "
        "ratio and Latent Scaling (<code>rlsae diff latents</code>). The explained latents of "
        "each class with the summed and mean |utility| of their explanations under the study's "
        "utility "
        "table, beside Tables 3 and 4 above. Files: <code>crosscoders/HOOK/</code>.</p>"
        + html_table(headers, rows, left=("hook",))
        + "".join(notes)
    )
