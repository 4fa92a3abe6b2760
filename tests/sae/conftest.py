"""Fixtures for the SAE core tests: small seeded activation stores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlsae.sae.store import ActivationWriter


def superposition(n_rows: int, d: int = 32, n_true: int = 64, p: float = 0.05, seed: int = 0):
    """Toy superposition data (Sharkey et al. 2022): ``n_true`` > ``d`` planted unit-norm directions,
    each row a sparse non-negative combination of them. Returns (rows, directions)."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(n_true, d, generator=g)
    truth /= truth.norm(dim=1, keepdim=True)
    coef = (torch.rand(n_rows, n_true, generator=g) < p).float() * torch.rand(
        n_rows, n_true, generator=g
    )
    return coef @ truth, truth


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


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs torch on one thread (the shared ``one_thread`` fixture)."""
    yield
