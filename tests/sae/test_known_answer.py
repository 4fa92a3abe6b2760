"""Known answer: SAEs recover planted directions from toy superposition data (Sharkey et al. 2022)."""

from __future__ import annotations

import pytest

from rlsae.analysis.mmcs import compare_dictionaries
from rlsae.sae import ActivationStore
from rlsae.sae.metrics import evaluate_sae
from rlsae.sae.train import TrainConfig, train_sae

from .conftest import superposition, write_store


@pytest.mark.parametrize(
    "arch, settings",
    [
        ("topk", {"k": 4, "lr": 3e-3}),
        ("topk", {"k": 4, "lr": 3e-3, "tied": True}),
        ("relu", {"l1": 0.3, "lr": 3e-3}),
        ("relu", {"l1": 0.3, "lr": 3e-3, "tied": True}),
    ],
)
def test_sae_recovers_planted_directions(tmp_path, arch, settings):
    # 64 unit-norm directions in 32 dimensions, ~3 active per row with non-negative coefficients
    x, truth = superposition(8000, d=32, n_true=64, p=0.05, seed=0)
    store = write_store(tmp_path / "acts", x, shard_rows=2000)
    cfg = TrainConfig(arch=arch, d_sae=128, epochs=8, batch_size=128, final_eval=False, **settings)
    sae = train_sae(store, tmp_path / "sae", cfg, progress=False)
    # every planted direction has a decoder row within cosine >= 0.9 on average
    mmcs = compare_dictionaries(truth, sae.W_dec).result.mmcs_ab
    assert mmcs >= 0.9
    ev = evaluate_sae(sae, ActivationStore(store)).metrics
    assert ev.fvu < 0.25
    # a random dictionary of the same size is far from the truth, so 0.9 is not free
    import torch

    rand = torch.randn(128, 32, generator=torch.Generator().manual_seed(9))
    assert compare_dictionaries(truth, rand).result.mmcs_ab < 0.7
