"""Utility scores (Tables 3 and 4) against hand-computed sums under a small custom table."""

from __future__ import annotations

import pytest

from rlsae.analysis.report import write_utility_html
from rlsae.analysis.utility import feature_scores, tables_markdown, utility_tables
from rlsae.llm.rewards import UtilityTable

TABLE = UtilityTable({"good": 2.0, "bad": -3.0, "great": 1.5})


def test_feature_scores_and_tables_by_hand(tmp_path):
    base_expl = {
        "3": {"explanation": 'tokens "the", "plot"'},  # 0
        "7": {"explanation": 'tokens "bad" (lift 2.0x)'},  # 3
    }
    tuned_expl = {
        "1": {"explanation": "Good, good and great!"},  # 2 + 2 + 1.5 = 5.5
        "4": {"explanation": "bad <script>alert(1)</script>"},  # 3
        "9": {"explanation": "x", "samples": ["good", "bad bad"]},  # mean(2, 6) = 4
    }
    per_model = {
        "base": {2: feature_scores(base_expl, [3, 7], TABLE)},
        "tuned": {
            2: feature_scores(tuned_expl, [1, 4], TABLE),
            3: feature_scores(tuned_expl, [9], TABLE),
        },
    }
    assert [r.utility for r in per_model["tuned"][2]] == [5.5, 3.0]
    assert per_model["tuned"][3][0].utility == pytest.approx(4.0)
    completions = {
        "base": {"aggregate_abs_utility": 10.0, "mean_reward": 0.1, "n": 5},
        "tuned": {"aggregate_abs_utility": 25.5, "mean_reward": 0.7, "n": 5},
    }
    res = utility_tables(per_model, completions, k=2, label="tiny")
    assert res.table3["base"].score == pytest.approx(3.0)
    assert res.table3["tuned"].score == pytest.approx(12.5)
    assert res.table3["tuned"].per_layer == {"2": 8.5, "3": 4.0}
    assert res.table3["base"].nonzero_features == 1
    assert res.table3_tuned_minus_base == pytest.approx(9.5)
    assert res.table4_tuned_minus_base == pytest.approx(15.5)
    md = tables_markdown(res)
    assert "| tiny | 3.0 | 12.5 | 10.0 | 25.5 |" in md
    page = write_utility_html(res, tmp_path / "u.html").read_text()
    assert "12.5" in page and "25.5" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page


def test_missing_explanation_raises():
    with pytest.raises(KeyError):
        feature_scores({}, [1], TABLE)
