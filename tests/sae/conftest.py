"""Fixtures for the SAE core tests: small seeded activation stores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlsae.sae.store import ActivationWriter


def write_store(path: Path, x: torch.Tensor, shard_rows: int = 256, **kw) -> Path:
    with ActivationWriter(path, x.shape[1], shard_rows=shard_rows, **kw) as w:
        w.append(x)
    return path


@pytest.fixture
def small_acts() -> torch.Tensor:
    return torch.randn(1000, 16, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def small_store(tmp_path: Path, small_acts: torch.Tensor) -> Path:
    return write_store(tmp_path / "acts", small_acts, shard_rows=300, hook="h", source="toy")
