"""The score's confidence interval (issue 13): every evaluation carries the 95% percentile
bootstrap interval of its mean return over the episodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlsae.agents.results import Evaluation
from rlsae.agents.steer import bootstrap_ci


def test_bootstrap_interval_equals_the_exact_binomial_quantiles():
    """Returns of 0 and 100 points, five each: a resampled mean is 10 x K with K ~ Binomial(10,
    1/2), whose 2.5% and 97.5% quantiles are K = 2 and 8 (P(K <= 1) = 1.1%, P(K <= 2) = 5.5%):
    the interval is [20, 80]."""
    from scipy.stats import binom

    returns = np.array([0.0, 100.0] * 5)
    lo, hi = (10 * binom.ppf(q, 10, 0.5) for q in (0.025, 0.975))
    assert (lo, hi) == (20.0, 80.0)
    assert bootstrap_ci(returns, 2000, 0) == [lo, hi]
    assert bootstrap_ci(np.full(7, 3.5), 2000, 0) == [3.5, 3.5]  # no spread, no width


def test_evaluation_carries_the_mean_returns_interval(nature_agent: Path, tmp_path: Path):
    from rlsae.agents.evaluate import BOOTSTRAP, evaluate_agent

    res = evaluate_agent(nature_agent, episodes=4, epsilon=0.5, seed=3, max_episode_steps=60)
    assert res.bootstrap == BOOTSTRAP == 2000
    assert [res.return_ci_low, res.return_ci_high] == bootstrap_ci(
        np.array(res.returns), BOOTSTRAP, 3
    )
    assert res.return_ci_low <= res.mean_return <= res.return_ci_high
    assert min(res.returns) <= res.return_ci_low and res.return_ci_high <= max(res.returns)
    back = Evaluation.read(res.write(tmp_path / "eval.json"))
    assert (back.return_ci_low, back.return_ci_high) == (res.return_ci_low, res.return_ci_high)
    old = {k: v for k, v in res.to_json().items() if k not in ("return_ci_low", "return_ci_high",
                                                               "bootstrap")}  # fmt: skip
    assert Evaluation.from_json(old, "old eval.json").return_ci_low is None  # older files read


@pytest.mark.parametrize("with_ci", [True, False])
def test_report_shows_each_agents_score_interval(tmp_path: Path, with_ci: bool):
    import pandas as pd

    from rlsae.analysis.report_scores import score_section

    df = pd.DataFrame({"agent": ["a<b", "c"], "mean_return": [120.0, 592.25],
                       "episodes": [10, 10], "human_normalized": [-0.028, 0.043]})  # fmt: skip
    if with_ci:
        df["return_ci_low"], df["return_ci_high"] = [80.5, 500.0], [160.0, 680.75]
    html = score_section(df)
    if not with_ci:
        assert html == ""
        return
    assert "95% CI (bootstrap over episodes)" in html
    assert "<td class='l'>a&lt;b</td><td>120.0</td><td>[80.5, 160.0]</td>" in html
    assert "<td>592.2</td><td>[500.0, 680.8]</td>" in html
