"""TrainConfig.shuffle=False: one pass over the store in the order its rows were written (the
poster trained each SAE on its agent's fc1 rows in play order)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlsae.errors import RlsaeError
from rlsae.sae.config import TrainConfig
from rlsae.sae.store import ActivationStore
from rlsae.sae.train import train_sae


def test_in_order_single_pass_reads_rows_as_written(
    small_store: Path, small_acts: torch.Tensor, tmp_path: Path, monkeypatch
) -> None:
    seen: list[torch.Tensor] = []
    original = ActivationStore.iter_batches

    def spy(self, *args, **kwargs):
        for batch in original(self, *args, **kwargs):
            seen.append(batch.clone())
            yield batch

    monkeypatch.setattr(ActivationStore, "iter_batches", spy)
    cfg = TrainConfig(
        arch="topk", d_sae=32, k=4, batch_size=100, epochs=1, shuffle=False, aux_k=0,
        final_eval=False,
    )  # fmt: skip
    train_sae(small_store, tmp_path / "sae", cfg, progress=False)
    got = torch.cat(seen[:10])
    assert torch.equal(got, small_acts[: len(got)])  # every row once, in the written order
    assert len(got) == 1000
    with pytest.raises(RlsaeError, match="shuffle: expected true or false"):
        TrainConfig(shuffle="no").validate("cfg")  # type: ignore[arg-type]
