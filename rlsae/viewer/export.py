"""Export a run directory as a static feature viewer that opens from disk (file://).

The site is one ``index.html`` plus static JavaScript and CSS; every piece of data is a
JSONP-style ``.js`` file (``RLSAE.put(key, {...})``) that the page loads on demand by
``<script>`` injection, which works from file:// where ``fetch()`` does not, and unchanged on
any static host (GitHub Pages). Layout::

    viewer/index.html, static/{viewer.js,viewer.css[,plotly.min.js]}
    viewer/data/index.js                        run summary: study, agents table, SAEs
    viewer/data/saes/ID/summary.js              per-feature density, max, effect, labels
    viewer/data/saes/ID/features/N.js           one feature's page data (lazy)
    viewer/data/frames/STORE/*.png, *.gif       a source's images (agents: replayed frames)

What a page shows beyond the provider-neutral statistics comes from the viewer sources the
caller passes (:mod:`rlsae.viewer.source`); the viewer itself imports no provider. Example::

    from rlsae.agents.viewer_source import viewer_source as agent_source
    from rlsae.llm.viewer_source import viewer_source as lm_source
    from rlsae.viewer.export import export_site
    site = export_site("runs/demo/atari", sources=[agent_source(), lm_source()])
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_dir, read_json
from rlsae.viewer.config import ExportConfig, check_export, site_folder
from rlsae.viewer.crosscoder import PAGES_FILE, CrosscoderPages
from rlsae.viewer.pages import SiteJob, export_sae, write_jsonp
from rlsae.viewer.pairs import read_shared
from rlsae.viewer.source import ViewerSource
from rlsae.viewer.study import read_study

__all__ = ["ExportConfig", "export_site", "find_saes"]

PKG = Path(__file__).resolve().parent


def find_saes(run_dir: Path) -> list[Path]:
    """Every SAE directory (``cfg.json`` + ``sae_weights.safetensors``) under ``saes/``."""
    root = run_dir / "saes"
    if not root.is_dir():
        return []
    return sorted(
        p.parent for p in root.rglob("cfg.json") if (p.parent / "sae_weights.safetensors").is_file()
    )


def _reports(run_dir: Path, out: Path) -> list[list[str]]:
    """[title, relative link] of the run's HTML reports, when the site sits inside the run (a
    site copied elsewhere, e.g. to GitHub Pages, then simply has no such links)."""
    if run_dir.resolve() not in out.resolve().parents:
        return []
    found = []
    for p in sorted((run_dir / "analysis").glob("*.html")):
        found.append([p.stem.replace("_", " "), os.path.relpath(p, out).replace(os.sep, "/")])
    return found


def _crosscoder_sites(out: Path) -> list[list[str]]:
    """[title, relative link] of the crosscoder pages sites (``rlsae diff pages``) exported
    next to the site (sibling folders with a readable ``pages.json``)."""
    found = []
    for p in sorted(out.parent.glob(f"*/{PAGES_FILE}")):
        if p.parent == out:
            continue
        try:
            CrosscoderPages.read(p)
        except (RlsaeError, OSError, ValueError):
            continue
        found.append([f"crosscoder {p.parent.name}", f"../{p.parent.name}/index.html"])
    return found


def _run_info(run_dir: Path, notes: list[str]) -> dict[str, Any]:
    """The fields of ``run.json`` the index shows."""
    if not (run_dir / "run.json").is_file():
        return {}
    try:
        info = read_json(run_dir / "run.json")
    except RlsaeError:
        notes.append("run.json is unreadable")
        return {}
    keys = ("name", "preset", "created", "git_commit")
    return {k: info[k] for k in keys if isinstance(info, dict) and k in info}


def _copy_assets(site: Path, with_plotly: bool) -> None:
    shutil.copyfile(PKG / "templates" / "index.html", site / "index.html")
    (site / "static").mkdir(exist_ok=True)
    for p in (PKG / "static").iterdir():
        if p.is_file():
            shutil.copyfile(p, site / "static" / p.name)
    if with_plotly:
        from plotly.offline import get_plotlyjs

        (site / "static" / "plotly.min.js").write_text(get_plotlyjs(), encoding="utf-8")
    (site / ".nojekyll").write_bytes(b"")  # GitHub Pages: serve files as they are


def export_site(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    top: int = 25,
    *,
    config: ExportConfig | None = None,
    sources: Sequence[ViewerSource] = (),
    progress: bool = False,
) -> Path:
    """Export the static viewer of ``run_dir`` into ``out_dir`` (default ``run_dir/viewer``).

    Reads what the run holds (SAEs under ``saes/`` with their stores under ``acts/``,
    ``analysis/agents.csv`` and ``analysis/fit_live_vs_return.json``,
    ``analysis/llm_shared_features.json``) and skips what it lacks, saying so on the index.
    ``sources`` provide the pages of the stores they claim (agent frames, token contexts, ...);
    other stores get generic pages. ``top`` is used when ``config`` is not given. The site is
    written to a temporary sibling and renamed into place, replacing an older export only once
    the new one is complete. Returns the path of ``index.html``.
    """
    run_dir = Path(run_dir)
    cfg = config or ExportConfig(top=int(top))
    out = site_folder(run_dir, out_dir)
    check_export(run_dir, out, cfg)
    sae_dirs = find_saes(run_dir)
    notes: list[str] = []
    table, study = read_study(run_dir, notes)
    if not sae_dirs and table is None:
        raise RlsaeError(
            f"{run_dir} holds no SAEs (saes/) and no analysis (analysis/agents.csv); nothing to export"
        )
    shared = read_shared(run_dir, notes)
    by_rel = {d.relative_to(run_dir / "saes").as_posix(): f"s{i}" for i, d in enumerate(sae_dirs)}
    run_info = _run_info(run_dir, notes)
    with atomic_dir(out, overwrite=True) as site:
        job = SiteJob(run_dir, site, cfg, list(sources), by_rel, shared, progress)
        index = {
            "run": run_dir.resolve().name,
            "run_info": run_info,
            "saes": [export_sae(job, d) for d in sae_dirs],
            "agents_table": table,
            "study": study,
            "notes": notes,
            "reports": _reports(run_dir, out) + _crosscoder_sites(out),
            "config": asdict(cfg),
        }
        write_jsonp(site / "data" / "index.js", "index", index)
        _copy_assets(site, with_plotly=study is not None and "grid" in study)
    return out / "index.html"
