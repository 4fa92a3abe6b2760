"""Fixtures for the llm-rlhf tests: one tiny offline Pythia trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

# Small enough to train in ~20-40 s on 2 CPU cores; large enough to write fluent reviews.
TINY_TEST_OPTIONS = {"steps": 100, "n_train_reviews": 2000, "n_test_reviews": 400}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from rlsae.llm.tiny import pretrain_tiny

    out = tmp_path_factory.mktemp("tiny") / "model"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pretrain_tiny(out, seed=0, progress=False, **TINY_TEST_OPTIONS)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tuning is many small ops: one thread is several times faster on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
