"""Rewards for RLHF: the paper's utility table (VADER lexicon) and a sentiment classifier.

Utility table (paper section 4.2, equation 3). An overseer turns the generated tokens back into
text, splits the text into words and sums each word's utility ``U(word)``:

    reward(s) = clip(scale * sum_{word in s} U(word), -clip, +clip),  scale = 1/5, clip = 10

over the prefix and the completion together (``completion_only=True`` scores the completion
alone). Words missing from the table count as 0, like VADER's neutral words.

Word splitting (:func:`split_words`), the one rule every score in rlsae uses:

1. the text is lower-cased and split on whitespace;
2. a piece that is itself a table entry is kept as it is (VADER has emoticons such as ``:)``);
3. otherwise leading and trailing punctuation is stripped (``"good."`` -> ``good``,
   ``"(awful)"`` -> ``awful``); inner punctuation stays (``don't``, ``well-made``);
4. pieces that are empty after stripping are dropped.

So ``"The film was GOOD, not bad!"`` gives ``the film was good not bad`` and a raw utility of
U(good) + U(bad) = 1.9 - 2.5 = -0.6 under VADER (no negation handling, as in the paper).

A user table is a TSV file, one ``word<TAB>utility`` per line; further columns are ignored (so
VADER's own ``vader_lexicon.txt`` is a valid table), blank lines and lines starting with ``#``
are skipped. A malformed line raises :class:`RlsaeError` naming the file and line number.

Every reward here is a callable ``reward(prefixes, completions) -> list[float]``.
"""

from __future__ import annotations

import math
import os
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rlsae.configs import check_range
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_bytes
from rlsae.llm.configs import DEFAULT_CLASSIFIER
from rlsae.llm.models import LOAD_ERRORS, load_error, quiet_loading, resolve_model_ref

RewardFn = Callable[[Sequence[str], Sequence[str]], list[float]]

_PUNCT = string.punctuation + "“”‘’«»…–—"


def vader_lexicon_path() -> Path:
    """The ``vader_lexicon.txt`` shipped inside the ``vaderSentiment`` package."""
    import vaderSentiment

    path = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    if not path.is_file():  # pragma: no cover - broken install
        raise RlsaeError(f"{path} is missing; reinstall vaderSentiment")
    return path


class UtilityTable:
    """A word -> utility mapping (lower-case words) with the documented word splitting."""

    def __init__(self, utilities: dict[str, float], name: str = "custom") -> None:
        self.utilities = {w.lower(): float(u) for w, u in utilities.items()}
        self.name = name

    @classmethod
    def vader(cls) -> UtilityTable:
        """The VADER lexicon's mean human ratings, -4 (extremely negative) to +4."""
        return _vader_table()

    @classmethod
    def from_tsv(cls, path: str | os.PathLike) -> UtilityTable:
        """Read ``word<TAB>utility`` lines; RlsaeError with the line number on a bad line."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RlsaeError(f"utility table {path} not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise RlsaeError(f"cannot read utility table {path} ({e})") from None
        utilities: dict[str, float] = {}
        for lineno, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            parts = line.rstrip("\r\n").split("\t")
            word = parts[0].strip()
            value = parts[1].strip() if len(parts) > 1 else ""
            try:
                utility = float(value)
            except ValueError:
                utility = math.nan
            if not word or not math.isfinite(utility):
                raise RlsaeError(
                    f"{path}:{lineno}: malformed utility table line {line[:60]!r}; "
                    "expected 'word<TAB>number'"
                )
            utilities[word.lower()] = utility
        if not utilities:
            raise RlsaeError(f"utility table {path} has no entries")
        return cls(utilities, name=str(path))

    @classmethod
    def load(cls, table: str | os.PathLike | None) -> UtilityTable:
        """``None`` or ``"vader"`` -> VADER; anything else is a TSV path."""
        if table is None or str(table).lower() == "vader":
            return cls.vader()
        return cls.from_tsv(table)

    def __len__(self) -> int:
        return len(self.utilities)

    def __contains__(self, word: str) -> bool:
        return word.lower() in self.utilities

    def get(self, word: str) -> float:
        """The utility of one word; 0 for words not in the table."""
        return self.utilities.get(word.lower(), 0.0)

    def split(self, text: str) -> list[str]:
        """Split ``text`` into words with the module's rule (entries such as ``:)`` kept)."""
        return split_words(text, keep=self.utilities)

    def utility(self, text: str) -> float:
        """Raw summed utility ``sum U(word)`` of ``text`` (no scale, no clip)."""
        return float(sum(self.get(w) for w in self.split(text)))

    def abs_utility(self, text: str) -> float:
        """Summed absolute utility ``sum |U(word)|`` of ``text`` (used to score explanations)."""
        return float(sum(abs(self.get(w)) for w in self.split(text)))

    def save_tsv(self, path: str | os.PathLike) -> None:
        """Write the table as ``word<TAB>utility`` lines (atomically)."""
        lines = [f"{w}\t{u:g}\n" for w, u in sorted(self.utilities.items())]
        atomic_write_bytes(path, "".join(lines).encode())


@lru_cache(maxsize=1)
def _vader_table() -> UtilityTable:
    table = UtilityTable.from_tsv(vader_lexicon_path())
    table.name = "vader"
    return table


def split_words(text: str, keep: Iterable[str] | dict[str, Any] = ()) -> list[str]:
    """Lower-case, split on whitespace, strip outer punctuation unless the piece is in ``keep``."""
    words = []
    for piece in text.lower().split():
        if piece in keep:
            words.append(piece)
            continue
        word = piece.strip(_PUNCT)
        if word:
            words.append(word)
    return words


def utility_reward(
    text: str,
    table: UtilityTable | None = None,
    *,
    scale: float = 0.2,
    clip: float | None = 10.0,
) -> float:
    """The paper's equation 3 for one text: ``clip(scale * sum U(word), -clip, clip)``."""
    table = table or UtilityTable.vader()
    value = scale * table.utility(text)
    if clip is not None:
        value = min(max(value, -clip), clip)
    return float(value)


@dataclass
class UtilityRewardConfig:
    """How the utility-table reward is computed."""

    table: str = "vader"
    """``vader`` (the lexicon shipped in vaderSentiment) or a TSV file ``word<TAB>utility``."""
    scale: float = 0.2
    """Multiplier on the summed utility (the paper divides by 5)."""
    clip: float | None = 10.0
    """Clamp the scaled sum to [-clip, clip] (the paper's 10); None for no clamp."""
    completion_only: bool = False
    """Score the completion alone instead of prefix + completion (the paper scores both)."""

    def validate(self, where: str = "utility reward") -> None:
        """A finite scale and a positive clip (or none)."""
        check_range(where, "scale", self.scale)
        if self.clip is not None:
            check_range(where, "clip", self.clip, 0, lo_open=True)


class UtilityReward:
    """Callable reward ``(prefixes, completions) -> rewards`` from a utility table."""

    def __init__(self, cfg: UtilityRewardConfig | None = None, table: UtilityTable | None = None):
        self.cfg = cfg or UtilityRewardConfig()
        self.cfg.validate()
        self.table = table or UtilityTable.load(self.cfg.table)

    def __call__(self, prefixes: Sequence[str], completions: Sequence[str]) -> list[float]:
        if len(prefixes) != len(completions):
            raise ValueError("prefixes and completions differ in length")
        out = []
        for p, c in zip(prefixes, completions, strict=True):
            text = c if self.cfg.completion_only else p + c
            out.append(utility_reward(text, self.table, scale=self.cfg.scale, clip=self.cfg.clip))
        return out


@dataclass
class ClassifierRewardConfig:
    """How the sentiment-classifier reward is computed."""

    model: str = DEFAULT_CLASSIFIER
    """Hub name or local directory of a sequence classifier (default DistilBERT-IMDb)."""
    positive_label: str | int | None = None
    """Label name or index whose logit is the reward; None finds a label containing 'pos'."""
    completion_only: bool = False
    """Classify the completion alone instead of prefix + completion."""
    batch_size: int = 32
    """Texts per classifier forward pass."""
    max_length: int = 512
    """Texts are truncated to this many classifier tokens."""

    def validate(self, where: str = "classifier reward") -> None:
        """Positive batch size and length."""
        check_range(where, "batch_size", self.batch_size, 1)
        check_range(where, "max_length", self.max_length, 1)


class ClassifierReward:
    """Callable reward: the positive label's logit of a sequence classifier."""

    def __init__(self, cfg: ClassifierRewardConfig | None = None, device: str = "cpu") -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.cfg = cfg or ClassifierRewardConfig()
        self.cfg.validate()
        self.device = device
        name, local = resolve_model_ref(self.cfg.model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local)
            with quiet_loading():
                self.model = AutoModelForSequenceClassification.from_pretrained(
                    name, local_files_only=local
                )
        except LOAD_ERRORS as e:
            raise RlsaeError(load_error(name, local, e)) from None
        self.model.to(device).eval()
        self.label_index = self._label_index(self.cfg.positive_label)

    def _label_index(self, label: str | int | None) -> int:
        id2label = {int(k): str(v) for k, v in (self.model.config.id2label or {}).items()}
        n = int(self.model.config.num_labels)
        if isinstance(label, int) or (isinstance(label, str) and label.isdigit()):
            idx = int(label)
            if not 0 <= idx < n:
                raise RlsaeError(f"positive label index {idx} out of range for {n} labels")
            return idx
        if isinstance(label, str):
            for idx, name in id2label.items():
                if name.lower() == label.lower():
                    return idx
            raise RlsaeError(
                f"label {label!r} not among the classifier's {sorted(id2label.values())}"
            )
        for idx, name in id2label.items():
            if "pos" in name.lower():
                return idx
        if n == 2:
            return 1
        raise RlsaeError(
            f"cannot tell which of {sorted(id2label.values())} is positive; pass positive_label"
        )

    def __call__(self, prefixes: Sequence[str], completions: Sequence[str]) -> list[float]:
        import torch

        texts = [
            c if self.cfg.completion_only else p + c
            for p, c in zip(prefixes, completions, strict=True)
        ]
        out: list[float] = []
        for i in range(0, len(texts), self.cfg.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.cfg.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.cfg.max_length,
            ).to(self.device)
            with torch.no_grad():
                logits = self.model(**enc).logits
            out.extend(logits[:, self.label_index].float().tolist())
        return out
