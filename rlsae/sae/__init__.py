"""The shared SAE core: activation store, TopK / ReLU+L1 sparse autoencoders, training, metrics.

Importing ``rlsae.sae`` is cheap; torch and friends load on first use of a name below.
Knows nothing of Atari or language models.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ActivationWriter": "rlsae.sae.store",
    "ActivationStore": "rlsae.sae.store",
    "StoreIdentity": "rlsae.sae.store",
    "import_activations": "rlsae.sae.store",
    "SAEConfig": "rlsae.sae.config",
    "TrainConfig": "rlsae.sae.config",
    "SAE": "rlsae.sae.model",
    "load_sae": "rlsae.sae.model",
    "save_sae": "rlsae.sae.model",
    "train_sae": "rlsae.sae.train",
    "TrainingRecord": "rlsae.sae.train",
    "evaluate_sae": "rlsae.sae.metrics",
    "SAEEvaluation": "rlsae.sae.metrics",
    "SAEMetrics": "rlsae.sae.metrics",
    "FeatureStats": "rlsae.sae.metrics",
    "live_feature_count": "rlsae.sae.metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rlsae.sae' has no attribute {name!r}")
