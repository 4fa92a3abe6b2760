"""Review prefixes for tuning and scoring: IMDb from the hub, a local file, or the tiny corpus.

``source`` picks where the texts come from:

* ``"auto"`` (default): the model directory's own corpus when it is a tiny model
  (``corpus_train.txt`` / ``corpus_test.txt``), else IMDb;
* ``"imdb"``: ``stanfordnlp/imdb`` through ``datasets`` (needs the hub or a cache);
* a path to a ``.txt`` file (one document per line) or a ``.jsonl`` file (a ``"text"`` field per
  line), for any offline data.

Split ``train`` is for tuning, ``test`` for activations and scoring (as in the paper). A prefix is
the first ``prefix_tokens`` tokens of a document; documents shorter than that are skipped.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from rlsae.errors import RlsaeError
from rlsae.llm.models import context_length

IMDB = "stanfordnlp/imdb"


def load_texts(
    source: str | os.PathLike = "auto",
    split: str = "train",
    *,
    model: str | os.PathLike | None = None,
) -> list[str]:
    """All documents of ``source`` (see the module doc) for ``split``."""
    if split not in ("train", "test"):
        raise RlsaeError(f"split must be 'train' or 'test', not {split!r}")
    src = os.fspath(source)
    if src == "auto":
        if model is not None and (Path(model) / f"corpus_{split}.txt").is_file():
            return _read_txt(Path(model) / f"corpus_{split}.txt")
        src = "imdb"
    if src == "imdb":
        return _imdb(split)
    check_data_source(src)
    path = Path(src)
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    return _read_txt(path)


def check_data_source(source: str | os.PathLike) -> None:
    """Refuse (one line, cheaply) a data source that is neither 'auto', 'imdb' nor a file."""
    src = os.fspath(source)
    if src not in ("auto", "imdb") and not Path(src).is_file():
        raise RlsaeError(f"data file {src} not found; pass 'imdb', 'auto', a .txt or a .jsonl file")


def _read_txt(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RlsaeError(f"cannot read {path} ({e})") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise RlsaeError(f"{path} has no non-empty lines")
    return texts


def _read_jsonl(path: Path) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise RlsaeError(
                    f"{path}:{lineno}: expected a JSON object with a 'text' field"
                ) from None
            if not isinstance(text, str):
                raise RlsaeError(f"{path}:{lineno}: 'text' must be a string")
            if text.strip():
                texts.append(text)
    if not texts:
        raise RlsaeError(f"{path} has no texts")
    return texts


def _imdb(split: str) -> list[str]:
    try:
        import datasets

        ds = datasets.load_dataset(IMDB, split=split)
    except Exception as e:  # hub errors come in many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RlsaeError(
            f"could not load {IMDB} ({first}); without the hub pass --data FILE (.txt/.jsonl)"
        ) from None
    return list(ds["text"])


def make_prefixes(
    texts: list[str],
    tokenizer: Any,
    n: int,
    prefix_tokens: int,
    *,
    seed: int = 0,
) -> list[list[int]]:
    """Token ids of the first ``prefix_tokens`` tokens of ``n`` documents drawn with ``seed``.

    Documents are visited in a seeded random order; fewer than ``n`` long-enough documents is an
    error. ``n <= 0`` returns every long-enough document, in that order.
    """
    if prefix_tokens < 1:
        raise RlsaeError("prefix length must be at least 1 token")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    out: list[list[int]] = []
    chunk = 256
    # Only the start of a document matters: cut long texts (a cut can change the last token, so
    # a cut text must yield one token more than needed).
    limit = 32 * prefix_tokens + 64
    for start in range(0, len(order), chunk):
        batch = [texts[i] for i in order[start : start + chunk]]
        cut = [len(t) > limit for t in batch]
        batch = [t[:limit] for t in batch]
        encoded = tokenizer(batch, add_special_tokens=False)["input_ids"]
        for ids, was_cut in zip(encoded, cut, strict=True):
            if len(ids) >= prefix_tokens + int(was_cut):
                out.append(list(ids[:prefix_tokens]))
                if 0 < n == len(out):
                    return out
    if n > 0 or not out:
        raise RlsaeError(
            f"only {len(out)} of {len(texts)} documents have {prefix_tokens} tokens, "
            f"{max(n, 1)} needed; use shorter prefixes or more data"
        )
    return out


def check_fits_context(model: Any, prefix_tokens: int, max_new_tokens: int) -> None:
    """RlsaeError unless a prefix plus its completion fits in the model's context."""

    ctx = context_length(model)
    if prefix_tokens + max_new_tokens > ctx:
        raise RlsaeError(
            f"a {prefix_tokens}-token prefix plus {max_new_tokens} new tokens exceeds the "
            f"model's context of {ctx} tokens; use shorter prefixes or completions"
        )
