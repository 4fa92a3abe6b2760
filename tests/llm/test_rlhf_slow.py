"""End to end on the tiny offline model: tuning raises reward and aggregate utility (slow tier)."""

from __future__ import annotations

import pytest

from rlsae.llm.rlhf import rlhf_tune
from rlsae.llm.score import ScoreConfig, score_model

# The paper's Table 4 protocol: 100 test prefixes of 30 tokens, one completion each.
SCORE = ScoreConfig(prefixes=100, prefix_tokens=30, max_new_tokens=30, seed=0)

# Paper defaults (batch 64, mini-batch 16, KL coef 0.5, grad norm 1) except the learning rate:
# 1e-6 is the paper's for Pythia; the tiny model needs a larger one to move in a few steps.
RUNS = {
    "ppo": {"steps": 20, "ppo": {"learning_rate": 3e-4, "max_new_tokens": 16}},
    "rloo": {"steps": 30, "ppo": {"learning_rate": 3e-4, "max_new_tokens": 16}},
}


@pytest.fixture(scope="module")
def base_score(tiny_model_dir):
    return score_model(tiny_model_dir, SCORE)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "rloo"])
def test_tuning_raises_reward_and_aggregate_utility(tiny_model_dir, tmp_path, base_score, algo):
    res = rlhf_tune(
        tiny_model_dir,
        tmp_path / algo,
        algo=algo,
        seed=0,
        progress=False,
        **RUNS[algo],
    )
    tuned = score_model(res.model_dir, SCORE)
    print(
        f"\n{algo}: tuning {res.seconds:.0f} s; mean reward {base_score['mean_reward']:.3f} -> "
        f"{tuned['mean_reward']:.3f}; aggregate |utility| {base_score['aggregate_abs_utility']:.1f}"
        f" -> {tuned['aggregate_abs_utility']:.1f}"
    )
    # During training: the last steps' mean reward is above the first steps'.
    assert res.reward_last > res.reward_first + 0.2
    # On held-out test prefixes, scored like the paper's Table 4.
    assert tuned["mean_reward"] > base_score["mean_reward"] + 0.2
    assert tuned["aggregate_abs_utility"] > 1.4 * base_score["aggregate_abs_utility"]
    assert tuned["aggregate_utility"] > base_score["aggregate_utility"] + 50
