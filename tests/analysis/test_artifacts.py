"""The analysis artifacts: each one round-trips through its file as strict JSON, keeps the keys
its readers use, and refuses a file of another kind in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rlsae.analysis.fit import FitResult, fit_xy
from rlsae.analysis.mmcs import (
    FeatureMatch,
    LayerShared,
    MMCSResult,
    SAEPair,
    SharedFeatures,
    compare_dictionaries,
    sae_pair,
    size_pair,
)
from rlsae.analysis.utility import ScoredFeature, UtilityTables, utility_tables
from rlsae.errors import RlsaeError


def _strict(path) -> dict:
    """The file parsed with every non-standard constant (NaN, Infinity) refused."""
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in {path}"))


def test_fit_round_trip_and_keys(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(100, 900, 12)
    y = -0.002 * (x - 480) ** 2 + 500 + rng.normal(0, 80, 12)
    fit = fit_xy(x, y, bootstrap=50, seed=3)
    fit.x, fit.y, fit.table = "live", "mean_return", "agents.csv"
    path = fit.write(tmp_path / "fit_live_vs_return.json")
    raw = _strict(path)
    assert raw["format"] == "rlsae.fit" and raw["version"] == 1
    # the keys the docs and the viewer name
    assert {"n", "linear", "quadratic", "spearman", "quadratic_vs_linear", "x", "y"} <= set(raw)
    assert raw["quadratic"]["vertex_ci"]["n_boot"] == 50 and raw["linear"]["degree"] == 1
    assert FitResult.read(path) == fit


def test_exact_quadratic_of_four_agents_writes_null_not_infinity(tmp_path):
    # issue 18: four agents on an exact parabola gave an infinite F statistic, written Infinity
    x = np.array([100.0, 200.0, 300.0, 400.0])
    fit = fit_xy(x, 5 + 0.5 * x - 0.001 * x**2, bootstrap=0)
    q = fit.quadratic
    assert q.exact and q.f_stat is None and q.f_pvalue == 0.0
    assert q.r2 == pytest.approx(1.0) and q.vertex_x == pytest.approx(250.0)
    assert fit.quadratic_vs_linear.f_stat is None and fit.quadratic_vs_linear.f_pvalue == 0.0
    assert not fit.linear.exact and fit.linear.f_stat is not None
    text = fit.write(tmp_path / "f.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    raw = _strict(tmp_path / "f.json")
    assert raw["quadratic"]["f_stat"] is None and raw["quadratic"]["exact"] is True
    assert FitResult.read(tmp_path / "f.json") == fit


def test_constant_y_leaves_the_undefined_statistics_null(tmp_path):
    fit = fit_xy([1.0, 2, 3, 4, 5], [2.0] * 5, bootstrap=0)
    for part in (fit.linear, fit.quadratic):
        assert part.r2 is None and part.f_stat is None and part.f_pvalue is None
    assert fit.spearman.rho is None
    assert FitResult.read(fit.write(tmp_path / "f.json")) == fit


def test_mmcs_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    cmp = compare_dictionaries(torch.randn(12, 5, generator=g), torch.randn(9, 5, generator=g), 4)
    res = cmp.result
    assert [m.feature for m in res.top_k] == torch.argsort(cmp.max_cos_ab, descending=True)[
        :4
    ].tolist()
    res.sae_a, res.sae_b = "saes/a", "saes/b"
    path = res.write(tmp_path / "mmcs.json")
    raw = _strict(path)
    assert raw["format"] == "rlsae.mmcs" and set(raw["top_k"][0]) == {"feature", "match", "cosine"}
    assert MMCSResult.read(path) == res
    hung = compare_dictionaries(torch.eye(3), torch.eye(3)[[2, 0, 1]], hungarian=True).result
    back = MMCSResult.read(hung.write(tmp_path / "h.json"))
    assert [(int(a), int(b)) for a, b, _ in back.hungarian_pairs] == [(0, 1), (1, 2), (2, 0)]


def _shared() -> SharedFeatures:
    a = MMCSResult(0.8, 0.6, 4, 8, [FeatureMatch(2, 5, 0.99), FeatureMatch(0, 1, 0.9)])
    b = MMCSResult(0.5, 0.4, 4, 4, [FeatureMatch(1, 3, 0.7)])
    entry = LayerShared(layer=3, hook="blocks.3.hook_resid_post")
    for src in ("base", "tuned"):
        entry.models[src] = size_pair(a, f"saes/{src}/h/small", f"saes/{src}/h/large", 1, 2)
    entry.base_vs_tuned = sae_pair(b, "saes/base/h/small", "saes/tuned/h/small", 1)
    return SharedFeatures(k=1, utility_k=2, layers=[entry])


def test_shared_features_round_trip_keeps_the_documented_layout(tmp_path):
    shared = _shared()
    path = shared.write(tmp_path / "llm_shared_features.json")
    raw = _strict(path)
    assert raw["format"] == "rlsae.shared-features"
    (layer,) = raw["layers"]
    tuned = layer["models"]["tuned"]
    assert tuned["sae_a"] == "saes/tuned/h/small" and tuned["d_sae_a"] == 4
    assert tuned["d_sae_b"] == 8 and tuned["mmcs_ab"] == 0.8
    assert tuned["top_k"] == [{"feature": 2, "match": 5, "cosine": 0.99}]
    assert len(tuned["top_k_utility"]) == 2
    assert layer["base_vs_tuned"]["top_k"] == [{"feature": 1, "match": 3, "cosine": 0.7}]
    back = SharedFeatures.read(path)
    assert back == shared and back.layer(3).models["base"].top_k_utility[1].match == 1
    assert isinstance(back.layer(3).base_vs_tuned, SAEPair)
    assert [kind for _, kind, _ in back.pairs()] == ["base", "tuned", "base_vs_tuned"]
    with pytest.raises(KeyError):
        back.layer(7)


def test_utility_tables_round_trip(tmp_path):
    per_model = {
        "base": {5: [ScoredFeature(1, "good", 2.0)], 2: [ScoredFeature(4, "x", 0.0)]},
        "tuned": {5: [ScoredFeature(3, "bad <b>", 3.0)]},
    }
    completions = {
        "base": {"aggregate_abs_utility": 1.0, "n": 3},  # no mean reward: None
        "tuned": {"aggregate_abs_utility": 4.0, "mean_reward": 0.5, "n": 3},
    }
    res = utility_tables(per_model, completions, k=1, label="tiny", explainer="top-tokens")
    assert res.layers == [5, 2] and res.table4["base"].mean_reward is None
    assert res.features["tuned"]["5"][0].explanation == "bad <b>"
    path = res.write(tmp_path / "utility.json")
    raw = _strict(path)
    assert raw["format"] == "rlsae.utility-tables"
    assert raw["table3"]["base"] == {
        "score": 2.0,
        "per_layer": {"5": 2.0, "2": 0.0},
        "features": 2,
        "nonzero_features": 1,
    }
    assert raw["table4"]["tuned"]["aggregate_abs_utility"] == 4.0
    assert raw["table3_tuned_minus_base"] == 1.0 and raw["table4_tuned_minus_base"] == 3.0
    assert UtilityTables.read(path) == res


def test_a_file_of_another_kind_is_refused_in_one_line(tmp_path):
    fit = fit_xy([1.0, 2, 3, 4, 5], [1.0, 4, 9, 16, 26], bootstrap=0).write(tmp_path / "f.json")
    with pytest.raises(RlsaeError, match="is a 'rlsae.fit' file, not 'rlsae.shared-features'"):
        SharedFeatures.read(fit)
    (tmp_path / "old.json").write_text(json.dumps({"k": 1, "layers": []}))
    with pytest.raises(RlsaeError, match="has no 'format' field") as e:
        SharedFeatures.read(tmp_path / "old.json")
    assert "\n" not in str(e.value)
