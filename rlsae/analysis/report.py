"""The studies' HTML reports and the helpers they share.

Every page is one file with plotly.js embedded (no CDN), so it opens from disk without a
network. The shared helpers: :func:`esc` (escape any text a run holds: agent names,
explanations), :func:`num` (one number format), :func:`html_table`, :func:`page` (the shell:
title, style, plotly.js) and :func:`write_page`.

* :func:`write_atari_report`: ``analysis/report.html`` of the dead-features study (the fit, the
  agents, their training curves, their SAEs' metrics).
* :func:`write_llm_report`: ``analysis/report.html`` of one model of the language-model study
  (RLHF, Tables 3 and 4, the divergence figure, MMCS, the shared features and explanations),
  from typed inputs: the caller draws the divergence figure.
* :func:`write_utility_html`: ``analysis/utility.html`` (Tables 3 and 4 and every explanation).
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlsae.analysis.checkpoint_diffs import checkpoint_diff_section
from rlsae.analysis.figures import (
    curve_figure,
    figure_div,
    fit_figure,
    plotly_js_tag,
    prefix_figures,
)
from rlsae.analysis.fit import FitResult
from rlsae.analysis.html import esc, html_table, num
from rlsae.analysis.mmcs import SharedFeatures
from rlsae.analysis.report_scores import score_section
from rlsae.analysis.report_times import time_section
from rlsae.analysis.steer_table import STEER_FILE, SteerTable
from rlsae.analysis.utility import UtilityTables
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_bytes, read_json

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:.6em 0} th,td{padding:3px 8px;
border-bottom:1px solid #eee;text-align:right} th{background:#f6f6f6;position:sticky;top:0}
td.l,th.l{text-align:left}
.headline{font-size:1.1em;background:#f4f8ff;padding:.8em 1em;border-radius:6px}
.muted{color:#777} .scroll{overflow-x:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:1em}
"""

# ----------------------------------------------------------------------------- shared helpers


def page(title: str, body: str, *, plotly: bool = True, css: str = CSS) -> str:
    """A whole page: ``title`` (escaped), the style, plotly.js embedded when ``plotly``, and
    ``body`` (ready HTML)."""
    js = plotly_js_tag() if plotly else ""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>{css}</style>{js}</head><body>\n"
        f"{body}\n</body></html>\n"
    )


def write_page(path: str | os.PathLike, title: str, body: str, *, plotly: bool = True) -> Path:
    """Write :func:`page` to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write_bytes(path, page(title, body, plotly=plotly).encode())
    return path


def _df_table(df: Any, left: Collection[str] = ("agent", "run", "agent_dir")) -> str:
    rows = ([num(row[c]) for c in df.columns] for _, row in df.iterrows())
    return html_table([str(c) for c in df.columns], rows, left, scroll=True)


# ----------------------------------------------------------------------------- Atari study


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
    """Loss-like curves from an SAE's ``training.json``; none when it is missing or unreadable."""
    from rlsae.sae.train import TrainingRecord

    if not (sae_dir / "training.json").is_file():
        return {}
    try:
        history = TrainingRecord.read(sae_dir / "training.json").history
    except RlsaeError:  # another version or a damaged file: the report leaves the curves out
        return {}
    series: dict[str, tuple[list, list]] = {}
    for i, rec in enumerate(history):
        step = rec.get("step", i)
        for k, v in rec.items():
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                xs, ys = series.setdefault(k, ([], []))
                xs.append(step)
                ys.append(v)
    return series


def _firing_frequencies(sae_dir: Path) -> Any:
    """Sorted firing frequencies (descending) from ``feature_stats.safetensors``, or None."""
    from rlsae.sae.metrics import FeatureStats

    if not (sae_dir / "feature_stats.safetensors").is_file():
        return None
    try:
        stats = FeatureStats.read(sae_dir)
    except RlsaeError:
        return None
    if stats.rows <= 0:
        return None
    counts = stats.firing_counts.double().sort(descending=True).values
    return (counts / stats.rows).numpy()


def _fit_headline(fit: FitResult) -> str:
    q, lin, sp = fit.quadratic, fit.linear, fit.spearman
    ci = q.vertex_ci
    vtx = ""
    if q.vertex_x is not None:
        vtx = f"; vertex at {esc(fit.x)} = {q.vertex_x:.4g}"
        if ci is not None and ci.low is not None and ci.high is not None:
            vtx += f" ({ci.level:.0%} bootstrap [{ci.low:.4g}, {ci.high:.4g}])"
    exact = " (an exact fit: F is infinite)" if q.exact else ""
    return (
        "<p class='headline'>"
        f"{fit.n} agents. Quadratic fit of {esc(fit.y)} on {esc(fit.x)}: "
        f"R² = {num(q.r2, '.3f', 'n/a')} (adjusted {num(q.adj_r2, '.3f', 'n/a')}), "
        f"F-test p = {num(q.f_pvalue, '.3g', 'n/a')}{exact}{vtx}. "
        f"Linear: R² = {num(lin.r2, '.3f', 'n/a')}, p = {num(lin.f_pvalue, '.3g', 'n/a')}. "
        f"Spearman ρ = {num(sp.rho, '.3f', 'n/a')} (p = {num(sp.pvalue, '.3g', 'n/a')}). "
        "<span class='muted'>The poster: quadratic R² = 0.33, p = 0.015 over 24 agents.</span></p>"
    )


def _fit_section(
    fit: FitResult | None,
    df: Any,
    heading: str = "Live features vs return",
    unit: str = " features",
) -> str:
    if fit is None:
        return "<p class='headline'>No fit yet: fewer than 4 agents have finished.</p>"
    df = df[df[fit.x].notna()]
    fig = fit_figure(
        df[fit.x].to_numpy(float),
        df[fit.y].to_numpy(float),
        fit,
        x_label=f"{fit.x}{unit}",
        y_label=fit.y,
        labels=df["agent"].astype(str).tolist(),
        title=f"{fit.y} vs {fit.x}{unit}",
    )
    div = figure_div(fig, "fit" if fit.x != "concept_coverage" else "fit-coverage")
    return _fit_headline(fit) + f"<h2>{esc(heading)}</h2>" + div


SKILL_FLOOR = 0.1
"""Human-normalised score below which an agent counts as no better than random play (within a
tenth of the random-to-human gap: in Ms. Pac-Man, below about 972 points; random scores 307)."""
POSTER_COMMAND = "rlsae dqn import --from dqns --out runs/poster/agents"


def skill_statement(df: Any) -> str:
    """What the agents' scores say about the fit, in words: their human-normalised range and,
    when every agent is below :data:`SKILL_FLOOR`, that the population is no better than random
    (its fit then says nothing about skill), naming how to study the poster's own agents."""
    if "human_normalized" not in df.columns or df["human_normalized"].isna().all():
        return ""
    hn = df["human_normalized"].astype(float)
    ret = df["mean_return"].astype(float) if "mean_return" in df.columns else None
    span = f"{ret.min():.0f}–{ret.max():.0f} points, " if ret is not None else ""
    text = (
        f"The agents score {span}human-normalised {hn.min():.2f} to {hn.max():.2f} "
        "(0 is random play, 1 a human player)."
    )
    if bool((hn < SKILL_FLOOR).all()):
        text += (
            f" <b>This population is no better than random</b> (every agent below "
            f"{SKILL_FLOOR} human-normalised), so its fit says nothing about how live features "
            "relate to skill. To test the poster's claim, import its trained agents "
            f"(<code>{esc(POSTER_COMMAND)}</code>, then a study over "
            "<code>population.agents: [runs/poster/agents/*]</code>; see "
            "docs/dead-features.md)."
        )
    return f"<p class='headline'>{text}</p>"


def _coverage_section(path: Path, df: Any) -> str:
    """The fit of return on the SAEs' concept coverage, when the study made one."""
    if not path.is_file():
        return ""
    return _fit_section(FitResult.read(path), df, "Concept coverage vs return", unit="")


def _training_curves(run_dir: Path, df: Any) -> str:
    """One figure per run: SB3's episode return and the checkpoints' evaluation."""
    curves = []
    runs = [r for r in df["run"].dropna().astype(str).unique() if r] if "run" in df.columns else []
    for run in runs:
        series: dict[str, tuple[list, list]] = {}
        tag = "rollout/ep_rew_mean"
        tb = _tensorboard_scalars(run_dir / "agents" / run / "tensorboard", (tag,))
        if tag in tb:
            series[f"training episodes ({tag})"] = tb[tag]
        sub = df[df["run"].astype(str) == run]
        if "mean_return" in sub and "step" in sub:
            sub = sub.sort_values("step")
            series["evaluation of checkpoints (mean_return)"] = (
                sub["step"].tolist(),
                sub["mean_return"].tolist(),
            )
        if series:
            fig = curve_figure(
                series, x_label="environment step", y_label="return", title=f"run {run}"
            )
            curves.append(figure_div(fig))
    if not curves:
        return ""
    return "<h2>Training curves</h2><div class='grid'>" + "".join(curves) + "</div>"


def _agent_sae(run_dir: Path, agent: str) -> Path | None:
    """The agent's SAE: the first directory under ``saes/AGENT/`` holding a ``cfg.json``."""
    found = sorted((run_dir / "saes" / agent).glob("**/cfg.json"))
    return found[0].parent if found else None


def _sae_figures(run_dir: Path, df: Any) -> list[str]:
    """SAE training curves and sorted firing frequencies, every agent overlaid."""
    import numpy as np

    loss_series: dict[str, dict[str, tuple[list, list]]] = {}
    freq_series: dict[str, tuple[list, list]] = {}
    for agent in df["agent"].astype(str):
        sdir = _agent_sae(run_dir, agent)
        if sdir is None:
            continue
        for metric, xy in _training_history(sdir).items():
            loss_series.setdefault(metric, {})[agent] = xy
        freqs = _firing_frequencies(sdir)
        if freqs is not None:
            ranks = np.arange(1, freqs.size + 1)
            keep = freqs > 0
            freq_series[agent] = (ranks[keep].tolist(), freqs[keep].tolist())
    figs = []
    preferred = [m for m in ("loss", "fvu", "l0", "dead") if m in loss_series]
    for metric in preferred or sorted(loss_series)[:4]:
        fig = curve_figure(
            loss_series[metric], x_label="step", y_label=metric, title=f"SAE training: {metric}"
        )
        figs.append(figure_div(fig))
    if freq_series:
        f = curve_figure(
            freq_series,
            x_label="feature rank",
            y_label="firing frequency",
            title="Sorted firing frequency of live features",
        )
        f.update_yaxes(type="log")
        figs.append(figure_div(f))
    return figs


_SAE_COLUMNS = ("agent", "mean_return", "live", "dead", "fvu", "explained_variance", "l0")


def _sae_section(run_dir: Path, df: Any) -> str:
    cols = [c for c in (*_SAE_COLUMNS, "mse", "rows") if c in df.columns]
    cols += [c for c in df.columns if c.startswith("splice_")]
    figs = _sae_figures(run_dir, df)
    return (
        "<h2>SAE metrics</h2>" + _df_table(df[cols]) + "<div class='grid'>" + "".join(figs)
    ) + "</div>"


def _links(run_dir: Path) -> str:
    note = ""
    if not (run_dir / "viewer" / "index.html").is_file():
        note = (
            " <span class='muted'>(not exported yet: "
            f"<code>rlsae viewer export --run {esc(run_dir)}</code>)</span>"
        )
    return (
        f"<p><a href='../viewer/index.html'>Feature viewer</a>{note} · "
        "<a href='agents.csv'>agents.csv</a> · <a href='fit_live_vs_return.json'>fit JSON</a></p>"
    )


def _prefix_section(path: Path) -> str:
    """A Matryoshka study's FVU and spliced return against the prefix, when it made them."""
    import pandas as pd

    if not path.is_file():
        return ""
    rows = pd.read_csv(path).to_dict("records")
    figs = "".join(figure_div(f) for f in prefix_figures(rows))
    return f"<h2>Matryoshka prefixes</h2><div class='grid'>{figs}</div>"


_RUN_KEYS = ("study", "source", "config_hash", "created", "finished", "git_commit", "versions")


def _study_section(info: Mapping[str, Any]) -> str:
    head = json.dumps({k: info.get(k) for k in _RUN_KEYS}, indent=1)
    cfg = json.dumps(info.get("config", {}), indent=1)
    return f"<h2>Study</h2><pre>{esc(head)}\n{esc(cfg)}</pre>"


def write_atari_report(run_dir: str | os.PathLike) -> Path:
    """Write ``run_dir/analysis/report.html`` of a dead-features study from its artifacts
    (``run.json``, ``analysis/agents.csv``, ``analysis/fit_live_vs_return.json``, the runs'
    tensorboard logs under ``agents/RUN/tensorboard``, and each agent's SAE under
    ``saes/AGENT/``: its ``training.json`` and ``feature_stats.safetensors``)."""
    import pandas as pd

    run_dir = Path(run_dir)
    info = read_json(run_dir / "run.json")
    analysis = run_dir / "analysis"
    csv = analysis / "agents.csv"
    if not csv.is_file():
        raise RlsaeError(f"{csv} not found; run the study first")
    df = pd.read_csv(csv)
    fit_path = analysis / "fit_live_vs_return.json"
    fit = FitResult.read(fit_path) if fit_path.is_file() else None
    parts = [
        _links(run_dir),
        skill_statement(df),
        score_section(df),
        _fit_section(fit, df),
        _coverage_section(analysis / "fit_coverage_vs_return.json", df),
        "<h2>Agents</h2>" + _df_table(df),
        _training_curves(run_dir, df),
        _sae_section(run_dir, df),
        _prefix_section(analysis / "prefixes.csv"),
        checkpoint_diff_section(run_dir),
        time_section(analysis / "stage_times.csv"),
        _study_section(info),
    ]
    name = str(info.get("study", run_dir.name))
    body = f"<h1>{esc(name)}: dead features vs agent return</h1>" + "\n".join(parts)
    return write_page(analysis / "report.html", f"{name}: dead features vs return", body)


# ----------------------------------------------------------------------------- LM study


@dataclass
class RLHFSummary:
    """What the LM report says of the RLHF run (None where the run did not record it)."""

    reward_first: float | None = None
    """Mean reward of the first batch."""
    reward_last: float | None = None
    """Mean reward of the last batch."""
    steps: int | None = None
    """Optimisation steps."""
    kl_last: float | None = None
    """KL to the reference model at the end."""


def _tables_3_4(util: UtilityTables) -> str:
    t3, t4 = util.table3, util.table4

    def pair(values: Mapping[str, Any], attr: str, spec: str = ".1f") -> str:
        cells = (getattr(values[m], attr) if m in values else None for m in ("base", "tuned"))
        return "".join(f"<td>{num(v, spec, '–')}</td>" for v in cells)

    return (
        "<h2>Tables 3 and 4: utility of features and of completions</h2>"
        "<table><tr><th class='l'></th><th>M_base</th><th>M_RLHF</th></tr>"
        f"<tr><td class='l'>summed |utility| of the top-{esc(util.k)} shared features' "
        f"explanations</td>{pair(t3, 'score')}</tr>"
        f"<tr><td class='l'>aggregate |utility| of completions</td>"
        f"{pair(t4, 'aggregate_abs_utility')}</tr>"
        f"<tr><td class='l'>mean reward of completions</td>{pair(t4, 'mean_reward', '.3f')}</tr>"
        + _scored_row(util, pair)
        + "</table>"
        + _scorer_note(util)
    )


_SCORES = ("detection", "fuzzing", "simulation")
"""The held-out scores of an explanation (columns shown when any feature has one)."""


def _is_scored(row: Any) -> bool:
    return any(getattr(row, m) is not None for m in _SCORES)


def _scored_row(util: UtilityTables, pair: Any) -> str:
    """Table 3 over the explanations whose detection score reaches the threshold."""
    if util.score_threshold is None:
        return ""
    n = sum(v.features for v in util.table3_scored.values())
    total = sum(util.table3[m].features for m in util.table3_scored if m in util.table3)
    return (
        f"<tr><td class='l'>the same, over explanations with detection ≥ "
        f"{util.score_threshold:g} only ({n} of {total})</td>"
        f"{pair(util.table3_scored, 'score')}</tr>"
    )


def _scorer_note(util: UtilityTables) -> str:
    if not util.scorer:
        return ""
    return f"<p class='muted'>Explanations scored on held-out contexts by {esc(util.scorer)}.</p>"


def _mmcs_table(shared: SharedFeatures) -> str:
    rows = []
    for entry in shared.layers:
        for src, m in entry.models.items():
            rows.append(
                [str(entry.layer), esc(src), str(m.d_sae_a), str(m.d_sae_b)]
                + [num(m.mmcs_ab, ".4f"), num(m.mmcs_ba, ".4f")]
            )
        bt = entry.base_vs_tuned
        if bt is not None:
            rows.append(
                [str(entry.layer), "base small ↔ tuned small", "", ""]
                + [num(bt.mmcs_ab, ".4f"), num(bt.mmcs_ba, ".4f")]
            )
    heads = ["layer", "model", "d_sae small", "d_sae large", "MMCS small→large"]
    return "<h2>SAE pairs: MMCS(small, large)</h2>" + html_table(
        [*heads, "MMCS large→small"], rows, {"model"}
    )


def _explanations(shared: SharedFeatures, util: UtilityTables) -> str:
    parts = ["<h2>Top shared features and their explanations</h2>"]
    for src, layers in util.features.items():
        for layer, scored in layers.items():
            pair = shared.layer(int(layer)).models.get(src)
            cos = {r.feature: r.cosine for r in pair.top_k_utility} if pair else {}
            methods = _SCORES if any(_is_scored(r) for r in scored) else ()
            rows = [
                [str(r.feature), num(cos.get(r.feature), ".3f", "nan")]
                + [num(r.utility, ".2f")]
                + [num(getattr(r, m), ".2f", "–") for m in methods]
                + [esc(r.explanation)]
                for r in scored
            ]
            heads = ["feature", "max cos", "|utility|", *methods, "explanation"]
            parts.append(f"<h3>{esc(src)}, layer {esc(layer)}</h3>")
            parts.append(html_table(heads, rows, {"explanation"}))
    return "".join(parts)


def write_llm_report(
    path: str | os.PathLike,
    *,
    model: str,
    rlhf: RLHFSummary,
    shared: SharedFeatures,
    utility: UtilityTables,
    divergence_figure: Any | None = None,
) -> Path:
    """``analysis/report.html`` of one model of the LM study: RLHF, Tables 3 and 4, the layer
    divergence figure (a plotly figure the caller draws; omitted when None), MMCS per SAE pair,
    and the shared features with their explanations. Returns the path."""
    r = rlhf
    body = [
        f"<h1>Implicit reward model of {esc(model)}</h1>",
        "<p><a href='../viewer/index.html'>feature viewer</a> · "
        "<a href='utility.html'>utility tables</a> · <a href='divergence.html'>divergence</a></p>",
        "<h2>RLHF</h2>",
        f"<p>mean reward {num(r.reward_first, '.3f', '–')} → {num(r.reward_last, '.3f', '–')}"
        f" over {esc(r.steps)} steps (final KL {num(r.kl_last, '.3f', '–')}).</p>",
        _tables_3_4(utility),
    ]
    if divergence_figure is not None:
        body.append("<h2>Layer divergence (Figure 3)</h2>" + figure_div(divergence_figure))
    body += [_mmcs_table(shared), _explanations(shared, utility)]
    steer = Path(path).parent / STEER_FILE  # the study's steer stage, when on, runs before
    if steer.is_file():
        body.append(SteerTable.read(steer).html())
    # the diff stage's section, when on (imported here: it reads crosscoders, which load torch)
    from rlsae.analysis.crosscoder import crosscoder_section

    body.append(crosscoder_section(Path(path).parent.parent))
    return write_page(path, "rlsae: implicit reward model", "\n".join(body))


def write_utility_html(result: UtilityTables, path: str | os.PathLike) -> Path:
    """``analysis/utility.html``: Tables 3 and 4 and, when the tables hold them, the per-layer
    scores and every scored explanation."""
    t3, t4 = result.table3, result.table4
    label = esc(result.label or "model")

    def cell(values: Mapping[str, Any], model: str, attr: str) -> str:
        return num(getattr(values[model], attr) if model in values else None, ".1f", "–")

    body = [
        "<h1>Utility scores: features and completions</h1>",
        f"<h2>Table 3: summed absolute utility of the top-{esc(result.k)} shared features' "
        "explanations</h2>",
        html_table(
            ["Model", "M_base score", "M_RLHF score"],
            [[label, cell(t3, "base", "score"), cell(t3, "tuned", "score")]]
            + (
                []
                if result.score_threshold is None
                else [
                    [f"{label}, detection ≥ {result.score_threshold:g}"]
                    + [cell(result.table3_scored, m, "score") for m in ("base", "tuned")]
                ]
            ),
            {"Model"},
        ),
        _scorer_note(result),
        "<h2>Table 4: aggregate absolute utility of completions</h2>",
        html_table(
            ["Model", "M_base", "M_RLHF", "mean reward base", "mean reward RLHF"],
            [
                [label]
                + [cell(t4, m, "aggregate_abs_utility") for m in ("base", "tuned")]
                + [cell(t4, m, "mean_reward") for m in ("base", "tuned")]
            ],
            {"Model"},
        ),
    ]
    if result.features:
        per_layer = [
            [esc(m), esc(layer), num(v, ".2f")]
            for m, d in t3.items()
            for layer, v in d.per_layer.items()
        ]
        body += [
            "<h2>Per layer</h2>",
            html_table(["model", "layer", "score"], per_layer, {"model"}),
        ]
        all_rows = [r for layers in result.features.values() for s in layers.values() for r in s]
        methods = _SCORES if any(_is_scored(r) for r in all_rows) else ()
        rows = [
            [esc(m), esc(layer), str(r.feature), num(r.utility, ".2f")]
            + [num(getattr(r, k), ".2f", "–") for k in methods]
            + [esc(r.explanation)]
            for m, layers in result.features.items()
            for layer, scored in layers.items()
            for r in scored
        ]
        heads = ["model", "layer", "feature", "utility", *methods, "explanation"]
        body += ["<h2>Explanations</h2>", html_table(heads, rows, {"model", "explanation"})]
    return write_page(path, "Utility scores", "\n".join(body), plotly=False)
