"""Viewer export at scale: a 16,384-feature TopK SAE on a synthetic language-model store
(random activations, documents of 256 tokens; no model, so no logit effects).

Measures, side by side in one run:
  * the per-feature scan (two encoder passes + top-N from distinct groups, histograms) against
    the floor of two bare ``sae.encode`` passes over the same store (``scan_ratio``);
  * the whole export (scan, decoder neighbours, one data file per feature);
  * in headless Chromium from file://, the time to open the feature browser of all 16,384
    features and to open one feature page (lazy JSONP load), to show the site stays responsive.

Prints a table and, as the last line, one JSON object. Never asserts on time.

    python benchmarks/viewer_export.py [--rows 32768] [--d-sae 16384]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _browser_helpers() -> tuple[Any, Any]:
    """``browser_page`` and ``poll`` of the viewer tests (headless Chromium via Playwright)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tests" / "viewer" / "viewer_browser.py"
    spec = importlib.util.spec_from_file_location("viewer_browser", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.browser_page, module.poll


def _build_run(args: argparse.Namespace, run: Path) -> tuple[Any, np.ndarray]:
    """A synthetic LM store (documents of 256 tokens) and an untrained TopK SAE on it; returns
    the SAE and the document of each row."""
    from rlsae.sae import SAE, ActivationWriter, SAEConfig

    g = torch.Generator().manual_seed(0)
    groups = np.repeat(np.arange(args.rows // 256 + 1), 256)[: args.rows]
    positions = np.arange(args.rows) % 256
    with ActivationWriter(
        run / "acts" / "synth" / "h", args.d_in, source="synth", hook="h", provider="lm"
    ) as w:
        for s in range(0, args.rows, 8192):
            n = min(8192, args.rows - s)
            ids = (np.arange(s, s + n) * 7919) % 5000
            ctx = {
                "document": groups[s : s + n],
                "position": positions[s : s + n],
                "token_id": ids,
                "token": [f" tok{i}" for i in ids],
            }
            w.append(torch.randn(n, args.d_in, generator=g), ctx)
    sae = SAE(SAEConfig(d_in=args.d_in, d_sae=args.d_sae, arch="topk", k=args.k), seed=0)
    sae.save(run / "saes" / "synth" / "h" / "topk")
    return sae, groups


def _browser_times(index: Path, live: int) -> dict[str, Any]:
    """Seconds to open the feature browser and one feature page in headless Chromium."""
    browser_page, poll = _browser_helpers()
    out: dict[str, Any] = {}
    with browser_page() as w:
        pg = w.page
        t0 = time.perf_counter()
        pg.goto(index.resolve().as_uri() + "#sae=s0&sort=density")
        pg.wait_for_selector("#feature-table")
        out["browser_open_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pg.evaluate(f"location.hash = '#sae=s0&f={live}'")
        poll(pg, "!!document.querySelector('#top-contexts')", 30)
        out["feature_open_s"] = time.perf_counter() - t0
        out["browser_errors"] = len(w.errors)
    return out


def _measure(args: argparse.Namespace, run: Path) -> dict[str, Any]:
    from rlsae.llm.viewer_source import viewer_source
    from rlsae.sae import ActivationStore
    from rlsae.viewer.export import export_site
    from rlsae.viewer.scan import ScanConfig, scan_features

    torch.manual_seed(0)
    sae, groups = _build_run(args, run)
    store = ActivationStore(run / "acts" / "synth" / "h")
    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(2):
            for x in store.iter_sequential(1024):
                sae.encode(x)
        floor = time.perf_counter() - t0
    t0 = time.perf_counter()
    scan = scan_features(sae, store, groups, ScanConfig(top=25))
    t_scan = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = export_site(run, top=25, sources=[viewer_source()])
    t_export = time.perf_counter() - t0
    site = index.parent
    files = [p for p in site.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    feat_sizes = [p.stat().st_size for p in (site / "data/saes/s0/features").iterdir()]
    live = int(np.flatnonzero(scan.firing_counts > 0)[0])
    browser = {} if args.no_browser else _browser_times(index, live)
    return {
        "rows": args.rows,
        "d_in": args.d_in,
        "d_sae": args.d_sae,
        "k": args.k,
        "encode_2pass_s": round(floor, 3),
        "scan_s": round(t_scan, 3),
        "scan_ratio": round(t_scan / floor, 3),
        "export_s": round(t_export, 3),
        "files": len(files),
        "site_mb": round(size / 1e6, 2),
        "feature_file_kb_median": round(float(np.median(feat_sizes)) / 1e3, 2),
        "live": int((scan.firing_counts > 0).sum()),
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in browser.items()},
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=32768)
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--d-sae", type=int, default=16384)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the run and site (path on stderr)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rlsae-viewer-bench-"))
    try:
        res = _measure(args, tmp / "run")
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
