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


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory):
    """A 2-label DistilBERT whose positive logit counts the word 'great' (weights set by hand)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        PreTrainedTokenizerFast,
    )

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "great": 4, "awful": 5, "film": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )
    cfg = DistilBertConfig(
        vocab_size=len(vocab),
        dim=8,
        n_layers=1,
        n_heads=2,
        hidden_dim=16,
        max_position_embeddings=32,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(cfg)
    out = tmp_path_factory.mktemp("clf")
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out, model, fast
