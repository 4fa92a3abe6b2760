"""Verbs of the static feature viewer: ``viewer export``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from rlsae.commands._apps import JsonOpt, emit, viewer_app
from rlsae.configs import field_default, field_docs
from rlsae.viewer.config import ExportConfig

if TYPE_CHECKING:
    from rlsae.viewer.source import ViewerSource


@viewer_app.command("export")
def viewer_export(
    run: Path = typer.Option(..., "--run", help="Run directory (saes/, acts/, analysis/, ...)."),
    out: Path | None = typer.Option(None, "--out", help="Site folder (default RUN/viewer)."),
    top: int = typer.Option(
        field_default(ExportConfig, "top"), "--top", help=field_docs(ExportConfig)["top"]
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    as_json: bool = JsonOpt,
) -> None:
    """Write a static site (opens from file://, deploys as is to GitHub Pages) of every SAE's
    features in a run."""
    import time

    from rlsae.viewer.config import ExportConfig, check_export, site_folder

    t0 = time.perf_counter()
    cfg = ExportConfig(top=top)
    check_export(run, site_folder(run, out), cfg)  # bad arguments are refused before torch loads
    from rlsae.viewer.export import export_site

    index = export_site(run, out, config=cfg, sources=viewer_sources(), progress=not quiet)
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


def viewer_sources() -> list[ViewerSource]:
    """The viewer sources of every provider: agent stores and language-model stores."""
    from rlsae.agents.viewer_source import viewer_source as agent_source
    from rlsae.llm.viewer_source import viewer_source as lm_source

    return [agent_source(), lm_source()]


def read_json_index(site: Path) -> dict[str, Any]:
    """The index data the export wrote (``data/index.js`` holds ``RLSAE.put("index", {...});``)."""
    import json

    text = (site / "data" / "index.js").read_text(encoding="ascii")
    return json.loads(text[text.index(",") + 1 : text.rstrip().rindex(")")])
