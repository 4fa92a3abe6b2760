"""``rlsae pipeline`` and ``rlsae sweep``: whole studies at smoke, demo or paper scale."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from rlsae.commands._apps import JsonOpt, app, emit, pipeline_app
from rlsae.errors import RlsaeError

MAX_WORKERS = 4096


def _human_study(res: dict) -> str:
    lines = [
        f"study {res['study']}: {res['agents']} agents in {res['run_dir']} "
        f"({res['stages_run']} stages run, {res['stages_skipped']} already done, "
        + (f"{res['stages_off']} switched off, " if res.get("stages_off") else "")
        + f"{res['seconds']:.0f} s)",
        f"agents table: {res['agents_csv']}",
        f"report:       {res['report']}",
    ]
    fit = res.get("fit")
    if fit:
        lines.append(
            f"fit (mean return vs live features, n={fit['n']}): quadratic R² = "
            f"{fit['quadratic_r2']:.3f}, p = {fit['quadratic_p']:.3g}; linear R² = "
            f"{fit['linear_r2']:.3f}, p = {fit['linear_p']:.3g}; Spearman rho = "
            f"{fit['spearman_rho']:.3f}"
        )
    elif res.get("fit_error"):
        lines.append(f"no fit: {res['fit_error']}")
    return "\n".join(lines)


@pipeline_app.command("atari")
def pipeline_atari(
    preset: str = typer.Option("demo", "--preset", help="smoke, demo, paper, or a config file."),
    out: Path | None = typer.Option(None, "--out", help="Run directory of the study."),
    resume: bool = typer.Option(False, "--resume", help="Continue a study already in --out."),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the preset's config as YAML and exit."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """The dead-features study: train agents, evaluate, record, train SAEs, count live features,
    splice, fit live features against return, write the report."""
    from rlsae.study.atari import resolve_config, run_study
    from rlsae.study.engine import config_yaml

    cfg, source = resolve_config(preset)
    if print_config:
        sys.stdout.write(config_yaml(cfg))
        return
    if out is None:
        raise RlsaeError("--out is required: the run directory of the study")
    res = run_study(cfg, out, resume=resume, source=source)
    emit(res, as_json, _human_study(res))


@app.command("sweep")
def sweep(
    config: Path = typer.Option(..., "--config", help="Study config (YAML or TOML) or a preset."),
    engine: str = typer.Option("local", "--engine", help="local (process pool) or ray."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (ray only)."),
    out: Path | None = typer.Option(None, "--out", help="Run directory (default runs/NAME)."),
    workers: int | None = typer.Option(None, "--workers", help="Parallel tasks (local engine)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a study already in --out."),
    as_json: bool = JsonOpt,
) -> None:
    """Run a study's per-agent work in parallel: a local process pool or one Ray task per agent."""
    from rlsae.study.atari import resolve_config, run_study
    from rlsae.study.sweep import check_engine

    check_engine(engine, address)
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise RlsaeError(f"--workers must be between 1 and {MAX_WORKERS}, got {workers}")
    cfg, source = resolve_config(str(config))
    run_dir = out if out is not None else Path("runs") / cfg.name
    res = run_study(
        cfg, run_dir, resume=resume, engine=engine, workers=workers, address=address, source=source
    )
    emit(res, as_json, _human_study(res))


@pipeline_app.command("llm")
def pipeline_llm_cmd(
    preset: str = typer.Option("demo", "--preset", help="smoke, demo, paper, or a config file."),
    out: Path | None = typer.Option(None, "--out", help="Run directory of the study."),
    resume: bool = typer.Option(False, "--resume", help="Continue a study already in --out."),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the preset's config as YAML and exit."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """The implicit-reward-model study: tune, divergence, SAE pairs, MMCS, explanations, tables."""
    from rlsae.study.engine import config_yaml
    from rlsae.study.llm import resolve_config, run_llm_study

    cfg, source = resolve_config(preset)
    if print_config:
        sys.stdout.write(config_yaml(cfg))
        return
    if out is None:
        raise RlsaeError("--out is required: the run directory of the study")
    res = run_llm_study(cfg, out, resume=resume, source=source)
    if "runs" in res:
        human = "\n".join(f"{r['model']}: {r['run_dir']}" for r in res["runs"])
        human += f"\ntables: {res['utility_md']}"
    else:
        human = (
            f"run: {res['run_dir']}\nlayers (most divergent first): {res['layers']}\n"
            f"MMCS(small, large): {res['mmcs']}\n"
            f"Table 3 (features' summed |utility|): {res['table3']}\n"
            f"Table 4 (completions' aggregate |utility|): {res['table4']}\n"
        )
        if res.get("explanation_scorer"):
            human += (
                f"explanations' mean detection score: {res['detection_mean']} "
                f"(explanations with one: {res['detection_scored']}; "
                f"scorer: {res['explanation_scorer']})\n"
                f"Table 3 over explanations with detection >= {res['score_threshold']}: "
                f"{res['table3_scored']}\n"
            )
        human += f"tables: {res['utility_html']}"
    emit(res, as_json, human)
