"""``rlsae demo``: the main job. The dead-features study at demo scale, then the language-model
study, then the static viewer of each; prints where they are."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from rlsae.commands._apps import JsonOpt, app, emit


def run_demo(
    out: Path, *, llm: bool = True, viewer: bool = True, preset: str = "demo"
) -> dict[str, Any]:
    """Run the demo studies into ``out/atari`` and ``out/llm`` (resuming what is there)."""
    from rlsae.analysis.report import write_atari_report
    from rlsae.commands.viewer import viewer_sources
    from rlsae.study.atari import run_atari_pipeline
    from rlsae.study.llm import run_llm_pipeline
    from rlsae.viewer.export import export_site

    t0 = time.perf_counter()
    result: dict[str, Any] = {"out": str(out)}
    atari_dir = out / "atari"
    atari = run_atari_pipeline(atari_dir, preset, resume=(atari_dir / "run.json").is_file())
    atari["seconds"] = time.perf_counter() - t0
    atari["saes"] = _agent_saes(Path(atari["agents_csv"]))
    result["atari"] = atari
    run_dirs = [atari_dir]
    if llm:
        llm_dir = out / "llm"
        t = time.perf_counter()
        res = run_llm_pipeline(llm_dir, preset, resume=(llm_dir / "run.json").is_file())
        result["llm"] = {**res, "run_dir": str(llm_dir), "seconds": time.perf_counter() - t}
        run_dirs.append(llm_dir)
    result["viewers"] = {}
    if viewer:
        for rd in run_dirs:
            t = time.perf_counter()
            site = Path(export_site(rd, sources=viewer_sources()))
            result["viewers"][rd.name] = str(
                site if site.suffix == ".html" else site / "index.html"
            )
            result.setdefault("viewer_seconds", {})[rd.name] = time.perf_counter() - t
        # the report links to ../viewer/index.html: refresh it now that the viewer exists
        write_atari_report(atari_dir)
    result["seconds"] = time.perf_counter() - t0
    return result


def _agent_saes(csv: Path) -> list[dict[str, Any]]:
    """Each agent's live features and the concept coverage of its SAE (from agents.csv)."""
    import pandas as pd

    if not csv.is_file():
        return []
    df = pd.read_csv(csv)
    out = []
    for _, row in df.iterrows():
        cov = row.get("concept_coverage")
        hn = row.get("human_normalized")
        out.append(
            {
                "agent": str(row["agent"]),
                "live": int(row["live"]) if "live" in row and pd.notna(row["live"]) else None,
                "concept_coverage": float(cov) if cov is not None and pd.notna(cov) else None,
                "human_normalized": float(hn) if hn is not None and pd.notna(hn) else None,
            }
        )
    return out


def _human(res: dict[str, Any]) -> str:
    from rlsae.analysis.report import POSTER_COMMAND, SKILL_FLOOR

    a = res["atari"]
    lines = [f"rlsae demo finished in {res['seconds']:.0f} s", ""]
    lines.append(f"Ms. Pac-Man dead-features study ({a['agents']} agents, {a['seconds']:.0f} s)")
    lines.append(f"  report:  {a['report']}")
    if "atari" in res["viewers"]:
        lines.append(f"  viewer:  {res['viewers']['atari']}")
    lines.append(f"  table:   {a['agents_csv']}")
    saes = a.get("saes", [])
    for s in saes:
        cov, hn = s["concept_coverage"], s.get("human_normalized")
        lines.append(
            f"    {s['agent']}: {s['live']} live features, concept coverage "
            + ("n/a" if cov is None else f"{cov:.3f}")
            + ("" if hn is None else f", human-normalised score {hn:.2f}")
        )
    scores = [s.get("human_normalized") for s in saes]
    if scores and all(h is not None and h < SKILL_FLOOR for h in scores):
        lines.append(
            f"  These agents are no better than random play (every one below {SKILL_FLOOR} "
            "human-normalised): the fit below says nothing about the poster's claim. To test "
            f"it, import the poster's agents: {POSTER_COMMAND} (docs/dead-features.md)."
        )
    fit = a.get("fit")
    if fit:
        lines.append(
            f"  fit of mean return on live features (n={fit['n']}): quadratic R² = "
            f"{fit['quadratic_r2']:.3f}, F-test p = {fit['quadratic_p']:.3g}; linear R² = "
            f"{fit['linear_r2']:.3f}, p = {fit['linear_p']:.3g}; Spearman rho = "
            f"{fit['spearman_rho']:.3f} (p = {fit['spearman_p']:.3g})"
        )
        lines.append("  (the poster: quadratic R² = 0.33, p = 0.015 over 24 agents)")
    elif a.get("fit_error"):
        lines.append(f"  no fit: {a['fit_error']}")
    if "llm" in res:
        lr = res["llm"]
        lines += [
            "",
            f"Language-model study ({lr['seconds']:.0f} s)",
            f"  run:     {lr['run_dir']}",
        ]
        if isinstance(lr.get("report"), str):
            lines.append(f"  report:  {lr['report']}")
        if "llm" in res["viewers"]:
            lines.append(f"  viewer:  {res['viewers']['llm']}")
        for key, what in (
            ("table3", "summed |utility| of the explained shared features (paper Table 3)"),
            ("table4", "aggregate |utility| of the completions (paper Table 4)"),
        ):
            if isinstance(lr.get(key), dict):
                vals = ", ".join(
                    f"{m} {v:.4g}" for m, v in lr[key].items() if isinstance(v, int | float)
                )
                lines.append(f"  {what}: {vals}")
        if isinstance(lr.get("detection_mean"), dict) and lr.get("explanation_scorer"):
            n = lr.get("detection_scored") or {}
            vals = ", ".join(
                f"{m} {v:.3f} ({n.get(m, '?')} with a score)"
                for m, v in lr["detection_mean"].items()
                if isinstance(v, float)
            )
            lines.append(f"  explanations' mean detection score: {vals or '–'}")
            lines.append(f"    scorer: {lr['explanation_scorer']}")
    return "\n".join(lines)


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where the demo runs go."),
    preset: str = typer.Option("demo", "--preset", help="demo (default) or smoke (a quick look)."),
    llm: bool = typer.Option(True, "--llm/--no-llm", help="Also run the language-model demo."),
    as_json: bool = JsonOpt,
) -> None:
    """The main job: the demo studies (CPU, offline), their reports and viewers. Re-running
    resumes an interrupted demo and reprints the results of a finished one."""
    from rlsae.errors import RlsaeError

    if preset not in ("demo", "smoke"):
        raise RlsaeError(f"unknown demo preset {preset!r}; use demo or smoke")
    res = run_demo(out, llm=llm, preset=preset)
    emit(res, as_json, _human(res))
