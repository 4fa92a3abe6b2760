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

import os
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rlsae.artifacts import Artifact
from rlsae.configs import from_mapping, to_mapping
from rlsae.llm.configs import ScoreConfig
from rlsae.llm.data import check_fits_context, load_texts, make_prefixes
from rlsae.llm.generate import decode_rollout, sample_completions
from rlsae.llm.models import load_model
from rlsae.llm.rewards import UtilityReward, UtilityRewardConfig, UtilityTable

__all__ = ["ScoreConfig", "ScoreExample", "ScoreResult", "score_model", "summarise"]


@dataclass
class ScoreExample:
    """One scored completion, kept as an example."""

    prefix: str
    """The prefix text."""
    completion: str
    """The sampled completion."""


@dataclass
class ScoreResult(Artifact):
    """The completions score of one model (``llm score --json``, ``score_{base,tuned}.json``)."""

    FORMAT: ClassVar[str] = "rlsae.score"
    VERSION: ClassVar[int] = 1

    n: int
    """Completions scored."""
    aggregate_abs_utility: float
    """Σ over completions of |Σ U(word)| (the paper's Table 4)."""
    aggregate_utility: float
    """Σ over completions of Σ U(word) (its sign says which way)."""
    aggregate_word_abs_utility: float
    """Σ over completions and words of |U(word)|."""
    mean_reward: float
    """Mean training reward (equation 3 over prefix + completion)."""
    positive_fraction: float
    """Share of completions with a positive summed utility."""
    model: str = ""
    """The model scored (hub name or directory)."""
    config: ScoreConfig = field(default_factory=ScoreConfig)
    """How the completions were sampled and scored."""
    seconds: float = 0.0
    """Wall time."""
    examples: list[ScoreExample] = field(default_factory=list)
    """The first three prefixes and completions."""

    def summary(self) -> dict[str, Any]:
        """The headline figures (what ``llm score`` prints)."""
        keys = ("model", "n", "aggregate_abs_utility", "aggregate_utility", "mean_reward")
        return {k: getattr(self, k) for k in keys}


def score_model(
    model_name_or_dir: str | os.PathLike,
    cfg: ScoreConfig | None = None,
    *,
    model: Any = None,
    tokenizer: Any = None,
    reward_cfg: UtilityRewardConfig | None = None,
) -> ScoreResult:
    """Sample and score completions (see the module doc); the config is validated first."""
    cfg = cfg or ScoreConfig()
    cfg.validate()
    t0 = time.time()
    table = UtilityTable.load(cfg.table)  # a bad table fails before any model loads
    if model is None or tokenizer is None:
        model, tokenizer = load_model(model_name_or_dir)
    check_fits_context(model, cfg.prefix_tokens, cfg.max_new_tokens)
    texts = load_texts(cfg.data, cfg.split, model=model_name_or_dir)
    prefix_ids = make_prefixes(texts, tokenizer, cfg.prefixes, cfg.prefix_tokens, seed=cfg.seed)
    rollout = sample_completions(
        model, tokenizer, prefix_ids, cfg.max_new_tokens, seed=cfg.seed, batch_size=cfg.batch_size
    )
    prefixes, completions = decode_rollout(tokenizer, rollout)
    reward = UtilityReward(reward_cfg or UtilityRewardConfig(table=cfg.table), table)
    res = summarise(table, prefixes, completions, reward(prefixes, completions))
    res.model = os.fspath(model_name_or_dir)
    res.config = from_mapping(ScoreConfig, to_mapping(cfg))  # a copy
    res.seconds = time.time() - t0
    res.examples = [ScoreExample(p, c) for p, c in zip(prefixes[:3], completions[:3], strict=True)]
    return res


def summarise(
    table: UtilityTable, prefixes: list[str], completions: list[str], rewards: list[float]
) -> ScoreResult:
    """The score figures for given completions and their rewards."""
    utils = [table.utility(c) for c in completions]
    return ScoreResult(
        n=len(completions),
        aggregate_abs_utility=float(sum(abs(u) for u in utils)),
        aggregate_utility=float(sum(utils)),
        aggregate_word_abs_utility=float(sum(table.abs_utility(c) for c in completions)),
        mean_reward=float(sum(rewards) / max(1, len(rewards))),
        positive_fraction=float(sum(u > 0 for u in utils) / max(1, len(utils))),
    )
