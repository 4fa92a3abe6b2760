"""Verbs of the static feature viewer: ``viewer export``."""

from __future__ import annotations

from pathlib import Path

import typer

from rlsae.commands._apps import JsonOpt, emit, viewer_app


@viewer_app.command("export")
def viewer_export(
    run: Path = typer.Option(..., "--run", help="Run directory (saes/, acts/, analysis/, ...)."),
    out: Path | None = typer.Option(None, "--out", help="Site folder (default RUN/viewer)."),
    top: int = typer.Option(25, "--top", help="Top states/contexts per feature."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    as_json: bool = JsonOpt,
) -> None:
    """Write a static site (opens from file://, deploys as is to GitHub Pages) of every SAE's
    features in a run."""
    import time

    from rlsae.viewer.export import export_site

    t0 = time.perf_counter()
    index = export_site(run, out, top=top, progress=not quiet)
    site = index.parent
    meta = read_json_index(site)
    files = [p for p in site.rglob("*") if p.is_file()]
    result = {
        "index": str(index),
        "url": index.resolve().as_uri(),
        "saes": [
            {k: s.get(k) for k in ("id", "name", "kind", "d_sae")}
            | {
                "live": (s.get("metrics") or {}).get("live"),
                "dead": (s.get("metrics") or {}).get("dead"),
            }
            for s in meta["saes"]
        ],
        "notes": meta["notes"] + [n for s in meta["saes"] for n in s.get("notes", [])],
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    lines = [f"viewer: {result['url']}"]
    for s in result["saes"]:
        lines.append(
            f"  {s['name']} ({s['kind']}): {s['d_sae']} features, {s['live']} live, {s['dead']} dead"
        )
    lines += [f"  note: {n}" for n in result["notes"]]
    lines.append(
        f"  {result['files']} files, {result['bytes'] / 1e6:.1f} MB, {result['seconds']} s"
    )
    emit(result, as_json, "\n".join(lines))


def read_json_index(site: Path) -> dict:
    """The index data the export wrote (``data/index.js`` holds ``RLSAE.put("index", {...});``)."""
    import json

    text = (site / "data" / "index.js").read_text(encoding="ascii")
    return json.loads(text[text.index(",") + 1 : text.rstrip().rindex(")")])
