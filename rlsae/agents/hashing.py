"""The observation hash of a recording's ``obs_hash`` column (light: numpy and hashlib only, so
the RAM replay's worker processes check screens without importing torch)."""

from __future__ import annotations

import hashlib

import numpy as np


def obs_hash(obs: np.ndarray) -> str:
    """A short content hash of one observation (used to check replays step by step)."""
    return hashlib.blake2b(np.ascontiguousarray(obs).tobytes(), digest_size=8).hexdigest()


__all__ = ["obs_hash"]
