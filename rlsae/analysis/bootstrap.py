"""The one percentile bootstrap of a mean that the causal tools report (agents' and language
models' steering, the ablation sweep, an evaluation's return interval)."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(diffs: np.ndarray, resamples: int, seed: int) -> list[float]:
    """95% percentile interval of the mean of ``diffs`` over ``resamples`` resamples."""
    rng = np.random.default_rng([int(seed), 4242])
    idx = rng.integers(0, len(diffs), (resamples, len(diffs)))
    means = diffs[idx].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
