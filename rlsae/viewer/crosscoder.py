"""Crosscoder pages: a small static site over one crosscoder and its two aligned stores.

``export_crosscoder_pages(crosscoder_dir, base, tuned, out)`` writes::

    out/index.html        the norm-ratio histogram with the classes coloured, the counts, and a
                          table of the model-only and artefact latents (and the most-firing
                          shared ones), each linking to its page
    out/latents/J.html    one latent: its class, decoder norms, cosine, the four Latent Scaling
                          betas and both nu; the histogram of its contribution to each model
                          (f_j |d_j base| and f_j |d_j tuned| over the rows it fires on); its
                          top rows side by side: for a language-model store the document's
                          tokens shaded by the latent's contribution to the base and to the
                          tuned model, for an agent store (given ``frames``) each row's game
                          frame beside its contribution to each model, for any other store the
                          rows' context columns; and its explanation and |utility| where the
                          crosscoder directory has the LM study's ``explanations.json``
    out/frames/rR.png     the frame of store row R (only with ``frames``), shared by every latent
    out/pages.json        :class:`CrosscoderPages`: what the site shows (the feature viewer's
                          index links to such sites exported next to it)

plotly.js is embedded once in each page, so the site opens from disk. Provider-neutral: it
reads only the stores' context tables; frames come from a :data:`RowFrames` callable the caller
passes (the agents' ``store_row_frames``, which replays the recorded episodes), as the main
viewer gets its pages from sources.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeAlias

import numpy as np

from rlsae.analysis.crosscoder import COLOURS, CrosscoderExplanations, norm_ratio_figure
from rlsae.analysis.figures import figure_div, plotly_js_tag
from rlsae.artifacts import Artifact
from rlsae.fsutil import atomic_dir
from rlsae.sae.latents import LatentAnalysis, LatentRow

SHOWN = ("tuned_only", "base_only", "artefact")
"""Classes that always get a page; ``shared`` adds its most-firing latents."""
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px}"
    "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;"
    "text-align:left}.tok{padding:0 1px;border-radius:2px}.pair{display:flex;gap:2em}"
    ".pair>div{flex:1}img.frame{image-rendering:pixelated;width:160px}"
)
PAGES_FILE = "pages.json"


@dataclass
class CrosscoderPages(Artifact):
    """``OUT/pages.json``: what a crosscoder pages site shows."""

    FORMAT: ClassVar[str] = "rlsae.crosscoder_pages"
    VERSION: ClassVar[int] = 1
    crosscoder: str
    """The crosscoder directory the pages were made from."""
    latents: list[int] = field(default_factory=list)
    """The latents that have a page."""
    counts: dict[str, int] = field(default_factory=dict)
    """Latents per class."""
    frames: int = 0
    """Game frames written (0 for stores without frames)."""


RowFrames: TypeAlias = Callable[[Sequence[int]], Mapping[int, bytes]]
"""Given store rows, the PNG frame of each (rows it cannot show are left out). Both stores of
an agent crosscoder hold the same states row for row, so one frame serves both models."""


def export_crosscoder_pages(
    crosscoder_dir: str | os.PathLike,
    base: str | os.PathLike,
    tuned: str | os.PathLike,
    out: str | os.PathLike,
    *,
    info: LatentAnalysis | None = None,
    top: int = 8,
    shared: int = 10,
    overwrite: bool = False,
    frames: RowFrames | None = None,
) -> Path:
    """Write the pages (see the module docstring) into the new directory ``out``; ``frames``:
    the PNG frames of store rows, shown beside each latent's top rows."""
    import torch

    from rlsae.sae.crosscoder import load_crosscoder
    from rlsae.sae.latents import analyse_latents
    from rlsae.sae.paired import PairedStore

    cc = load_crosscoder(crosscoder_dir)
    pair = PairedStore(base, tuned)
    info = info or analyse_latents(cc, pair)
    live_shared = sorted((r for r in info.latents if r.kind == "shared"), key=lambda r: -r.fires)
    rows = [r for r in info.latents if r.kind in SHOWN] + live_shared[:shared]
    ids = [r.latent for r in rows]
    chunks = []
    with torch.no_grad():
        for x in pair.iter_sequential(4096):
            chunks.append(cc.encode(*pair.split(x))[:, ids].numpy())
    acts = np.concatenate(chunks) if chunks else np.zeros((0, len(ids)))
    norms = cc.decoder_norms().numpy()
    context = pair.context()
    path = Path(crosscoder_dir) / "explanations.json"  # the LM study's diff stage writes it
    expl = CrosscoderExplanations.read(path) if path.is_file() else None
    said = {e.latent: e for e in expl.latents} if expl is not None else {}
    js = plotly_js_tag()
    tops = [_top(acts[:, col], top) for col in range(len(rows))]
    pngs = frames(sorted({i for t in tops for i in t})) if frames is not None else {}
    with atomic_dir(Path(out), overwrite=overwrite) as tmp:
        (tmp / "latents").mkdir()
        urls = {}
        if pngs:
            (tmp / "frames").mkdir()
            for i, png in pngs.items():
                (tmp / "frames" / f"r{int(i)}.png").write_bytes(png)
                urls[int(i)] = f"../frames/r{int(i)}.png"
        (tmp / "index.html").write_text(_index(info, rows, js, str(crosscoder_dir)))
        for col, row in enumerate(rows):
            f = acts[:, col]
            page = _latent_page(row, f, norms[:, row.latent], context, tops[col], urls, js)
            e = said.get(row.latent)
            if e is not None:
                note = (
                    f"<p><b>Explanation</b> ({html.escape(expl.method if expl else '')}): "
                    f"{html.escape(e.explanation)}; |utility| {e.utility:.3f}</p>"
                )
                page = page.replace("<h2>Top", note + "<h2>Top", 1)
            (tmp / "latents" / f"{row.latent}.html").write_text(page)
        CrosscoderPages(str(crosscoder_dir), ids, dict(info.counts), len(urls)).write(
            tmp / PAGES_FILE
        )
    return Path(out)


def _page(title: str, body: str, js: str) -> str:
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{_STYLE}</style>{js}</head><body>{body}</body></html>\n"
    )


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _index(info: LatentAnalysis, rows: list[LatentRow], js: str, name: str) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in info.counts.items())
    lines = [
        f"<h1>Crosscoder {html.escape(name)}</h1>",
        f"<p>{info.n_latents} latents over {info.rows} rows: {counts}.</p>",
        figure_div(norm_ratio_figure(info), "norm-ratios"),
        "<table><tr><th>latent</th><th>class</th><th>norm ratio</th><th>cosine</th>"
        "<th>nu_error</th><th>nu_reconstruction</th><th>fires</th></tr>",
    ]
    for r in rows:
        colour = COLOURS[r.kind]
        lines.append(
            f"<tr><td><a href='latents/{r.latent}.html'>{r.latent}</a></td>"
            f"<td style='color:{colour}'>{r.kind}</td><td>{_g(r.norm_ratio)}</td>"
            f"<td>{_g(r.cosine)}</td><td>{_g(r.nu_error)}</td>"
            f"<td>{_g(r.nu_reconstruction)}</td><td>{r.fires}</td></tr>"
        )
    lines.append("</table>")
    return _page(f"crosscoder {name}", "\n".join(lines), js)


def _top(f: np.ndarray, top: int) -> list[int]:
    """The ``top`` rows where the latent fires most, best first."""
    return [int(i) for i in np.argsort(-f, kind="stable")[:top] if f[i] > 0]


def _latent_page(
    r: LatentRow,
    f: np.ndarray,
    norms: np.ndarray,
    context: Any,
    order: list[int],
    frames: dict[int, str],
    js: str,
) -> str:
    import plotly.graph_objects as go

    facts = [
        ("class", r.kind), ("fires on rows", str(r.fires)),
        ("decoder norm base / tuned", f"{r.norm_base:.3f} / {r.norm_tuned:.3f}"),
        ("norm ratio", _g(r.norm_ratio)), ("cosine", _g(r.cosine)),
        ("beta error base / tuned", f"{_g(r.beta_error_base)} / {_g(r.beta_error_tuned)}"),
        ("beta reconstruction base / tuned",
         f"{_g(r.beta_reconstruction_base)} / {_g(r.beta_reconstruction_tuned)}"),
        ("nu_error", _g(r.nu_error)), ("nu_reconstruction", _g(r.nu_reconstruction)),
    ]  # fmt: skip
    body = [
        f"<p><a href='../index.html'>all latents</a></p><h1>Latent {r.latent}</h1><table>",
        *(f"<tr><th>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in facts),
        "</table>",
    ]
    on = f[f > 0]
    fig = go.Figure()
    for m, name in enumerate(("base", "tuned")):
        fig.add_trace(go.Histogram(x=(on * norms[m]).tolist(), name=name, opacity=0.6))
    fig.update_layout(
        barmode="overlay", template="plotly_white", height=280,
        xaxis_title="contribution f_j |d_j| on the rows it fires", yaxis_title="rows",
        margin={"l": 50, "r": 20, "t": 30, "b": 40},
    )  # fmt: skip
    body.append(figure_div(fig, f"hist-{r.latent}"))
    body.append(f"<h2>Top {len(order)} rows</h2>")
    if frames:
        body.extend(_frames(order, f, norms, context, frames))
    else:
        body.extend(_examples(order, f, norms, context))
    return _page(f"latent {r.latent}", "\n".join(body), js)


def _examples(order: list[int], f: np.ndarray, norms: np.ndarray, context: Any) -> list[str]:
    if context is None:
        return [f"<p>row {i}: activation {f[i]:.3f}</p>" for i in order]
    if {"document", "position", "token"} <= set(context.columns):
        docs = context["document"].to_numpy()
        out = []
        for i in order:
            rows = np.nonzero(docs == docs[i])[0]
            rows = rows[np.argsort(context["position"].to_numpy()[rows], kind="stable")]
            peak = float(f[rows].max() * norms.max()) or 1.0  # one scale for both sides
            sides = [_shaded(rows, i, f * norms[m], peak, context) for m in (0, 1)]
            out.append(
                f"<p>document {docs[i]}, position {context['position'].iloc[i]}, "
                f"activation {f[i]:.3f}</p><div class='pair'><div><b>base</b><br>{sides[0]}"
                f"</div><div><b>tuned</b><br>{sides[1]}</div></div>"
            )
        return out
    cols = list(context.columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["row", "activation", *cols])
    lines = [f"<table><tr>{head}</tr>"]
    for i in order:
        cells = "".join(f"<td>{html.escape(str(context[c].iloc[i]))}</td>" for c in cols)
        lines.append(f"<tr><td>{i}</td><td>{f[i]:.3f}</td>{cells}</tr>")
    return lines + ["</table>"]


def _frames(
    order: list[int], f: np.ndarray, norms: np.ndarray, context: Any, urls: dict[int, str]
) -> list[str]:
    """Each top row's game frame beside the latent's contribution to each model."""
    lines = [
        "<table><tr><th>row</th><th>state</th><th>frame</th><th>activation</th>"
        "<th>contribution base</th><th>contribution tuned</th></tr>"
    ]
    for i in order:
        where = "-"
        if context is not None and {"episode", "step"} <= set(context.columns):
            where = f"episode {context['episode'].iloc[i]}, step {context['step'].iloc[i]}"
        img = f"<img class='frame' src='{urls[i]}' alt='row {i}'>" if i in urls else "no frame"
        lines.append(
            f"<tr><td>{i}</td><td>{html.escape(where)}</td><td>{img}</td><td>{f[i]:.3f}</td>"
            f"<td>{f[i] * norms[0]:.3f}</td><td>{f[i] * norms[1]:.3f}</td></tr>"
        )
    return lines + ["</table>"]


def _shaded(rows: np.ndarray, at: int, contribution: np.ndarray, peak: float, context: Any) -> str:
    """The document's tokens shaded by the latent's contribution (``peak``: full colour)."""
    tokens = context["token"].to_numpy()
    spans = []
    for j in rows:
        alpha = max(0.0, float(contribution[j]) / peak)
        border = "outline:1px solid #333;" if j == at else ""
        spans.append(
            f"<span class='tok' style='{border}background:rgba(214,39,40,{alpha:.2f})'>"
            f"{html.escape(str(tokens[j]))}</span>"
        )
    return "".join(spans)
