"""Plotly figures and offline HTML: plotly.js is embedded from the installed package, no CDN."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlsae.analysis.fit import FitResult, predict
from rlsae.fsutil import atomic_write_bytes


def plotly_js_tag() -> str:
    """A ``<script>`` element holding the installed plotly.js (so pages open offline)."""
    from plotly.offline import get_plotlyjs

    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


def figure_div(fig: Any, div_id: str | None = None) -> str:
    """The figure as an HTML ``<div>`` that expects plotly.js already on the page."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id)


def write_figure_html(fig: Any, path: str | Path, title: str = "") -> Path:
    """Write one figure as a standalone HTML page with plotly.js embedded, atomically."""
    path = Path(path)
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>{plotly_js_tag()}</head>"
        f"<body>{figure_div(fig)}</body></html>\n"
    )
    atomic_write_bytes(path, page.encode())
    return path


def fit_figure(
    x: Sequence[float],
    y: Sequence[float],
    fit: FitResult,
    *,
    x_label: str = "x",
    y_label: str = "y",
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Any:
    """Scatter of (x, y) with the linear and quadratic least-squares curves of ``fit``."""
    import plotly.graph_objects as go

    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers",
            name="agents",
            text=list(labels) if labels is not None else None,
            hovertemplate=(
                ("%{text}<br>" if labels is not None else "")
                + f"{x_label}=%{{x}}<br>{y_label}=%{{y:.4g}}<extra></extra>"
            ),
            marker={"size": 9},
        )
    )
    ok = np.isfinite(xs)
    lo, hi = float(xs[ok].min()), float(xs[ok].max())
    pad = 0.05 * (hi - lo if hi > lo else 1.0)
    grid = np.linspace(lo - pad, hi + pad, 200)
    for name, part, line in (
        ("linear", fit.linear, {"dash": "dash"}),
        ("quadratic", fit.quadratic, None),
    ):
        fig.add_trace(
            go.Scatter(
                x=grid,
                y=predict(part.coef, grid),
                mode="lines",
                name=f"{name} (R²={_g(part.r2, '.3f')}, p={_g(part.f_pvalue, '.3g')})",
                line=line,
            )
        )
    quad = fit.quadratic
    vx, ci = quad.vertex_x, quad.vertex_ci
    if vx is not None and lo - pad <= vx <= hi + pad:
        fig.add_vline(x=vx, line={"dash": "dot", "color": "grey"}, annotation_text="vertex")
    if ci is not None and ci.low is not None and ci.high is not None:
        fig.add_vrect(
            x0=max(ci.low, lo - pad),
            x1=min(ci.high, hi + pad),
            fillcolor="grey",
            opacity=0.12,
            line_width=0,
        )
    fig.update_layout(
        title=title or f"{y_label} vs {x_label} (n={fit.n})",
        xaxis_title=x_label,
        yaxis_title=y_label,
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def _g(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def curve_figure(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    x_label: str = "step",
    y_label: str = "",
    title: str = "",
    height: int = 300,
) -> Any:
    """Line chart of named (x, y) series, e.g. an agent's training curve."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, (xs, ys) in series.items():
        fig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode="lines+markers", name=name))
    fig.update_layout(
        title=title,
        xaxis_title=x_label,
        yaxis_title=y_label,
        template="plotly_white",
        height=height,
        margin={"l": 50, "r": 20, "t": 40, "b": 40},
    )
    return fig


def prefix_figures(rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """A Matryoshka study's curves against the prefix (latents kept), one line per agent: the
    prefix's FVU and, where spliced, its return (``rows``: the dead-features study's
    ``analysis/prefixes.csv``: agent, prefix, fvu, return_sae, ...)."""
    figs = []
    for col, label in (("fvu", "FVU"), ("return_sae", "spliced return")):
        series: dict[str, tuple[list[float], list[float]]] = {}
        for r in rows:
            v = r.get(col)
            if v is not None and np.isfinite(float(v)):
                xs, ys = series.setdefault(str(r["agent"]), ([], []))
                xs.append(float(r["prefix"]))
                ys.append(float(v))
        if series:
            fig = curve_figure(
                series, x_label="prefix (latents)", y_label=label, title=f"{label} vs prefix"
            )
            fig.update_xaxes(type="log")
            figs.append(fig)
    return figs
