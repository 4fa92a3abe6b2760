"""Score a model's completions under the utility table (the paper's Table 4).

For ``n`` prefixes of ``prefix_tokens`` tokens from the test split, one completion each is sampled
(top_k 0, top_p 1) and scored:

* ``aggregate_abs_utility`` = sum over completions of |sum of U(word) over the completion's words|
  (raw VADER utilities, no scale or clip): how strongly the completions express sentiment;
* ``aggregate_utility`` = the same without the absolute value (its sign says which way);
* ``mean_reward`` = mean training reward, the paper's equation 3 over prefix + completion
  (``clip(sum U / 5, -10, 10)``) or the configured reward;
* ``aggregate_word_abs_utility`` = sum over completions and words of |U(word)|.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any

from rlsae.llm.data import check_fits_context, load_texts, make_prefixes
from rlsae.llm.generate import decode_rollout, sample_completions
from rlsae.llm.rewards import UtilityReward, UtilityRewardConfig, UtilityTable


@dataclass
class ScoreConfig:
    """How completions are sampled and scored."""

    prefixes: int = 100
    """Number of test prefixes (one completion each); the paper uses 100."""
    prefix_tokens: int = 30
    """Prefix length in tokens; the paper uses 30."""
    max_new_tokens: int = 30
    """Completion length in tokens (shorter if the model writes EOS)."""
    seed: int = 0
    """Seed for the prefix draw and the sampling."""
    data: str = "auto"
    """'auto' (tiny model's corpus, else IMDb), 'imdb', or a .txt/.jsonl file."""
    split: str = "test"
    """Split the prefixes come from."""
    table: str = "vader"
    """Utility table: 'vader' or a TSV file."""
    batch_size: int = 50
    """Completions sampled per generate() call."""


def score_model(
    model_name_or_dir: str | os.PathLike,
    cfg: ScoreConfig | None = None,
    *,
    model: Any = None,
    tokenizer: Any = None,
    reward_cfg: UtilityRewardConfig | None = None,
) -> dict[str, Any]:
    """Sample and score completions; returns the JSON-ready result (see the module doc)."""
    from rlsae.llm.models import load_model

    cfg = cfg or ScoreConfig()
    t0 = time.time()
    if model is None or tokenizer is None:
        model, tokenizer = load_model(model_name_or_dir)
    check_fits_context(model, cfg.prefix_tokens, cfg.max_new_tokens)
    texts = load_texts(cfg.data, cfg.split, model=model_name_or_dir)
    prefix_ids = make_prefixes(texts, tokenizer, cfg.prefixes, cfg.prefix_tokens, seed=cfg.seed)
    rollout = sample_completions(
        model, tokenizer, prefix_ids, cfg.max_new_tokens, seed=cfg.seed, batch_size=cfg.batch_size
    )
    prefixes, completions = decode_rollout(tokenizer, rollout)
    table = UtilityTable.load(cfg.table)
    reward = UtilityReward(reward_cfg or UtilityRewardConfig(table=cfg.table), table)
    return {
        **summarise(table, prefixes, completions, reward(prefixes, completions)),
        "model": os.fspath(model_name_or_dir),
        "config": dataclasses.asdict(cfg),
        "seconds": time.time() - t0,
        "examples": [
            {"prefix": p, "completion": c}
            for p, c in zip(prefixes[:3], completions[:3], strict=True)
        ],
    }


def summarise(
    table: UtilityTable, prefixes: list[str], completions: list[str], rewards: list[float]
) -> dict[str, Any]:
    """The score figures for given completions and their rewards."""
    utils = [table.utility(c) for c in completions]
    return {
        "n": len(completions),
        "aggregate_abs_utility": float(sum(abs(u) for u in utils)),
        "aggregate_utility": float(sum(utils)),
        "aggregate_word_abs_utility": float(sum(table.abs_utility(c) for c in completions)),
        "mean_reward": float(sum(rewards) / max(1, len(rewards))),
        "positive_fraction": float(sum(u > 0 for u in utils) / max(1, len(utils))),
    }
