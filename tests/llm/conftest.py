"""Fixtures of the language-model tests, all built here so the tests never need the hub:

- ``tiny_model_dir``: the tiny offline Pythia (GPT-NeoX), pretrained once per session;
- ``random_lm_dir`` / ``make_lm`` / ``save_lm``: a randomly initialised 3-layer GPT-NeoX with a
  word-level tokenizer, saved as a Hugging Face model directory;
- ``tiny_classifier``: a hand-weighted DistilBERT sentiment classifier;
- ``run_cli``: the ``rlsae`` entry point (:func:`rlsae.cli.main`) run in-process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Small enough to train in ~20-40 s on 2 CPU cores; large enough to write fluent reviews.
TINY_TEST_OPTIONS = {"steps": 100, "n_train_reviews": 2000, "n_test_reviews": 400}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rlsae.llm.tiny import pretrain_tiny
    from rlsae.threads import torch_threads

    out = tmp_path_factory.mktemp("tiny") / "model"
    with torch_threads(1):
        return pretrain_tiny(out, seed=0, progress=False, **TINY_TEST_OPTIONS)


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


WORDS = (
    "the a movie film was is it this i and but very plot acting story ending scenes "
    "good great wonderful love liked best fun happy bad awful terrible hate boring worst sad "
    "actor director music long short really not"
).split()

CORPUS = [
    "the movie was good and i liked it",
    "this film is awful and the plot was boring",
    "i love the acting but the ending was bad",
    "the story is great and the music is wonderful",
    "it was the worst film i hate it",
    "a very long movie but really fun",
    "the director is good the actor is bad",
    "happy ending and great scenes",
    "sad story terrible acting",
    "not the best movie but not the worst",
    "the music was wonderful and the scenes were great",
    "i liked the plot the acting was awful",
]


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<unk>": 1}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|endoftext|>", unk_token="<unk>"
    )


def make_model(seed: int = 0, *, layers: int = 3, hidden: int = 32, vocab: int | None = None):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=vocab or len(WORDS) + 2,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        rotary_pct=0.25,
        eos_token_id=0,
        bos_token_id=0,
    )
    return GPTNeoXForCausalLM(cfg).eval()


def save_model(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def random_lm_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A randomly initialised 3-layer GPT-NeoX saved with its tokenizer."""
    return save_model(make_model(0), tiny_tokenizer, tmp_path_factory.mktemp("lm") / "base")


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "reviews.txt"
    path.write_text("\n".join(CORPUS * 3) + "\n")
    return path


@pytest.fixture(scope="session")
def make_lm():
    """``make_lm(seed, layers=3, hidden=32, vocab=None)`` -> a random tiny GPT-NeoX."""
    return make_model


@pytest.fixture(scope="session")
def save_lm(tiny_tokenizer):
    """``save_lm(model, path)`` -> path, the model saved with the test tokenizer."""
    return lambda model, path: save_model(model, tiny_tokenizer, path)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs torch on one thread (the shared ``one_thread`` fixture)."""
    yield
