"""The report module: shared helpers (escaping, numbers, tables, the offline page shell) and the
three pages built on them, from typed inputs, with hostile text kept literal."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from rlsae.analysis.fit import fit_xy
from rlsae.analysis.mmcs import (
    FeatureMatch,
    LayerShared,
    MMCSResult,
    SharedFeatures,
    sae_pair,
    size_pair,
)
from rlsae.analysis.report import (
    RLHFSummary,
    esc,
    html_table,
    num,
    page,
    write_atari_report,
    write_llm_report,
    write_utility_html,
)
from rlsae.analysis.utility import ScoredFeature, utility_tables
from rlsae.errors import RlsaeError

HOSTILE = "<img src=x onerror=alert(1)>"
LITERAL = "&lt;img src=x onerror=alert(1)&gt;"


def test_esc_and_num():
    assert esc(HOSTILE) == LITERAL
    assert esc("a'b\"c&") == "a&#x27;b&quot;c&amp;"
    assert num(None) == "" and num(float("nan"), missing="–") == "–"
    assert num(0.123456) == "0.1235" and num(2.5, ".1f") == "2.5" and num(7) == "7"
    assert num(HOSTILE) == LITERAL  # text in a number column is escaped too


def test_html_table_escapes_headers_and_aligns_named_columns():
    t = html_table(["agent", "<b>", "live"], [["a0", "1", "2"]], {"agent"})
    assert "<th class='l'>agent</th>" in t and "<th>&lt;b&gt;</th>" in t
    assert "<td class='l'>a0</td><td>1</td><td>2</td>" in t
    with pytest.raises(ValueError):  # a row that does not fit the headers
        html_table(["a", "b"], [["1"]])


def test_page_shell_embeds_plotly_offline_and_escapes_the_title():
    html = page(HOSTILE, "<p>body</p>")
    assert html.startswith("<!DOCTYPE html>") and f"<title>{LITERAL}</title>" in html
    assert re.search(r"<script[^>]*\bsrc=", html) is None and len(html) > 1_000_000
    assert "<p>body</p>" in html
    bare = page("t", "x", plotly=False)
    assert "<script" not in bare and len(bare) < 5_000


def _atari_run(tmp_path, agents):
    run = tmp_path / "study"
    (run / "analysis").mkdir(parents=True)
    live = np.array([400.0, 420, 450, 500, 530])
    ret = 500 + 4 * (live - 400)
    pd.DataFrame({"agent": agents, "live": live, "dead": 2048 - live, "mean_return": ret}).to_csv(
        run / "analysis" / "agents.csv", index=False
    )
    fit = fit_xy(live, ret, bootstrap=0)
    fit.x, fit.y, fit.table = "live", "mean_return", "agents.csv"
    fit.write(run / "analysis" / "fit_live_vs_return.json")
    info = {"study": HOSTILE, "config": {"sae": {"arch": "topk", "d_sae": 2048, "k": 50}}}
    (run / "run.json").write_text(json.dumps(info))
    return run


def test_atari_report_from_the_run_directory(tmp_path):
    agents = [f"agent{i}" for i in range(4)] + [HOSTILE]
    run = _atari_run(tmp_path, agents)
    html = write_atari_report(run).read_text()
    assert "5 agents. Quadratic fit of mean_return on live" in html
    assert "Linear: R² = 1.000, p = 0" in html  # an exact line: p is 0, not NaN or a crash
    assert "../viewer/index.html" in html and "not exported yet" in html
    assert all(f"<td class='l'>{a}</td>" in html for a in agents[:4])
    assert f"<td class='l'>{LITERAL}</td>" in html and HOSTILE not in html
    assert re.search(r"<script[^>]*\bsrc=", html) is None and "Plotly.newPlot" in html
    (run / "viewer").mkdir()
    (run / "viewer" / "index.html").write_text("")
    assert "not exported yet" not in write_atari_report(run).read_text()
    (run / "analysis" / "agents.csv").unlink()
    with pytest.raises(RlsaeError, match="agents.csv not found"):
        write_atari_report(run)


def test_atari_report_draws_each_agents_sae_curves_and_firing_frequencies(tmp_path):
    import torch

    from rlsae.sae import ActivationWriter
    from rlsae.sae.train import TrainConfig, train_sae

    agents = [f"agent{i}" for i in range(5)]
    run = _atari_run(tmp_path, agents)
    store = tmp_path / "acts"
    with ActivationWriter(store, 8, source="a", hook="fc1") as w:
        w.append(torch.randn(256, 8, generator=torch.Generator().manual_seed(0)))
    sae = run / "saes" / "agent1" / "fc1" / "topk-16-k2"
    cfg = TrainConfig(arch="topk", d_sae=16, k=2, steps=20, batch_size=64, seed=0, log_every=5)
    train_sae(store, sae, cfg, progress=False)
    assert (sae / "training.json").is_file() and (sae / "feature_stats.safetensors").is_file()
    html = write_atari_report(run).read_text()
    assert "SAE training: loss" in html and "Sorted firing frequency of live features" in html
    (sae / "training.json").write_text("{}")  # a damaged history leaves only its curves out
    html = write_atari_report(run).read_text()
    assert "SAE training: loss" not in html and "Sorted firing frequency" in html


def _lm_inputs():
    cmp = MMCSResult(0.81, 0.62, 4, 8, [FeatureMatch(2, 5, 0.99), FeatureMatch(0, 1, 0.9)])
    entry = LayerShared(layer=3, hook="blocks.3.hook_resid_post")
    for src in ("base", "tuned"):
        entry.models[src] = size_pair(cmp, f"saes/{src}/small", f"saes/{src}/large", 1, 2)
    entry.base_vs_tuned = sae_pair(MMCSResult(0.5, 0.4, 4, 4), "a", "b", 1)
    shared = SharedFeatures(k=1, utility_k=2, layers=[entry])
    per_model = {
        "base": {3: [ScoredFeature(2, "film words", 0.0), ScoredFeature(0, "good", 2.0)]},
        "tuned": {3: [ScoredFeature(2, f"great {HOSTILE}", 3.5)]},
    }
    scores = {"base": {"aggregate_abs_utility": 10.0, "mean_reward": 0.1, "n": 5}}
    return shared, utility_tables(per_model, scores, k=2, label=HOSTILE)


def test_llm_report_from_typed_inputs(tmp_path):
    import plotly.graph_objects as go

    shared, util = _lm_inputs()
    fig = go.Figure(go.Bar(x=[0, 1, 2, 3], y=[1.0, 2.0, 0.5, 4.0]))
    rl = RLHFSummary(reward_first=0.1, reward_last=0.75, steps=20, kl_last=None)
    path = write_llm_report(
        tmp_path / "report.html",
        model=HOSTILE,
        rlhf=rl,
        shared=shared,
        utility=util,
        divergence_figure=fig,
    )
    html = path.read_text()
    assert "Plotly.newPlot" in html and "Tables 3 and 4" in html
    assert "Layer divergence (Figure 3)" in html
    assert f"Implicit reward model of {LITERAL}" in html and HOSTILE not in html
    assert "mean reward 0.100 → 0.750 over 20 steps (final KL –)" in html
    # Table 3: base 2.0, tuned 3.5; Table 4: base only (the tuned column is a dash)
    assert "explanations</td><td>2.0</td><td>3.5</td>" in html
    assert "completions</td><td>10.0</td><td>–</td>" in html
    assert "<td>3</td><td class='l'>tuned</td><td>4</td><td>8</td><td>0.8100</td>" in html
    assert "base small ↔ tuned small" in html and "<td>0.5000</td><td>0.4000</td>" in html
    # each explained feature with its max cosine from the shared file
    assert f"<td>2</td><td>0.990</td><td>3.50</td><td class='l'>great {LITERAL}</td>" in html
    without = write_llm_report(
        tmp_path / "r2.html", model="m", rlhf=RLHFSummary(), shared=shared, utility=util
    ).read_text()
    assert "Figure 3" not in without and "over None steps" in without


def test_utility_page_keeps_hostile_explanations_literal(tmp_path):
    _, util = _lm_inputs()
    html = write_utility_html(util, tmp_path / "utility.html").read_text()
    assert f"<td class='l'>great {LITERAL}</td>" in html and HOSTILE not in html
    assert "<td class='l'>" + LITERAL + "</td><td>2.0</td><td>3.5</td>" in html  # Table 3 row
    assert "<td>3.50</td>" in html and "<script" not in html
