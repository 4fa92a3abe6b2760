"""Layer divergence between a base and a tuned model: which layers did RLHF move most?

The paper (section 4.1) ranks layers by Δ(L) = Σ_t ‖W_t^tuned − W_t^base‖₂, the sum over every
weight and bias tensor ``t`` of layer ``L`` of the Euclidean (Frobenius) distance between the
two models' copies. The top-n layers are the ones worth training SAEs on.

Parameters are grouped by name: ``…layers.{i}.…`` / ``…h.{i}.…`` / ``…blocks.{i}.…`` belong to
layer ``i``; token and position embeddings and the unembedding are listed apart as
``embeddings``, the final norm as ``final_norm``; anything else under ``other``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from rlsae.analysis.figures import write_figure_html
from rlsae.artifacts import Artifact
from rlsae.errors import RlsaeError
from rlsae.llm.models import load_model

_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_EMBED_RE = re.compile(r"(embed_in|embed_out|wte|wpe|embed_tokens|lm_head|unembed|W_U|W_E|W_pos)")
_FINAL_NORM_RE = re.compile(r"(final_layer_norm|ln_f|(?:^|\.)norm\.|ln_final)")


@dataclass
class LayerDivergence:
    """Δ of one transformer layer."""

    layer: int
    """Layer index."""
    divergence: float
    """Σ distances over the layer's tensors."""
    tensors: int = 0
    """Number of tensors summed."""


@dataclass
class DivergenceResult(Artifact):
    """Δ per layer (sorted high to low) and for the non-layer groups (``divergence.json``)."""

    FORMAT: ClassVar[str] = "rlsae.divergence"
    VERSION: ClassVar[int] = 1

    layers: list[LayerDivergence]
    """Δ per layer, sorted by divergence, descending (ties by layer index)."""
    embeddings: float
    """Σ distances over embedding / unembedding tensors."""
    final_norm: float
    """Σ distances over the final layer norm's tensors."""
    other: float
    """Σ distances over tensors in none of the groups above (0 for GPT-NeoX)."""
    n_layers: int
    """Number of transformer layers."""
    total: float
    """Σ distances over every tensor."""
    tensors: dict[str, float] = field(default_factory=dict)
    """Distance of every single tensor, by parameter name."""
    top_n: int | None = None
    """How many layers were chosen (:meth:`choose`); None: no choice made."""
    top_layers: list[int] = field(default_factory=list)
    """The chosen layers, most divergent first (the study trains SAEs on these)."""

    def ranked(self, n: int) -> list[int]:
        """The indices of the ``n`` most divergent layers, most divergent first."""
        return [row.layer for row in self.layers[: max(0, n)]]

    def choose(self, n: int) -> DivergenceResult:
        """This result with the ``n`` most divergent layers recorded as chosen."""
        return replace(self, top_n=n, top_layers=self.ranked(n))

    def head(self, n: int | None) -> DivergenceResult:
        """This result with only the ``n`` most divergent layers listed (all for None)."""
        return self if n is None else replace(self, layers=self.layers[: max(0, n)])


def _named_parameters(model: Any) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters()}


def _group(name: str) -> tuple[str, int | None]:
    m = _LAYER_RE.search(name)
    if m:
        return "layer", int(m.group(1))
    if _EMBED_RE.search(name):
        return "embeddings", None
    if _FINAL_NORM_RE.search(name):
        return "final_norm", None
    return "other", None


def _load(model: Any) -> Any:
    if isinstance(model, str | os.PathLike | Path):
        return load_model(model)[0]
    return model


def _arch(model: Any) -> str:
    cfg = getattr(model, "config", None)
    arch = getattr(cfg, "architectures", None)
    if arch:
        return str(arch[0])
    return type(model).__name__


def layer_divergence(base: Any, tuned: Any) -> DivergenceResult:
    """Δ per layer between ``base`` and ``tuned`` (models or hub names / model directories).

    Raises :class:`RlsaeError` when the two are not the same architecture (different parameter
    names or shapes), naming the first difference.
    """
    base_m, tuned_m = _load(base), _load(tuned)
    a, b = _named_parameters(base_m), _named_parameters(tuned_m)
    arch_a, arch_b = _arch(base_m), _arch(tuned_m)
    if arch_a != arch_b:
        raise RlsaeError(
            f"base and tuned models have different architectures ({arch_a} vs {arch_b}); "
            "compare a tuned model with the base it was tuned from"
        )
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        which = f"{only_a[0]} only in base" if only_a else f"{only_b[0]} only in tuned"
        raise RlsaeError(
            f"base and tuned models have different architectures ({len(only_a) + len(only_b)} "
            f"parameters differ, e.g. {which}); compare a tuned model with its own base"
        )
    for name in a:
        if a[name].shape != b[name].shape:
            raise RlsaeError(
                f"base and tuned models have different architectures: {name} is "
                f"{tuple(a[name].shape)} in base but {tuple(b[name].shape)} in tuned"
            )

    per_layer: dict[int, float] = {}
    per_layer_count: dict[int, int] = {}
    groups = {"embeddings": 0.0, "final_norm": 0.0, "other": 0.0}
    tensors: dict[str, float] = {}
    with torch.no_grad():
        for name in a:
            d = float(torch.linalg.vector_norm(b[name].double() - a[name].double()))
            tensors[name] = d
            group, layer = _group(name)
            if layer is not None:
                per_layer[layer] = per_layer.get(layer, 0.0) + d
                per_layer_count[layer] = per_layer_count.get(layer, 0) + 1
            else:
                groups[group] += d
    layers = [LayerDivergence(i, per_layer[i], per_layer_count[i]) for i in sorted(per_layer)]
    layers.sort(key=lambda r: (-r.divergence, r.layer))
    n_layers = getattr(getattr(base_m, "config", None), "num_hidden_layers", None)
    return DivergenceResult(
        layers=layers,
        embeddings=groups["embeddings"],
        final_norm=groups["final_norm"],
        other=groups["other"],
        n_layers=int(n_layers) if n_layers is not None else len(layers),
        total=sum(tensors.values()),
        tensors=tensors,
    )


def divergence_figure(result: DivergenceResult, top_n: int | None = None, title: str = "") -> Any:
    """Bar chart of Δ per layer in layer order (the paper's Figure 3); top-n layers highlighted."""
    import plotly.graph_objects as go

    top = set(result.ranked(top_n)) if top_n else set()
    rows = sorted(result.layers, key=lambda r: r.layer)
    fig = go.Figure(
        go.Bar(
            x=[str(r.layer) for r in rows],
            y=[r.divergence for r in rows],
            marker={"color": ["#d62728" if r.layer in top else "#1f77b4" for r in rows]},
            hovertemplate="layer %{x}<br>Δ=%{y:.4g}<extra></extra>",
            name="layers",
        )
    )
    fig.update_layout(
        title=title or "Parameter divergence per layer (Σ‖W_tuned − W_base‖₂)",
        xaxis_title="layer",
        yaxis_title="divergence Δ",
        template="plotly_white",
        annotations=[
            {
                "text": f"embeddings Δ={result.embeddings:.4g} · final norm Δ={result.final_norm:.4g}",
                "xref": "paper",
                "yref": "paper",
                "x": 0,
                "y": 1.08,
                "showarrow": False,
            }
        ],
    )
    return fig


def write_divergence_html(
    result: DivergenceResult, path: str | os.PathLike, top_n: int | None = None
) -> Path:
    """Write the bar chart as a standalone HTML page (plotly.js embedded, opens offline)."""
    return write_figure_html(
        divergence_figure(result, top_n), Path(path), title="Layer divergence (base vs tuned)"
    )
