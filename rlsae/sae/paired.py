"""Two aligned activation stores read as one: ``PairedStore(base, tuned, mode)``.

Model diffing needs row i of both stores to come from the same input (the same token of the
same document, the same game state). ``PairedStore`` checks that once, when opened, and refuses
misaligned stores in one line: the same number of rows, the same width, the same split into
shards, and, where both stores have context tables, the same values in the columns that say
which input a row is (``ALIGN_COLUMNS``).

It is an ``ActivationStore`` whose shard i is built from the two stores' shards i:

- ``mode="concat"``: ``[base | tuned]``, width 2 d (what a crosscoder reads);
- ``mode="diff"``: ``tuned - base``, width d (what the diff-SAE reads).

Everything else (the seeded shuffled batches, the sequential reader, the mean) is the store's
own code reading those shards, so training on a ``PairedStore`` is training on a store, with
the same order of rows in both models, and resuming is exact.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import torch

from rlsae.errors import RlsaeError
from rlsae.sae.store import ActivationStore, StoreIdentity

ALIGN_COLUMNS = ("document", "position", "token_id", "episode", "episode_seed", "step", "obs_hash")
"""Context columns that name the input a row came from (language-model and agent stores)."""


class PairedStore(ActivationStore):
    """Two aligned stores, read row by row together (see the module docstring)."""

    def __init__(
        self,
        base: ActivationStore | str | os.PathLike,
        tuned: ActivationStore | str | os.PathLike,
        mode: Literal["concat", "diff"] = "concat",
    ) -> None:
        if mode not in ("concat", "diff"):
            raise RlsaeError(f"PairedStore mode must be concat or diff, not {mode!r}")
        self.base = base if isinstance(base, ActivationStore) else ActivationStore(base)
        self.tuned = tuned if isinstance(tuned, ActivationStore) else ActivationStore(tuned)
        self.mode = mode
        check_aligned(self.base, self.tuned)
        b, t = self.base, self.tuned
        self.d_model = b.d_in
        self.d_in = 2 * b.d_in if mode == "concat" else b.d_in
        self.rows = b.rows
        self.dtype = b.dtype if b.dtype == t.dtype else "float32"
        joint = " with " if mode == "concat" else " minus "
        first, second = (b, t) if mode == "concat" else (t, b)
        self.path = Path(f"{first.path}{joint}{second.path}")
        self.hook = b.hook if b.hook == t.hook else f"{b.hook}|{t.hook}"
        self.source = f"{first.source}{joint}{second.source}"
        self.provider = b.provider
        self.extra: dict[str, Any] = {"paired": mode, "base": str(b.path), "tuned": str(t.path)}
        self.meta = {"d_in": self.d_in, "rows": self.rows, "hook": self.hook, **self.extra}
        self._shards = list(b._shards)
        self._starts = b._starts
        self.window_rows = b.window_rows

    def identity(self) -> StoreIdentity:
        """The pair's identity: the two stores' fingerprints and the mode, hashed together."""
        return StoreIdentity(
            d_in=self.d_in,
            rows=self.rows,
            dtype=self.dtype,
            hook=self.hook,
            source=self.source,
            fingerprint=self.fingerprint(),
        )

    def fingerprint(self) -> str:
        text = f"{self.mode}:{self.base.fingerprint()}:{self.tuned.fingerprint()}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"PairedStore({str(self.base.path)!r}, {str(self.tuned.path)!r}, {self.mode!r})"

    def load_shard(self, i: int) -> torch.Tensor:
        return self._join(self.base.load_shard(i), self.tuned.load_shard(i))

    def read_rows(self, idx: Any) -> torch.Tensor:
        return self._join(self.base.read_rows(idx), self.tuned.read_rows(idx))

    def context(self) -> Any:
        """The base store's context table (the two agree on the input columns)."""
        return self.base.context()

    def _join(self, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([b, t], dim=1) if self.mode == "concat" else t - b

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A concatenated batch as its (base, tuned) halves."""
        return x[:, : self.d_model], x[:, self.d_model :]


def check_aligned(base: ActivationStore, tuned: ActivationStore) -> None:
    """RlsaeError in one line unless row i of both stores can come from the same input: equal
    rows, widths and shard layouts, and equal ``ALIGN_COLUMNS`` where both have context."""
    b, t = base, tuned
    if b.rows != t.rows:
        raise RlsaeError(
            f"stores are not aligned: base {b.path} has {b.rows} rows, tuned {t.path} {t.rows} "
            "(row i of both must come from the same input)"
        )
    if b.d_in != t.d_in:
        raise RlsaeError(
            f"stores have different widths: base {b.path} d_in={b.d_in}, tuned {t.path} "
            f"d_in={t.d_in}; record the same layer of both models"
        )
    if [r for _, r in b._shards] != [r for _, r in t._shards]:
        raise RlsaeError(
            f"stores {b.path} and {t.path} are split into shards differently; record or import "
            "both with the same shard rows"
        )
    cb, ct = b.context(), t.context()
    if cb is None or ct is None:
        return
    for col in (c for c in ALIGN_COLUMNS if c in cb.columns and c in ct.columns):
        vb, vt = cb[col].tolist(), ct[col].tolist()
        differ = [i for i, (p, q) in enumerate(zip(vb, vt, strict=True)) if p != q]
        if len(differ):
            i = int(differ[0])
            raise RlsaeError(
                f"stores are not aligned: row {i} is {col} {vb[i]!r} in base {b.path} but "
                f"{vt[i]!r} in tuned {t.path} (row i of both must come from the same input)"
            )
