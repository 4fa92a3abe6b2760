"""``analysis/report.html`` of a dead-features study: the fit, the agents, their training curves
and their SAEs' metrics. One file, plotly.js embedded, opens from disk without a network."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_bytes, read_json

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px} th,td{padding:3px 8px;border-bottom:1px solid #eee;
text-align:right} th{background:#f6f6f6;position:sticky;top:0} td.l,th.l{text-align:left}
.headline{font-size:1.1em;background:#f4f8ff;padding:.8em 1em;border-radius:6px}
.muted{color:#777} .scroll{overflow-x:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:1em}
"""


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(df: Any, left: tuple[str, ...] = ("agent", "run", "agent_dir")) -> str:
    head = "".join(
        f"<th class='{'l' if c in left else ''}'>{html.escape(str(c))}</th>" for c in df.columns
    )
    body = []
    for _, row in df.iterrows():
        cells = "".join(
            f"<td class='{'l' if c in left else ''}'>{_fmt(row[c])}</td>" for c in df.columns
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _tensorboard_scalars(logdir: Path, tags: tuple[str, ...]) -> dict[str, tuple[list, list]]:
    """Scalars from SB3's tensorboard logs (all event files under ``logdir``)."""
    out: dict[str, tuple[list, list]] = {}
    if not logdir.is_dir():
        return out
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:  # pragma: no cover
        return out
    for events in sorted({p.parent for p in logdir.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        try:
            acc.Reload()
        except Exception:  # a truncated event file from an interrupted run
            continue
        for tag in tags:
            if tag in acc.Tags().get("scalars", []):
                xs, ys = out.setdefault(tag, ([], []))
                for ev in acc.Scalars(tag):
                    xs.append(ev.step)
                    ys.append(ev.value)
    return out


def _training_history(sae_dir: Path) -> dict[str, tuple[list, list]]:
    """Loss-like curves from an SAE's ``training.json`` (a list of per-step records)."""
    p = sae_dir / "training.json"
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError:
        return {}
    hist = data.get("history", data) if isinstance(data, dict) else data
    if not isinstance(hist, list):
        return {}
    series: dict[str, tuple[list, list]] = {}
    for i, rec in enumerate(hist):
        if not isinstance(rec, dict):
            continue
        step = rec.get("step", i)
        for k, v in rec.items():
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                xs, ys = series.setdefault(k, ([], []))
                xs.append(step)
                ys.append(v)
    return series


def _firing_frequencies(sae_dir: Path) -> Any:
    """Sorted firing frequencies (descending) from ``feature_stats.safetensors``, or None."""
    p = sae_dir / "feature_stats.safetensors"
    if not p.is_file():
        return None
    from safetensors.numpy import load_file

    try:
        st = load_file(str(p))
    except Exception:
        return None
    if "firing_counts" not in st or "rows" not in st:
        return None
    import numpy as np

    rows = float(np.asarray(st["rows"]).ravel()[0])
    if rows <= 0:
        return None
    return np.sort(np.asarray(st["firing_counts"], dtype=np.float64))[::-1] / rows


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/analysis/report.html`` from the study's artifacts; returns its path."""
    import numpy as np
    import pandas as pd

    from rlsae.analysis.figures import curve_figure, figure_div, fit_figure, plotly_js_tag

    run_dir = Path(run_dir)
    info = read_json(run_dir / "run.json")
    analysis = run_dir / "analysis"
    csv = analysis / "agents.csv"
    if not csv.is_file():
        raise RlsaeError(f"{csv} not found; run the study first")
    df = pd.read_csv(csv)
    cfg = info.get("config", {})
    name = info.get("study", run_dir.name)
    parts: list[str] = []

    # headline and fit
    fit_path = analysis / "fit_live_vs_return.json"
    fit = read_json(fit_path) if fit_path.is_file() else None
    if fit:
        q, lin, sp = fit["quadratic"], fit["linear"], fit["spearman"]
        ci = q.get("vertex_ci") or {}
        vtx = (
            f"; vertex at {fit['x']} = {q['vertex_x']:.4g}"
            + (
                f" (95% bootstrap [{ci['low']:.4g}, {ci['high']:.4g}])"
                if ci.get("low") is not None
                else ""
            )
            if q.get("vertex_x") is not None
            else ""
        )
        parts.append(
            "<p class='headline'>"
            f"{fit['n']} agents. Quadratic fit of {html.escape(fit['y'])} on {html.escape(fit['x'])}: "
            f"R² = {q['r2']:.3f} (adjusted {q['adj_r2']:.3f}), F-test p = {q['f_pvalue']:.3g}{vtx}. "
            f"Linear: R² = {lin['r2']:.3f}, p = {lin['f_pvalue']:.3g}. "
            f"Spearman ρ = {sp['rho']:.3f} (p = {sp['pvalue']:.3g}). "
            "<span class='muted'>The poster: quadratic R² = 0.33, p = 0.015 over 24 agents.</span></p>"
        )
        fig = fit_figure(
            df[fit["x"]].to_numpy(float),
            df[fit["y"]].to_numpy(float),
            fit,
            x_label=f"{fit['x']} features",
            y_label=fit["y"],
            labels=df["agent"].astype(str).tolist(),
            title=f"{fit['y']} vs {fit['x']} features",
        )
        parts.append("<h2>Live features vs return</h2>" + figure_div(fig, "fit"))
    else:
        parts.append("<p class='headline'>No fit yet: fewer than 4 agents have finished.</p>")

    # the agents
    parts.append("<h2>Agents</h2>" + _table(df))

    # training curves, one figure per run: SB3's episode return and the checkpoints' evaluation
    curves = []
    runs = [r for r in df["run"].dropna().astype(str).unique() if r] if "run" in df.columns else []
    for run in runs:
        series: dict[str, tuple[list, list]] = {}
        tb = _tensorboard_scalars(
            run_dir / "agents" / run / "tensorboard", ("rollout/ep_rew_mean",)
        )
        if "rollout/ep_rew_mean" in tb:
            series["training episodes (rollout/ep_rew_mean)"] = tb["rollout/ep_rew_mean"]
        sub = df[df["run"].astype(str) == run]
        if "mean_return" in sub and "step" in sub:
            sub = sub.sort_values("step")
            series["evaluation of checkpoints (mean_return)"] = (
                sub["step"].tolist(),
                sub["mean_return"].tolist(),
            )
        if series:
            curves.append(
                figure_div(
                    curve_figure(
                        series, x_label="environment step", y_label="return", title=f"run {run}"
                    )
                )
            )
    if curves:
        parts.append("<h2>Training curves</h2><div class='grid'>" + "".join(curves) + "</div>")

    # SAE metrics: training curves and firing frequencies, every agent overlaid
    layer = cfg.get("recording", {}).get("layer", "")
    sae_cfg = cfg.get("sae", {})
    sae_name = f"{sae_cfg.get('arch', 'topk')}-{sae_cfg.get('d_sae')}" + (
        f"-k{sae_cfg.get('k')}" if sae_cfg.get("arch", "topk") == "topk" else ""
    )
    loss_series: dict[str, dict[str, tuple[list, list]]] = {}
    freq_series: dict[str, tuple[list, list]] = {}
    for agent in df["agent"].astype(str):
        sdir = run_dir / "saes" / agent / layer / sae_name
        for metric, xy in _training_history(sdir).items():
            loss_series.setdefault(metric, {})[agent] = xy
        freqs = _firing_frequencies(sdir)
        if freqs is not None:
            ranks = np.arange(1, freqs.size + 1)
            keep = freqs > 0
            freq_series[agent] = (ranks[keep].tolist(), freqs[keep].tolist())
    sae_figs = []
    preferred = [m for m in ("loss", "fvu", "l0", "dead") if m in loss_series]
    for metric in preferred or sorted(loss_series)[:4]:
        sae_figs.append(
            figure_div(
                curve_figure(
                    loss_series[metric],
                    x_label="step",
                    y_label=metric,
                    title=f"SAE training: {metric}",
                )
            )
        )
    if freq_series:
        f = curve_figure(
            freq_series,
            x_label="feature rank",
            y_label="firing frequency",
            title="Sorted firing frequency of live features",
        )
        f.update_yaxes(type="log")
        sae_figs.append(figure_div(f))
    cols = [
        c
        for c in (
            "agent",
            "mean_return",
            "live",
            "dead",
            "fvu",
            "explained_variance",
            "l0",
            "mse",
            "rows",
        )
        if c in df.columns
    ]
    cols += [c for c in df.columns if c.startswith("splice_")]
    parts.append(
        "<h2>SAE metrics</h2>"
        + _table(df[cols])
        + "<div class='grid'>"
        + "".join(sae_figs)
        + "</div>"
    )

    # config and provenance
    viewer = run_dir / "viewer" / "index.html"
    viewer_note = (
        ""
        if viewer.is_file()
        else (
            f" <span class='muted'>(not exported yet: <code>rlsae viewer export --run {html.escape(str(run_dir))}</code>)</span>"
        )
    )
    parts.insert(
        0,
        f"<p><a href='../viewer/index.html'>Feature viewer</a>{viewer_note} · "
        "<a href='agents.csv'>agents.csv</a> · <a href='fit_live_vs_return.json'>fit JSON</a></p>",
    )
    parts.append(
        "<h2>Study</h2><pre>"
        + html.escape(
            json.dumps(
                {
                    k: info.get(k)
                    for k in (
                        "study",
                        "source",
                        "config_hash",
                        "created",
                        "finished",
                        "git_commit",
                        "versions",
                    )
                },
                indent=1,
            )
        )
        + "\n"
        + html.escape(json.dumps(cfg, indent=1))
        + "</pre>"
    )
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(name)}: dead features vs return</title><style>{_CSS}</style>"
        f"{plotly_js_tag()}</head><body><h1>{html.escape(name)}: dead features vs agent return</h1>"
        + "\n".join(parts)
        + "</body></html>\n"
    )
    out = analysis / "report.html"
    atomic_write_bytes(out, page.encode())
    return out
