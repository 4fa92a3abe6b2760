"""Export a run directory as a static feature viewer that opens from disk (file://).

The site is one ``index.html`` plus static JavaScript and CSS; every piece of data is a
JSONP-style ``.js`` file (``RLSAE.put(key, {...})``) that the page loads on demand by
``<script>`` injection, which works from file:// where ``fetch()`` does not, and unchanged on
any static host (GitHub Pages). Layout::

    viewer/index.html, static/{viewer.js,viewer.css[,plotly.min.js]}
    viewer/data/index.js                        run summary: study, agents table, SAEs
    viewer/data/saes/ID/summary.js              per-feature density, max, effect, labels
    viewer/data/saes/ID/features/N.js           one feature's page data (lazy)
    viewer/data/frames/STORE/*.png, *.gif       replayed agent frames and clips

Example::

    from rlsae.viewer.export import export_site
    site = export_site("runs/demo/atari")          # runs/demo/atari/viewer/index.html
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_dir, read_json

PKG = Path(__file__).resolve().parent


@dataclass
class ExportConfig:
    """What the viewer export computes; saved in the site as ``data/config.js``."""

    top: int = 25
    """Top-activating states/contexts per feature, each from a different episode/document."""
    batch_size: int = 1024
    """Rows encoded at a time in the passes over each activation store."""
    hist_bins: int = 30
    """Bins of each feature's activation histogram."""
    neighbours: int = 8
    """Most similar features by decoder cosine listed per feature."""
    context_before: int = 12
    """Tokens shown before the activating token (language models)."""
    context_after: int = 4
    """Tokens shown after it."""
    lm_intervals: tuple[tuple[float, float], ...] = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75))
    """Lower activation intervals (fractions of the feature's max) to sample contexts from."""
    samples_per_interval: int = 5
    """Contexts sampled from each interval."""
    logit_tokens: int = 10
    """Promoted and suppressed tokens listed per feature."""
    clip_before: int = 6
    """Frames before the state in each agent clip."""
    clip_after: int = 2
    """Frames after it."""
    frames: bool = True
    """Replay episodes for colour frames and clips (agents)."""
    effects: bool = True
    """Compute the 3×3 action-effect grid of each top state (agents; needs the agent)."""
    seed: int = 0
    """Seed of the interval sampling."""


def _jsonp(path: Path, key: str, obj: Any) -> None:
    """Write ``RLSAE.put(key, obj)``. ensure_ascii escapes every non-ASCII character (and
    U+2028/2029), so any string in the data stays inside its JS string literal."""
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"RLSAE.put({json.dumps(key)},{text});\n", encoding="ascii")


def _clean(o: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, str | int | float | bool) or o is None:
        return o
    return str(o)


def _r(x: float, sig: int = 5) -> float | None:
    """``x`` rounded to ``sig`` significant digits (None if not finite), for compact JSON."""
    x = float(x)
    return float(f"{x:.{sig}g}") if math.isfinite(x) else None


def find_saes(run_dir: Path) -> list[Path]:
    """Every SAE directory (``cfg.json`` + ``sae_weights.safetensors``) under ``saes/``."""
    root = run_dir / "saes"
    if not root.is_dir():
        return []
    return sorted(
        p.parent for p in root.rglob("cfg.json") if (p.parent / "sae_weights.safetensors").is_file()
    )


def _study(run_dir: Path, notes: list[str]) -> tuple[dict | None, dict | None]:
    """The agents table and the dead-vs-return fit from ``analysis/``, when present."""
    import pandas as pd

    table_path = run_dir / "analysis" / "agents.csv"
    if not table_path.is_file():
        return None, None
    try:
        df = pd.read_csv(table_path)
    except (ValueError, OSError) as e:
        raise RlsaeError(f"{table_path} cannot be read as CSV ({e})") from None
    table = {
        "columns": [str(c) for c in df.columns],
        "rows": _clean(df.astype(object).where(df.notna(), None).values.tolist()),
    }
    fit, xcol, ycol = None, None, None
    jsons = sorted((run_dir / "analysis").glob("*.json"))
    jsons.sort(key=lambda p: p.name != "fit_live_vs_return.json")  # the study's own fit first
    for p in jsons:
        try:
            d = read_json(p)
        except RlsaeError:
            continue
        if isinstance(d, dict) and "linear" in d and "quadratic" in d:
            fit = d
            xcol, ycol = d.get("x"), d.get("y")
            break
    xcol = (
        xcol
        if xcol in df.columns
        else next(
            (c for c in ("live", "live_features", "live_count", "n_live") if c in df.columns), None
        )
    )
    ycol = (
        ycol
        if ycol in df.columns
        else next((c for c in ("mean_return", "return_mean", "score") if c in df.columns), None)
    )
    if xcol is None or ycol is None:
        notes.append("analysis/agents.csv has no live-feature or mean-return column; no figure")
        return table, None
    x = pd.to_numeric(df[xcol], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(df[ycol], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if fit is None and ok.sum() >= 4 and np.ptp(x[ok]) > 0:
        from rlsae.analysis.fit import fit_xy

        fit = fit_xy(x[ok], y[ok], bootstrap=0)
    labels = df["agent"].astype(str).tolist() if "agent" in df.columns else None
    study: dict[str, Any] = {"x_label": xcol, "y_label": ycol, "x": x, "y": y, "labels": labels}
    if fit is not None and ok.any():
        lo, hi = float(x[ok].min()), float(x[ok].max())
        pad = 0.05 * ((hi - lo) or 1.0)
        grid = np.linspace(lo - pad, hi + pad, 120)
        study["grid"] = grid
        for name in ("linear", "quadratic"):
            part = fit.get(name) or {}
            coef = np.asarray(part.get("coef", []), dtype=float)
            if coef.size:
                study[name] = {
                    "curve": np.polynomial.polynomial.polyval(grid, coef),
                    "r2": part.get("r2"),
                    "p": part.get("f_pvalue"),
                    "coef": coef,
                }
        study["n"] = fit.get("n", int(ok.sum()))
        study["vertex_x"] = (fit.get("quadratic") or {}).get("vertex_x")
    return table, _clean(study)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit="row", file=sys.stderr, disable=not enabled, leave=False
    )


def _export_sae(
    run_dir: Path,
    sae_dir: Path,
    sid: str,
    site: Path,
    cfg: ExportConfig,
    by_rel: dict[str, str],
    shared: Any,
    progress: bool,
) -> dict[str, Any]:
    """Write one SAE's summary and feature files; return its index entry."""
    from rlsae.sae import ActivationStore, load_sae
    from rlsae.viewer import agent_data, lm_data
    from rlsae.viewer.scan import ScanConfig, decoder_neighbours, scan_features

    rel = sae_dir.relative_to(run_dir / "saes").as_posix()
    entry: dict[str, Any] = {"id": sid, "name": rel, "notes": []}
    notes = entry["notes"]
    sae = load_sae(sae_dir)
    sae.eval()
    entry.update(
        d_in=int(sae.cfg.d_in), d_sae=int(sae.cfg.d_sae), arch=sae.cfg.arch,
        k=int(sae.cfg.k) if sae.cfg.arch == "topk" else None, tied=bool(sae.cfg.tied),
    )  # fmt: skip
    if (sae_dir / "training.json").is_file():
        try:
            hist = read_json(sae_dir / "training.json")
            entry["training"] = {
                k: hist[k]
                for k in ("steps", "rows_seen", "final")
                if isinstance(hist, dict) and k in hist
            }
        except RlsaeError:
            notes.append("training.json is unreadable")
    store_dir = run_dir / "acts" / Path(rel).parent
    if not (store_dir / "meta.json").is_file():
        entry["kind"] = "none"
        notes.append(f"no activation store at acts/{Path(rel).parent.as_posix()}; no feature pages")
        return entry
    store = ActivationStore(store_dir)
    if store.d_in != sae.cfg.d_in:
        raise RlsaeError(
            f"SAE {sae_dir} reads d_in={sae.cfg.d_in} but the store {store_dir} has d_in={store.d_in}"
        )
    kind = {"atari": "agent", "lm": "lm"}.get(store.provider, "generic")
    entry.update(kind=kind, source=store.source, hook=store.hook, store=Path(rel).parent.as_posix())
    ctx = store.context()
    gcol = {"agent": "episode", "lm": "document"}.get(kind)
    groups = ctx[gcol].to_numpy(dtype=np.int64) if ctx is not None and gcol in ctx.columns else None
    scfg = ScanConfig(
        top=cfg.top, batch_size=cfg.batch_size, hist_bins=cfg.hist_bins,
        intervals=cfg.lm_intervals if kind == "lm" else (),
        samples_per_interval=cfg.samples_per_interval, neighbours=cfg.neighbours, seed=cfg.seed,
    )  # fmt: skip
    with _progress(2 * store.rows, f"scan {rel}", progress) as bar:
        scan = scan_features(sae, store, groups, scfg, bar.update)
    entry["metrics"] = {k: _r(v) if isinstance(v, float) else v for k, v in scan.metrics.items()}
    f_count = int(sae.cfg.d_sae)
    nb_idx, nb_cos = decoder_neighbours(sae.W_dec, cfg.neighbours)
    live = ~scan.dead
    # effect size: the largest norm of the feature's contribution to the reconstruction
    effect = scan.max_act * sae.W_dec.detach().float().norm(dim=1).numpy()
    entry["effect_label"] = "max activation × decoder norm"

    per_row: dict[tuple[int, int], dict[str, Any]] = {}
    page_extra: dict[int, dict[str, Any]] = {}
    labels: list[str | None] = [None] * f_count
    top_rows = scan.top_rows

    if kind == "lm":
        docs = (
            ctx["document"].to_numpy(dtype=np.int64)
            if ctx is not None and "document" in ctx.columns
            else None
        )
        positions = (
            ctx["position"].to_numpy() if ctx is not None and "position" in ctx.columns else None
        )
        model_ref = lm_data.find_model_dir(run_dir, store.source, store.extra)
        model, tok = None, None
        if model_ref is not None:
            try:
                from transformers.utils import logging as hf_logging

                from rlsae.llm.models import load_model

                bars = hf_logging.is_progress_bar_enabled()
                if not progress:
                    hf_logging.disable_progress_bar()
                try:
                    model, tok = load_model(model_ref)
                finally:
                    if bars:
                        hf_logging.enable_progress_bar()
            except (RlsaeError, ImportError, OSError) as e:
                notes.append(
                    f"model {model_ref} unavailable ({str(e).splitlines()[0][:200]}); no promoted/suppressed tokens"
                )
        else:
            notes.append("no model recorded for this store; no promoted/suppressed tokens")
        tokens = lm_data.token_texts(ctx, tok)
        contexts = lm_data.build_contexts(
            sae, store, scan, docs, tokens, cfg.context_before, cfg.context_after, cfg.batch_size
        )
        for (f, r), toks in contexts.items():
            per_row[(f, r)] = {
                "tokens": toks,
                "doc": int(docs[r]) if docs is not None else None,
                "pos": int(positions[r]) if positions is not None else None,
            }
        w_u = lm_data.unembedding(model) if model is not None else None
        if w_u is not None and w_u.shape[1] == sae.cfg.d_in:
            for f, lg in enumerate(lm_data.logit_effects(sae.W_dec, w_u, tok, cfg.logit_tokens)):
                page_extra.setdefault(f, {})["logits"] = _clean(lg)
            entry["unembedding"] = True
        elif w_u is not None:
            notes.append(
                f"unembedding width {w_u.shape[1]} != SAE d_in {sae.cfg.d_in}; no logit effects"
            )
        expl = lm_data.read_explanations(sae_dir)
        for f, e in expl.items():
            if 0 <= f < f_count:
                keep = ("explanation", "utility", "method")
                page_extra.setdefault(f, {})["explanation"] = _clean(
                    {k: e[k] for k in keep if k in e}
                )
                labels[f] = str(e.get("explanation", ""))[:120]
        pairs = lm_data.shared_pairs(shared, rel, store.hook, store.source, by_rel)
        for f, p in pairs.items():
            if 0 <= f < f_count:
                page_extra.setdefault(f, {})["pairs"] = p
        entry["explained"] = len(expl)
        entry["shared"] = len(pairs)

    elif kind == "agent":
        if ctx is None or not {"episode", "step"} <= set(ctx.columns):
            notes.append("the store has no episode/step context; no frames")
        else:
            eps = ctx["episode"].to_numpy(dtype=np.int64)
            steps = ctx["step"].to_numpy(dtype=np.int64)
            clip = (cfg.clip_before, cfg.clip_after)
            acts_clip = agent_data.clip_activations(
                sae, store, scan, eps, steps, clip, cfg.batch_size
            )
            obs_at: dict[tuple[int, int], Any] = {}
            names: dict[tuple[int, int], tuple[str, str]] = {}
            frame_dir = site / "data" / "frames" / _safe(entry["store"])
            if cfg.frames:
                try:
                    names, obs_at, fnotes = agent_data.write_frames(
                        store,
                        agent_data.group_requests(scan, eps, steps),
                        clip,
                        frame_dir,
                        progress=progress,
                    )
                    notes.extend(fnotes)
                except (ImportError, RlsaeError) as e:
                    notes.append(f"frames unavailable ({str(e).splitlines()[0][:200]})")
            grids: dict[tuple[int, int], Any] = {}
            agent_dir = agent_data.find_agent_dir(run_dir, store.source, store.extra)
            if cfg.effects and agent_dir is not None and obs_at:
                states: dict[int, list] = {}
                for f in range(f_count):
                    for r in top_rows[f][top_rows[f] >= 0]:
                        key = (int(eps[r]), int(steps[r]))
                        if key in obs_at:
                            states.setdefault(f, []).append((int(r), obs_at[key]))
                try:
                    layer = str(store.extra.get("layer") or sae.cfg.hook_name or store.hook)
                    grids = agent_data.effect_grids(agent_dir, sae, layer, states, progress)
                except (ImportError, RlsaeError) as e:
                    notes.append(f"action effects unavailable ({str(e).splitlines()[0][:200]})")
            elif cfg.effects and agent_dir is None:
                notes.append("agent not found; no action-effect grids")
            if grids:
                effect = np.zeros(f_count)
                for (f, _), g in grids.items():
                    effect[f] += np.abs(np.asarray(g)).max()
                n_states = np.maximum((top_rows >= 0).sum(1), 1)
                effect = effect / n_states
                entry["effect_label"] = "mean max |Δ| of the action-effect grid over top states"
            for f in range(f_count):
                for r in top_rows[f][top_rows[f] >= 0]:
                    r = int(r)
                    key = (int(eps[r]), int(steps[r]))
                    d: dict[str, Any] = {
                        "episode": key[0],
                        "step": key[1],
                        "clip_acts": acts_clip.get((f, r)),
                    }
                    if key in names:
                        d["frame"] = f"data/frames/{_safe(entry['store'])}/{names[key][0]}"
                        d["clip"] = f"data/frames/{_safe(entry['store'])}/{names[key][1]}"
                    if (f, r) in grids:
                        d["grid"] = grids[(f, r)]
                    if "action" in ctx.columns:
                        d["action"] = int(ctx["action"].iat[r])
                    per_row[(f, r)] = d
            entry["clip"] = {"before": cfg.clip_before, "after": cfg.clip_after}
            entry["actions"] = _action_names(store)
    else:
        cols = [c for c in (ctx.columns if ctx is not None else []) if c not in ("q_values",)][:8]
        for f in range(f_count):
            for r in top_rows[f][top_rows[f] >= 0]:
                per_row[(f, int(r))] = (
                    {"context": _clean({c: ctx[c].iat[int(r)] for c in cols})} if cols else {}
                )

    density = scan.density
    feat_dir = site / "data" / "saes" / sid / "features"
    for f in range(f_count):
        top = []
        for v, r in zip(scan.top_vals[f], top_rows[f], strict=False):
            if r < 0:
                continue
            top.append({"row": int(r), "act": _r(v, 6), **per_row.get((f, int(r)), {})})
        page: dict[str, Any] = {
            "i": f,
            "dead": bool(scan.dead[f]),
            "count": int(scan.firing_counts[f]),
            "density": float(density[f]),
            "max": _r(scan.max_act[f]),
            "mean": _r(scan.mean_act[f]),
            "effect": _r(effect[f]),
            "hist": [int(c) for c in scan.hist[f]],
            "neighbours": [[int(j), _r(c, 4)] for j, c in zip(nb_idx[f], nb_cos[f], strict=False)],
            "top": top,
        }
        if kind == "lm" and live[f]:
            page["intervals"] = []
            for j, (lo, hi) in enumerate(cfg.lm_intervals):
                samples = []
                for v, r in zip(scan.interval_vals[f, j], scan.interval_rows[f, j], strict=False):
                    if r >= 0:
                        samples.append(
                            {"row": int(r), "act": _r(v, 6), **per_row.get((f, int(r)), {})}
                        )
                page["intervals"].append({"lo": lo, "hi": hi, "samples": samples})
        page.update(page_extra.get(f, {}))
        _jsonp(feat_dir / f"{f}.js", f"{sid}/{f}", page)  # built from plain, finite values
    summary = {
        "id": sid,
        "name": rel,
        "kind": kind,
        "d_sae": f_count,
        "rows": scan.rows,
        "density": [float(f"{d:.4g}") for d in density],
        "max": [_r(v, 4) for v in scan.max_act],
        "effect": [_r(v, 4) for v in effect],
        "effect_label": entry["effect_label"],
        "labels": labels if any(labels) else None,
    }
    _jsonp(site / "data" / "saes" / sid / "summary.js", f"{sid}/summary", _clean(summary))
    return entry


def _action_names(store: Any) -> list[str] | None:
    try:
        from rlsae.agents.envs import action_meanings

        return [str(n) for n in action_meanings()]
    except Exception:  # noqa: BLE001 - names are a nicety; the page falls back to numbers
        return None


def _reports(run_dir: Path, out: Path) -> list[list[str]]:
    """[title, relative link] of the run's HTML reports, when the site sits inside the run (a
    site copied elsewhere, e.g. to GitHub Pages, then simply has no such links)."""
    if run_dir.resolve() not in out.resolve().parents:
        return []
    found = []
    for p in sorted((run_dir / "analysis").glob("*.html")):
        found.append([p.stem.replace("_", " "), os.path.relpath(p, out).replace(os.sep, "/")])
    return found


def _safe(name: str) -> str:
    """A folder name for a store: its path made URL-safe, plus a short hash of the real path so
    that two stores never share a folder (``a/b`` and ``a_b`` would otherwise collide)."""
    import hashlib

    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


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
    progress: bool = False,
) -> Path:
    """Export the static viewer of ``run_dir`` into ``out_dir`` (default ``run_dir/viewer``).

    Reads what the run holds (SAEs under ``saes/`` with their stores under ``acts/``,
    ``analysis/agents.csv`` and the fit JSON, ``episodes.json`` of agent stores, explanations and
    ``analysis/llm_shared_features.json``) and skips what it lacks, saying so on the index. The
    site is written to a temporary sibling and renamed into place, replacing an older export
    only once the new one is complete. Returns the path of ``index.html``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RlsaeError(f"run directory {run_dir} not found")
    cfg = config or ExportConfig()
    cfg.top = int(top) if config is None else cfg.top
    if cfg.top < 1:
        raise RlsaeError(f"--top must be at least 1, got {cfg.top}")
    out = Path(out_dir) if out_dir is not None else run_dir / "viewer"
    ro, rr = out.resolve(), run_dir.resolve()
    if (
        ro == rr
        or ro in rr.parents
        or any(
            (rr / part) == ro or (rr / part) in ro.parents
            for part in ("saes", "acts", "agents", "analysis", "models")
        )
    ):
        raise RlsaeError(f"--out {out} would overwrite the run's own files; choose another folder")
    if out.exists() and not (out / "index.html").is_file() and any(out.iterdir()):
        raise RlsaeError(f"{out} exists and is not a viewer export; choose another --out")
    sae_dirs = find_saes(run_dir)
    notes: list[str] = []
    table, study = _study(run_dir, notes)
    if not sae_dirs and table is None:
        raise RlsaeError(
            f"{run_dir} holds no SAEs (saes/) and no analysis (analysis/agents.csv); nothing to export"
        )
    shared = None
    shared_path = run_dir / "analysis" / "llm_shared_features.json"
    if shared_path.is_file():
        shared = read_json(shared_path)
    by_rel = {d.relative_to(run_dir / "saes").as_posix(): f"s{i}" for i, d in enumerate(sae_dirs)}
    run_info = None
    if (run_dir / "run.json").is_file():
        try:
            run_info = read_json(run_dir / "run.json")
        except RlsaeError:
            notes.append("run.json is unreadable")
    with atomic_dir(out, overwrite=True) as site:
        entries = [
            _export_sae(
                run_dir,
                d,
                by_rel[d.relative_to(run_dir / "saes").as_posix()],
                site,
                cfg,
                by_rel,
                shared,
                progress,
            )
            for d in sae_dirs
        ]
        index = {
            "run": run_dir.resolve().name,
            "run_info": {
                k: run_info[k]
                for k in ("name", "preset", "created", "git_commit")
                if isinstance(run_info, dict) and k in run_info
            },
            "saes": entries,
            "agents_table": table,
            "study": study,
            "notes": notes,
            "reports": _reports(run_dir, out),
            "config": asdict(cfg),
        }
        _jsonp(site / "data" / "index.js", "index", _clean(index))
        _copy_assets(site, with_plotly=study is not None and "grid" in (study or {}))
    return out / "index.html"
