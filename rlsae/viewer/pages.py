"""One SAE's part of the site: its index entry, ``summary.js`` and one ``features/N.js`` per feature.

The SAE's activation store is claimed by a :class:`~rlsae.viewer.source.ViewerSource` (or gets
the generic page), scanned once (:mod:`rlsae.viewer.scan`), and the source's page data is merged
with the provider-neutral statistics (density, histogram, top rows, decoder neighbours) and the
feature pairs of the shared-features artifact.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlsae.analysis.mmcs import SharedFeatures
from rlsae.errors import RlsaeError
from rlsae.fsutil import dumps_json
from rlsae.sae.train import TrainingRecord
from rlsae.viewer.pairs import FeaturePair, shared_pairs
from rlsae.viewer.scan import FeatureScan, ScanConfig, decoder_neighbours, scan_features
from rlsae.viewer.source import (
    Assets,
    ContextRow,
    ExportConfig,
    StoreClaim,
    StorePages,
    StoreView,
    ViewerSource,
    first_line,
)

GENERIC = StoreClaim(kind="generic")
"""The page template of a store no source claims: its context columns in a table."""
DEFAULT_EFFECT_LABEL = "max activation × decoder norm"
SCORES: tuple[str, ...] = ("detection", "fuzzing", "simulation")
"""The explanation scores the feature table can be filtered by (``summary.scores``)."""


def write_jsonp(path: Path, key: str, obj: Any) -> None:
    """Write ``RLSAE.put(key, obj);`` as :func:`rlsae.fsutil.dumps_json` writes ``obj`` (strict
    JSON, all ASCII). Every non-ASCII character (U+2028/2029 included) is escaped, so any
    string in the data stays inside its JavaScript string literal.

    Feature pages are built from plain, finite values, for which the sanitiser returns its input
    unchanged; serialising them directly gives the same text about 4x faster (1.2 ms less per
    page: ~20 s of a 16k-feature export), and anything else takes the sanitiser's path."""
    try:
        text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):  # numpy values, NaN/inf, paths: sanitise
        text = dumps_json(obj, ascii_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"RLSAE.put({json.dumps(key)},{text});\n", encoding="ascii")


def _r(x: float, sig: int = 5) -> float | None:
    """``x`` rounded to ``sig`` significant digits (None if not finite), for compact JSON."""
    x = float(x)
    return float(f"{x:.{sig}g}") if math.isfinite(x) else None


def safe_name(name: str) -> str:
    """A folder name for a store: its path made URL-safe, plus a short hash of the real path so
    that two stores never share a folder (``a/b`` and ``a_b`` would otherwise collide)."""
    import hashlib

    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


@dataclass
class SiteJob:
    """What every SAE of one export shares."""

    run_dir: Path
    site: Path
    """The site folder being written (a temporary sibling of the final one)."""
    config: ExportConfig
    sources: Sequence[ViewerSource]
    by_rel: dict[str, str]
    """SAE path under ``saes/`` -> site id (``s0``, ``s1``, ...)."""
    shared: SharedFeatures | None
    progress: bool


def export_sae(job: SiteJob, sae_dir: Path) -> dict[str, Any]:
    """Write one SAE's summary and feature files; return its entry of the site index."""
    from rlsae.sae import ActivationStore, load_sae

    rel = sae_dir.relative_to(job.run_dir / "saes").as_posix()
    sae = load_sae(sae_dir)
    sae.eval()
    entry = _sae_entry(sae, sae_dir, job.by_rel[rel], rel)
    store_rel = Path(rel).parent.as_posix()
    store_dir = job.run_dir / "acts" / store_rel
    if not (store_dir / "meta.json").is_file():
        entry["kind"] = "none"
        entry["notes"].append(f"no activation store at acts/{store_rel}; no feature pages")
        return entry
    store = ActivationStore(store_dir)
    if store.d_in != sae.cfg.d_in:
        raise RlsaeError(
            f"SAE {sae_dir} reads d_in={sae.cfg.d_in} but the store {store_dir} has d_in={store.d_in}"
        )
    source, claim = _claim(job.sources, store, entry["notes"])
    entry.update(kind=claim.kind, source=store.source, hook=store.hook, store=store_rel)
    ctx = store.context()
    scan = _scan(sae, store, ctx, claim, job, rel)
    entry["metrics"] = {k: _r(v) if isinstance(v, float) else v for k, v in scan.metrics.items()}
    folder = safe_name(store_rel)
    assets = Assets(job.site / "data" / "frames" / folder, f"data/frames/{folder}")
    view = StoreView(job.run_dir, sae_dir, sae, store, ctx, scan, job.config, assets, job.progress)
    pages = source.pages(view) if source is not None else table_pages(view)
    entry["notes"].extend(pages.notes)
    entry["effect_label"] = pages.effect_label or DEFAULT_EFFECT_LABEL
    entry.update(pages.entry_fields())
    pairs: dict[int, list[FeaturePair]] = {}
    if job.shared is not None:
        pairs = shared_pairs(job.shared, rel, job.by_rel)
        entry["shared"] = len(pairs)
    effect = pages.effect
    if effect is None:  # the largest norm of the feature's contribution to the reconstruction
        effect = scan.max_act * sae.W_dec.detach().float().norm(dim=1).numpy()
    _write_features(job, entry["id"], sae, scan, claim, pages, pairs, effect)
    _write_summary(job, entry, scan, pages, effect)
    return entry


def _sae_entry(sae: Any, sae_dir: Path, sid: str, rel: str) -> dict[str, Any]:
    """The index entry's fields known from the SAE alone."""
    entry: dict[str, Any] = {"id": sid, "name": rel, "notes": []}
    entry.update(
        d_in=int(sae.cfg.d_in), d_sae=int(sae.cfg.d_sae), arch=sae.cfg.arch,
        k=int(sae.cfg.k) if sae.cfg.arch == "topk" else None, tied=bool(sae.cfg.tied),
    )  # fmt: skip
    if (sae_dir / "training.json").is_file():
        try:
            rec = TrainingRecord.read(sae_dir / "training.json")
        except RlsaeError as e:
            entry["notes"].append(f"training.json is unreadable ({first_line(e)})")
            return entry
        final = dataclasses.asdict(rec.final) if rec.final is not None else None
        entry["training"] = {"steps": rec.steps, "rows_seen": rec.rows_seen, "final": final}
    return entry


def _claim(
    sources: Sequence[ViewerSource], store: Any, notes: list[str]
) -> tuple[ViewerSource | None, StoreClaim]:
    """The first source that claims ``store`` and its claim; else the generic page."""
    for source in sources:
        claim = source.claim(store)
        if claim is not None:
            return source, claim
    if store.provider not in ("", "import"):  # "import": activations a user brought (generic)
        notes.append(f"no viewer source for {store.provider!r} stores was given; generic pages")
    return None, GENERIC


def _scan(sae: Any, store: Any, ctx: Any, claim: StoreClaim, job: SiteJob, rel: str) -> FeatureScan:
    from tqdm import tqdm

    col = claim.group_column
    groups = ctx[col].to_numpy(dtype=np.int64) if col and ctx is not None and col in ctx else None
    cfg = job.config
    scfg = ScanConfig(
        top=cfg.top, batch_size=cfg.batch_size, hist_bins=cfg.hist_bins,
        intervals=cfg.lm_intervals if claim.intervals else (),
        samples_per_interval=cfg.samples_per_interval, neighbours=cfg.neighbours, seed=cfg.seed,
    )  # fmt: skip
    with tqdm(
        total=2 * store.rows, desc=f"scan {rel}", unit="row", file=sys.stderr,
        disable=not job.progress, leave=False,
    ) as bar:  # fmt: skip
        return scan_features(sae, store, groups, scfg, bar.update)


def table_pages(view: StoreView) -> StorePages:
    """The generic page data: up to eight scalar context columns of each top row."""
    pages = StorePages()
    ctx = view.context
    if ctx is None or len(ctx) == 0:
        return pages
    cols = [c for c in ctx.columns if _scalar(ctx[c].iat[0])][:8]
    if not cols:
        return pages
    for f in range(view.d_sae):
        for r in view.top_rows(f):
            pages.rows[(f, r)] = ContextRow({str(c): _plain(ctx[c].iat[r]) for c in cols})
    return pages


def _scalar(v: Any) -> bool:
    return not isinstance(v, list | tuple | dict | np.ndarray | bytes)


def _plain(v: Any) -> Any:
    """A context value as a JSON scalar (numpy scalars as numbers, other objects as text)."""
    if isinstance(v, np.generic):
        v = v.item()
    return v if isinstance(v, str | int | float | bool) or v is None else str(v)


def _write_features(
    job: SiteJob,
    sid: str,
    sae: Any,
    scan: FeatureScan,
    claim: StoreClaim,
    pages: StorePages,
    pairs: dict[int, list[FeaturePair]],
    effect: np.ndarray,
) -> None:
    """One ``features/N.js`` per feature."""
    nb_idx, nb_cos = decoder_neighbours(sae.W_dec, job.config.neighbours)
    feat_dir = job.site / "data" / "saes" / sid / "features"
    for f in range(int(sae.cfg.d_sae)):
        page: dict[str, Any] = {
            "i": f,
            "dead": bool(scan.dead[f]),
            "count": int(scan.firing_counts[f]),
            "density": float(scan.density[f]),
            "max": _r(scan.max_act[f]),
            "mean": _r(scan.mean_act[f]),
            "effect": _r(effect[f]),
            "hist": [int(c) for c in scan.hist[f]],
            "neighbours": [[int(j), _r(c, 4)] for j, c in zip(nb_idx[f], nb_cos[f], strict=True)],
            "top": _samples(f, scan.top_vals[f], scan.top_rows[f], pages),
        }
        if claim.intervals and not scan.dead[f]:
            page["intervals"] = [
                {
                    "lo": lo,
                    "hi": hi,
                    "samples": _samples(
                        f, scan.interval_vals[f, j], scan.interval_rows[f, j], pages
                    ),
                }
                for j, (lo, hi) in enumerate(job.config.lm_intervals)
            ]
        if f in pages.features:
            page.update(pages.features[f].to_page())
        if f in pairs:
            page["pairs"] = [p.to_page() for p in pairs[f]]
        write_jsonp(feat_dir / f"{f}.js", f"{sid}/{f}", page)


def _samples(f: int, vals: np.ndarray, rows: np.ndarray, pages: StorePages) -> list[dict[str, Any]]:
    """The page entries of feature ``f``'s rows (skipping the -1 fillers)."""
    out = []
    for v, r in zip(vals, rows, strict=True):
        if r < 0:
            continue
        row = pages.rows.get((f, int(r)))
        out.append({"row": int(r), "act": _r(v, 6), **(row.to_page() if row else {})})
    return out


def _write_summary(
    job: SiteJob, entry: dict[str, Any], scan: FeatureScan, pages: StorePages, effect: np.ndarray
) -> None:
    """``summary.js``: the per-feature columns of the feature table."""
    labels: list[str | None] = [None] * int(entry["d_sae"])
    concepts: list[str | None] = [None] * int(entry["d_sae"])
    match: list[float | None] = [None] * int(entry["d_sae"])
    scores: dict[str, list[float | None]] = {m: [None] * int(entry["d_sae"]) for m in SCORES}
    for f, extras in pages.features.items():
        labels[f] = extras.label
        for m, col in scores.items():  # held-out explanation scores, for filtering the table
            col[f] = None if extras.explanation is None else getattr(extras.explanation, m)
        if extras.concepts:  # the best concept, for filtering and sorting the feature table
            best = extras.concepts[0]
            concepts[f] = ("NOT " if best.negated else "") + best.concept
            match[f] = _r(best.strength, 4)
    sid = entry["id"]
    summary = {
        "id": sid,
        "name": entry["name"],
        "kind": entry["kind"],
        "d_sae": entry["d_sae"],
        "rows": scan.rows,
        "density": [float(f"{d:.4g}") for d in scan.density],
        "max": [_r(v, 4) for v in scan.max_act],
        "effect": [_r(v, 4) for v in effect],
        "effect_label": entry["effect_label"],
        "labels": labels if any(labels) else None,
    }
    if any(c is not None for c in concepts):
        summary["concepts"], summary["match"] = concepts, match
    scored = {
        m: [None if v is None else _r(v, 4) for v in col]
        for m, col in scores.items()
        if any(v is not None for v in col)
    }
    if scored:
        summary["scores"] = scored
    write_jsonp(job.site / "data" / "saes" / sid / "summary.js", f"{sid}/summary", summary)
