"""Two planted "models" for the crosscoder tests: a known answer built here, in the tests.

Both models' activations are sparse non-negative combinations of orthonormal planted
directions (plus a little noise), the same features firing with the same magnitudes in both,
seen with a norm per model:

- ``shared``: norm 1 in both models;
- ``trap``: shared, but with norm ``trap`` in the base model and 1 in the tuned one (an L1
  crosscoder's Complete Shrinkage trap: its base decoder is cheaper to drop than to keep);
- ``base_only``: norm 1 in the base model, absent from the tuned one;
- ``tuned_only``: absent from the base model, norm 1 in the tuned one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rlsae.sae.store import ActivationWriter


@dataclass
class Planted:
    base: Path
    tuned: Path
    directions: torch.Tensor
    """(n_features, d) orthonormal planted directions."""
    kinds: list[str]
    """Per direction: shared, trap, base_only or tuned_only."""

    def of(self, kind: str) -> torch.Tensor:
        return self.directions[[i for i, k in enumerate(self.kinds) if k == kind]]


def planted_pair(
    root: Path,
    n_rows: int = 12000,
    d: int = 48,
    *,
    n_shared: int = 10,
    n_trap: int = 4,
    n_base: int = 4,
    n_tuned: int = 4,
    trap: float = 0.35,
    p: float = 0.08,
    noise: float = 0.01,
    seed: int = 0,
    shard_rows: int = 3000,
) -> Planted:
    g = torch.Generator().manual_seed(seed)
    n = n_shared + n_trap + n_base + n_tuned
    q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    U = q[:, :n].T.float().contiguous()
    kinds = ["shared"] * n_shared + ["trap"] * n_trap + ["base_only"] * n_base
    kinds += ["tuned_only"] * n_tuned
    a = torch.tensor([{"shared": 1.0, "trap": trap, "base_only": 1.0}.get(k, 0.0) for k in kinds])
    b = torch.tensor([0.0 if k == "base_only" else 1.0 for k in kinds])
    fire = torch.rand(n_rows, n, generator=g) < p
    mag = (torch.rand(n_rows, n, generator=g) + 0.5) * fire
    xb = (mag * a) @ U + noise * torch.randn(n_rows, d, generator=g)
    xt = (mag * b) @ U + noise * torch.randn(n_rows, d, generator=g)
    paths = []
    for name, x in (("base", xb), ("tuned", xt)):
        path = root / name
        with ActivationWriter(path, d, shard_rows=shard_rows, hook="h", source=name) as w:
            w.append(x, {"document": list(range(n_rows)), "position": [0] * n_rows})
        paths.append(path)
    return Planted(paths[0], paths[1], U, kinds)
