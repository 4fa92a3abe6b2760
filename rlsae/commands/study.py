"""Verbs of the dead-features study: ``analyze fit``, ``pipeline atari``, ``sweep``."""

from __future__ import annotations

from pathlib import Path

import typer

from rlsae.commands._apps import JsonOpt, analyze_app, emit


@analyze_app.command("fit")
def analyze_fit(
    table: Path = typer.Option(..., "--table", help="CSV file, one row per agent."),
    x: str = typer.Option(..., "--x", help="Column for x (e.g. live)."),
    y: str = typer.Option(..., "--y", help="Column for y (e.g. mean_return)."),
    bootstrap: int = typer.Option(2000, "--bootstrap", help="Resamples for the vertex interval."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    html_out: Path | None = typer.Option(
        None, "--html", help="Write a plotly scatter with both fits."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Linear and quadratic OLS of Y on X (R², adjusted R², F-test), vertex, Spearman's rho."""
    from rlsae.analysis.figures import fit_figure, write_figure_html
    from rlsae.analysis.fit import describe_fit, fit_table

    res, df = fit_table(table, x, y, bootstrap=bootstrap, seed=seed)
    if html_out is not None:
        import pandas as pd

        labels = df["agent"].astype(str).tolist() if "agent" in df.columns else None
        fig = fit_figure(
            pd.to_numeric(df[x], errors="coerce").to_numpy(),
            pd.to_numeric(df[y], errors="coerce").to_numpy(),
            res,
            x_label=x,
            y_label=y,
            labels=labels,
        )
        write_figure_html(fig, html_out, title=f"{y} vs {x}")
        res["html"] = str(html_out)
    human = describe_fit(res) + (f"\nfigure: {html_out}" if html_out else "")
    emit(res, as_json, human)
