"""CLI verbs of the implicit-reward-model study: divergence, record, explain, utility, pipeline."""

from __future__ import annotations

from pathlib import Path

import typer

from rlsae.commands._apps import JsonOpt, emit, llm_app


@llm_app.command("divergence")
def divergence_cmd(
    base: str = typer.Option(..., "--base", help="Base model: hub name or model directory."),
    tuned: str = typer.Option(..., "--tuned", help="Tuned model: hub name or model directory."),
    top_n: int = typer.Option(None, "--top-n", min=1, help="Only list the N most divergent."),
    html: Path = typer.Option(None, "--html", help="Write the per-layer bar chart here."),
    as_json: bool = JsonOpt,
) -> None:
    """Rank layers by parameter divergence Δ = Σ‖W_tuned − W_base‖₂ (high to low)."""
    from rlsae.llm.divergence import layer_divergence, write_divergence_html

    res = layer_divergence(base, tuned)
    out = res.to_json(top_n)
    if html is not None:
        out["html"] = str(write_divergence_html(res, html, top_n))
    lines = [f"{'layer':>5}  divergence"]
    lines += [f"{r['layer']:>5}  {r['divergence']:.6g}" for r in out["layers"]]
    lines.append(f"embeddings {out['embeddings']:.6g}   final_norm {out['final_norm']:.6g}")
    if "html" in out:
        lines.append(f"chart: {out['html']}")
    emit(out, as_json, "\n".join(lines))
