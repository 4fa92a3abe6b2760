"""``rlsae analyze``: fits across agents, MMCS between dictionaries, dead features."""

from __future__ import annotations

from pathlib import Path

import typer

from rlsae.commands._apps import JsonOpt, analyze_app, emit
from rlsae.configs import INT64_MAX
from rlsae.errors import RlsaeError


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
    """Linear and quadratic OLS of Y on X (R², adjusted R², F-test), vertex, Spearman's rho.

    With --json: one rlsae.fit object, as in analysis/fit_live_vs_return.json.
    Infinite or undefined statistics are null (an exact fit has "exact": true)."""
    from rlsae.analysis.fit import check_fit_options, describe_fit, fit_table

    check_fit_options(bootstrap, seed)
    from rlsae.analysis.figures import fit_figure, write_figure_html

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
    human = describe_fit(res) + (f"\nfigure: {html_out}" if html_out else "")
    emit(res.to_json(), as_json, human)  # --json: the rlsae.fit artifact, as the study writes it


@analyze_app.command("mmcs")
def analyze_mmcs(
    saes: list[Path] = typer.Option(..., "--sae", help="Two SAE directories: --sae A --sae B."),
    top_k: int = typer.Option(10, "--top-k", help="How many of A's best-matched features to list."),
    hungarian: bool = typer.Option(
        False, "--hungarian", help="Also a one-to-one matching (small dictionaries)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Mean max cosine similarity between two SAEs' decoder directions, both ways.

    With --json: one rlsae.mmcs object."""
    from rlsae.analysis.mmcs import check_top_k, compare_dictionaries

    check_top_k(top_k)
    if len(saes) != 2:
        raise RlsaeError(f"give exactly two SAEs (--sae A --sae B), got {len(saes)}")
    for path in saes:
        _need_dir(path, "SAE directory")
    from rlsae.sae import load_sae

    a, b = (load_sae(p) for p in saes)
    res = compare_dictionaries(a.W_dec, b.W_dec, top_k=top_k, hungarian=hungarian).result
    res.sae_a, res.sae_b = str(saes[0]), str(saes[1])
    human = None
    if not as_json:
        lines = [
            f"MMCS A->B {res.mmcs_ab:.4f}   B->A {res.mmcs_ba:.4f}   "
            f"({res.n_a} vs {res.n_b} features)"
        ]
        if res.hungarian_mean_cos is not None:
            lines.append(f"one-to-one (Hungarian) mean cosine {res.hungarian_mean_cos:.4f}")
        lines.append("top features of A by max cosine in B:")
        lines += [f"  {t.feature:>6} -> {t.match:<6} {t.cosine:.4f}" for t in res.top_k]
        human = "\n".join(lines)
    emit(res.to_json(), as_json, human)


@analyze_app.command("dead")
def analyze_dead(
    sae_dir: Path = typer.Option(..., "--sae", help="SAE directory."),
    acts: Path = typer.Option(..., "--acts", help="Activation store to count firings over."),
    threshold: int = typer.Option(
        1, "--threshold", help="A latent is live if it fires at least this many times."
    ),
    batch_size: int = typer.Option(4096, "--batch-size", help="Rows per batch."),
    as_json: bool = JsonOpt,
) -> None:
    """Count live and dead latents of an SAE over a store."""
    if not 1 <= threshold <= INT64_MAX:  # a count of firings; torch counts in 64 bits
        raise RlsaeError(f"--threshold must be between 1 and {INT64_MAX}, got {threshold}")
    _need_dir(sae_dir, "SAE directory")
    _need_dir(acts, "activation store")
    from rlsae.sae import ActivationStore, evaluate_sae, live_feature_count, load_sae
    from rlsae.sae.metrics import check_eval_args

    check_eval_args(batch_size)
    sae = load_sae(sae_dir)
    result = evaluate_sae(
        sae, ActivationStore(acts), batch_size=batch_size, check_hook=True, progress=True
    )
    live = live_feature_count(result.stats.firing_counts, threshold)
    emit(
        {
            "live": live,
            "dead": sae.cfg.d_sae - live,
            "d_sae": sae.cfg.d_sae,
            "rows": result.metrics.rows,
            "threshold": threshold,
        },
        as_json,
    )


def _need_dir(path: Path, what: str) -> None:
    """A missing input is refused before torch is imported (a fast one-line error)."""
    if not path.is_dir():
        raise RlsaeError(f"{what} {path} not found")
