"""Activation stores: shards of activations on disk, written once and read lazily.

A store is a directory::

    meta.json                   format, d_in, dtype, hook, source, provider, rows, shards, ...
    shard_00000.safetensors     one tensor "activations" of shape (rows, d_in)
    context.parquet             optional, one row per activation row, in row order

``ActivationWriter`` builds one in a temporary sibling directory and renames it into place on
``close()`` (``rlsae.fsutil.atomic_dir``: the store gets the user's umask like every other
artifact), so an interrupted write never leaves a half-written store. ``ActivationStore``
validates the directory when opened and reads it shard by shard: a seeded shuffled batch
iterator for training (shard order shuffled, rows shuffled within a window of shards) and a
sequential reader for evaluation. Nothing loads the whole store into memory.

A store's identity (``ActivationStore.identity``) is its meta.json plus a content fingerprint:
a SHA-256 over meta.json's bytes and, for every shard, its file size, its safetensors header,
and the first and last 64 KiB of its data. It reads at most ~130 KiB per shard, so it is cheap
for any store, and it tells apart two stores of the same width and row count (a resumed SAE
training refuses a store whose identity differs from the one it started on).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_dir, atomic_write_json, read_json

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "rlsae-activations"
VERSION = 1
_DTYPES = {"float16": torch.float16, "float32": torch.float32}
_ST_DTYPES = {"F16": "float16", "F32": "float32", "BF16": "bfloat16", "F64": "float64"}


_EDGE = 65536  # bytes of each shard's data at either end that go into the fingerprint


@dataclass
class StoreIdentity:
    """An activation store's meta and content fingerprint (see the module docstring)."""

    d_in: int
    rows: int
    dtype: str
    hook: str
    source: str
    fingerprint: str

    def differences(self, other: StoreIdentity) -> list[str]:
        """``field: mine vs other's`` for each field in which the two differ."""
        return [
            f"{f.name} {getattr(self, f.name)!r} vs {getattr(other, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def check_finite(x: torch.Tensor, where: str, row_offset: int = 0) -> None:
    """Raise RlsaeError naming ``where`` and the first bad row if ``x`` holds NaN or Inf."""
    bad = ~torch.isfinite(x)
    if bad.any():
        row = int(bad.reshape(bad.shape[0], -1).any(dim=1).nonzero()[0, 0]) + row_offset
        kind = "NaN" if torch.isnan(x).any() else "Inf"
        raise RlsaeError(f"{where} holds {kind} values (first at row {row}); clean the data")


class ActivationWriter:
    """Write activations into a new store directory, shard by shard.

    Use as a context manager; the store appears at ``out_dir`` only when ``close()`` succeeds
    (on leaving the ``with`` block without an exception). ``append`` takes (rows, d_in) arrays
    (numpy or torch) and, optionally, per-row context columns.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        d_in: int,
        *,
        dtype: str = "float32",
        hook: str = "",
        source: str = "",
        provider: str = "import",
        shard_rows: int = 65536,
        extra: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        if dtype not in _DTYPES:
            raise RlsaeError(f"dtype must be float16 or float32, not {dtype!r}")
        if int(d_in) < 1 or int(shard_rows) < 1:
            raise RlsaeError("d_in and shard_rows must be positive")
        self.out_dir = Path(out_dir)
        self._dir = atomic_dir(self.out_dir, overwrite=overwrite)
        self._tmp = self._dir.__enter__()  # refuses an existing out_dir unless overwrite
        self.d_in, self.dtype, self.shard_rows = int(d_in), dtype, int(shard_rows)
        self.overwrite = overwrite
        self._meta = {
            "hook": hook,
            "source": source,
            "provider": provider,
            "extra": dict(extra or {}),
        }
        self._buf: list[torch.Tensor] = []
        self._buf_rows = 0
        self._shards: list[dict[str, Any]] = []
        self._rows = 0
        self._context: list[Any] = []
        self._context_rows = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether ``close()`` or ``abort()`` has ended this writer."""
        return self._closed

    @property
    def rows(self) -> int:
        """Rows appended so far."""
        return self._rows + 0

    def append(self, acts: Any, context: dict[str, Sequence] | pd.DataFrame | None = None) -> None:
        """Append a (rows, d_in) block of activations and, optionally, its context rows."""
        x = torch.as_tensor(np.asarray(acts) if not isinstance(acts, torch.Tensor) else acts)
        x = x.detach().to("cpu")
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise RlsaeError(
                f"activations must have shape (rows, {self.d_in}), got {tuple(x.shape)}"
            )
        if x.is_complex():
            raise RlsaeError("activations are complex numbers; import real values")
        if not torch.is_floating_point(x):
            x = x.float()
        check_finite(x, "appended activations", self._rows + self._buf_rows)
        x = x.to(_DTYPES[self.dtype]).contiguous()
        if self.dtype == "float16":
            check_finite(x, "activations after conversion to float16", self._rows + self._buf_rows)
        if context is not None:
            import pandas as pd

            df = context if isinstance(context, pd.DataFrame) else pd.DataFrame(dict(context))
            if len(df) != x.shape[0]:
                raise RlsaeError(f"context has {len(df)} rows but activations have {x.shape[0]}")
            if self._context_rows != self._rows + self._buf_rows:
                raise RlsaeError("give context with every append or with none")
            self._context.append(df.reset_index(drop=True))
            self._context_rows += len(df)
        elif self._context:
            raise RlsaeError("give context with every append or with none")
        self._buf.append(x)
        self._buf_rows += x.shape[0]
        while self._buf_rows >= self.shard_rows:
            self._flush(self.shard_rows)

    def _flush(self, n: int) -> None:
        from safetensors.torch import save_file

        allx = torch.cat(self._buf) if len(self._buf) > 1 else self._buf[0]
        shard, rest = allx[:n].contiguous(), allx[n:]
        name = _shard_name(len(self._shards))
        save_file({"activations": shard}, str(self._tmp / name))
        self._shards.append({"file": name, "rows": int(shard.shape[0])})
        self._rows += int(shard.shape[0])
        self._buf = [rest] if rest.shape[0] else []
        self._buf_rows = int(rest.shape[0])

    def add_file(self, name: str, data: bytes) -> None:
        """Add a provider's own file (e.g. ``episodes.json``) beside the shards."""
        if "/" in name or name in ("meta.json", "context.parquet") or name.startswith("shard_"):
            raise RlsaeError(f"cannot add a file named {name!r} to a store")
        (self._tmp / name).write_bytes(data)

    def close(self) -> Path:
        """Finish the store and rename it into place. Raises RlsaeError if no rows were written."""
        if self._closed:
            return self.out_dir
        try:
            if self._buf_rows:
                self._flush(self._buf_rows)
            if self._rows == 0:
                raise RlsaeError(f"no activations were written to {self.out_dir}; nothing to store")
            columns: list[str] = []
            if self._context:
                import pandas as pd

                df = pd.concat(self._context, ignore_index=True)
                df.to_parquet(self._tmp / "context.parquet", index=False)
                columns = [str(c) for c in df.columns]
            meta = {
                "format": FORMAT,
                "version": VERSION,
                "d_in": self.d_in,
                "dtype": self.dtype,
                "hook": self._meta["hook"],
                "source": self._meta["source"],
                "provider": self._meta["provider"],
                "rows": self._rows,
                "shards": self._shards,
                "context_columns": columns,
                "extra": self._meta["extra"],
            }
            atomic_write_json(self._tmp / "meta.json", meta)
        except BaseException:
            self.abort()
            raise
        if self.out_dir.exists() and not self.overwrite:
            self.abort()
            raise RlsaeError(f"{self.out_dir} appeared while writing; remove it and re-run")
        self._closed = True
        self._dir.__exit__(None, None, None)  # renames the finished store into place
        return self.out_dir

    def abort(self) -> None:
        """Throw away everything written so far (nothing once the writer is closed)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RlsaeError):
            self._dir.__exit__(RlsaeError, RlsaeError("aborted"), None)

    def __enter__(self) -> ActivationWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _safetensors_header(path: Path) -> dict[str, Any]:
    """Read and check a safetensors header; RlsaeError if the file is truncated or corrupt."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("too short")
            n = int.from_bytes(head, "little")
            if n <= 0 or n > size - 8:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
        end = max(
            (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0
        )
        if 8 + n + end != size:
            raise ValueError(f"expected {8 + n + end} bytes, found {size}")
        return header
    except FileNotFoundError:
        raise RlsaeError(f"{path} is missing") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise RlsaeError(f"{path} is truncated or not a safetensors file ({e})") from None


class ActivationStore:
    """Read an activation store lazily. Opening validates meta.json and every shard's header."""

    def __init__(self, path: str | os.PathLike, *, window_rows: int = 131072) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise RlsaeError(f"activation store {self.path} not found")
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise RlsaeError(f"{self.path} is not an activation store (no meta.json)")
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise RlsaeError(f"{meta_path} is not rlsae activation-store metadata")
        try:
            self.d_in = int(meta["d_in"])
            self.rows = int(meta["rows"])
            self.dtype = str(meta["dtype"])
            shards = [(str(s["file"]), int(s["rows"])) for s in meta["shards"]]
        except (KeyError, TypeError, ValueError) as e:
            raise RlsaeError(f"{meta_path} is missing or has a bad field ({e})") from None
        if self.rows <= 0 or not shards:
            raise RlsaeError(
                f"activation store {self.path} is empty; record or import activations first"
            )
        if sum(r for _, r in shards) != self.rows:
            raise RlsaeError(f"{meta_path}: shard rows do not add up to rows={self.rows}")
        for name, rows in shards:
            header = _safetensors_header(self.path / name)
            t = header.get("activations")
            if not isinstance(t, dict) or t.get("shape") != [rows, self.d_in]:
                raise RlsaeError(
                    f"{self.path / name}: expected tensor 'activations' of shape ({rows}, {self.d_in})"
                )
        self.meta: dict[str, Any] = meta
        self.hook: str = str(meta.get("hook", ""))
        self.source: str = str(meta.get("source", ""))
        self.provider: str = str(meta.get("provider", ""))
        self.extra: dict[str, Any] = dict(meta.get("extra") or {})
        self._shards = shards
        self._starts = np.cumsum([0] + [r for _, r in shards])
        self.window_rows = int(window_rows)

    def identity(self) -> StoreIdentity:
        """What this store is, for comparing it with the store a run started on (see the module
        docstring for what the fingerprint covers)."""
        return StoreIdentity(
            d_in=self.d_in,
            rows=self.rows,
            dtype=self.dtype,
            hook=self.hook,
            source=self.source,
            fingerprint=self.fingerprint(),
        )

    def fingerprint(self) -> str:
        """SHA-256 (hex, 16 characters) of meta.json and each shard's size, header and first and
        last 64 KiB of data."""
        h = hashlib.sha256((self.path / "meta.json").read_bytes())
        for name, _ in self._shards:
            path = self.path / name
            size = path.stat().st_size
            with open(path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                h.update(size.to_bytes(8, "little") + f.read(n))
                start = 8 + n
                h.update(f.read(min(_EDGE, size - start)))
                f.seek(max(start, size - _EDGE))
                h.update(f.read())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r}, rows={self.rows}, d_in={self.d_in})"

    def __len__(self) -> int:
        return self.rows

    @property
    def n_shards(self) -> int:
        """Number of shard files."""
        return len(self._shards)

    def load_shard(self, i: int) -> torch.Tensor:
        """Shard ``i`` as a float32 tensor, checked for NaN/Inf (error names shard and row)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        name = self._shards[i][0]
        try:
            x = load_file(str(self.path / name))["activations"]
        except (SafetensorError, OSError, KeyError) as e:
            raise RlsaeError(f"{self.path / name} cannot be read ({e})") from None
        x = x.float()
        check_finite(x, f"{self.path / name}", 0)
        return x

    def iter_sequential(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Yield float32 batches in row order; the last one may be short."""
        pending: list[torch.Tensor] = []
        n = 0
        for i in range(self.n_shards):
            pending.append(self.load_shard(i))
            n += pending[-1].shape[0]
            if n >= batch_size:
                allx = torch.cat(pending)
                full = (n // batch_size) * batch_size
                yield from allx[:full].split(batch_size)
                pending, n = ([allx[full:]] if n > full else []), n - full
        if n:
            yield torch.cat(pending)

    def _windows(self, order: list[int]) -> list[list[int]]:
        per = max(1, self.window_rows // max(1, max(r for _, r in self._shards)))
        return [order[i : i + per] for i in range(0, len(order), per)]

    def iter_batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epochs: int = 1,
        drop_last: bool = False,
        start_batch: int = 0,
    ) -> Iterator[torch.Tensor]:
        """Yield float32 batches, shuffled with ``seed`` (shard order, then rows in a window).

        Rows left over at the end of a window carry into the next, so every batch but the last of
        an epoch is full; the last is dropped with ``drop_last``. ``start_batch`` skips that many
        batches without reading the skipped shards, so an interrupted run resumes exactly.
        """
        if batch_size < 1:
            raise RlsaeError("batch size must be positive")
        produced = 0
        for epoch in range(epochs):
            g = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
            order = (
                torch.randperm(self.n_shards, generator=g).tolist()
                if shuffle
                else list(range(self.n_shards))
            )
            carry_idx = torch.empty(0, dtype=torch.long)  # global row indices carried over
            carry: torch.Tensor | None = torch.empty(0, self.d_in)
            windows = self._windows(order)
            for w, shards in enumerate(windows):
                idx = torch.cat(
                    [carry_idx]
                    + [torch.arange(int(self._starts[s]), int(self._starts[s + 1])) for s in shards]
                )
                perm = (
                    torch.randperm(idx.numel(), generator=g)
                    if shuffle
                    else torch.arange(idx.numel())
                )
                last = w == len(windows) - 1
                n_full = idx.numel() // batch_size
                n_out = n_full + (1 if last and not drop_last and idx.numel() % batch_size else 0)
                if produced + n_out <= start_batch:  # skip this window without reading it
                    produced += n_out
                    carry, carry_idx = None, idx[perm[n_full * batch_size :]]
                    continue
                if carry is None:
                    carry = (
                        self.read_rows(carry_idx)
                        if carry_idx.numel()
                        else torch.empty(0, self.d_in)
                    )
                data = torch.cat([carry] + [self.load_shard(s) for s in shards])
                data = data[perm]
                idxp = idx[perm]
                for b in range(n_out):
                    if produced >= start_batch:
                        yield data[b * batch_size : (b + 1) * batch_size]
                    produced += 1
                carry = data[n_full * batch_size :].clone()
                carry_idx = idxp[n_full * batch_size :]

    def batches_per_epoch(self, batch_size: int, drop_last: bool = False) -> int:
        """How many batches ``iter_batches`` yields per epoch."""
        return self.rows // batch_size if drop_last else math.ceil(self.rows / batch_size)

    def read_rows(self, idx: Any) -> torch.Tensor:
        """Rows at the given global indices, in the order given, as float32."""
        idx_t = torch.as_tensor(np.asarray(idx), dtype=torch.long).reshape(-1)
        if idx_t.numel() and (int(idx_t.min()) < 0 or int(idx_t.max()) >= self.rows):
            raise RlsaeError(f"row index out of range for a store of {self.rows} rows")
        out = torch.empty(idx_t.numel(), self.d_in)
        shard_of = torch.as_tensor(np.searchsorted(self._starts, idx_t.numpy(), side="right") - 1)
        for s in torch.unique(shard_of).tolist():
            sel = (shard_of == s).nonzero().reshape(-1)
            out[sel] = self.load_shard(s)[idx_t[sel] - int(self._starts[s])]
        return out

    def context(self) -> pd.DataFrame | None:
        """The per-row context table, or None if the store has none."""
        p = self.path / "context.parquet"
        if not p.is_file():
            return None
        import pandas as pd

        try:
            return pd.read_parquet(p)
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise RlsaeError(f"{p} cannot be read ({e})") from None

    def mean(self, max_rows: int = 262144) -> torch.Tensor:
        """Mean activation over (up to ``max_rows``) rows, read in row order."""
        total, n = torch.zeros(self.d_in, dtype=torch.float64), 0
        for x in self.iter_sequential(8192):
            take = min(x.shape[0], max_rows - n)
            total += x[:take].double().sum(0)
            n += take
            if n >= max_rows:
                break
        return (total / n).float()


def _load_matrix(src: Path) -> Any:
    suffix = src.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(src, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise RlsaeError(f"{src} is not a readable .npy array ({e})") from None
    if suffix in (".pt", ".pth"):
        try:
            obj = torch.load(src, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for bad files
            raise RlsaeError(
                f"{src} is not a readable tensor file ({str(e).splitlines()[0]})"
            ) from None
        if not isinstance(obj, torch.Tensor):
            raise RlsaeError(f"{src} must hold a single tensor, not {type(obj).__name__}")
        return obj
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        header = _safetensors_header(src)
        keys = [k for k in header if k != "__metadata__"]
        try:
            tensors = load_file(str(src))
        except (SafetensorError, OSError) as e:
            raise RlsaeError(f"{src} cannot be read ({e})") from None
        if "activations" in tensors:
            return tensors["activations"]
        if len(keys) != 1:
            raise RlsaeError(
                f"{src} holds {len(keys)} tensors; name the one to import 'activations'"
            )
        return tensors[keys[0]]
    raise RlsaeError(f"{src}: unsupported file type {suffix!r}; use .npy, .pt or .safetensors")


def import_activations(
    src_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    chunk_rows: int = 65536,
    **writer_kwargs: Any,
) -> Path:
    """Import an (N, d) matrix from .npy, .pt (tensor only) or .safetensors into a new store."""
    src = Path(src_file)
    if not src.is_file():
        raise RlsaeError(f"{src} not found")
    dtype = writer_kwargs.get("dtype", "float32")
    if dtype not in _DTYPES:
        raise RlsaeError(f"dtype must be float16 or float32, not {dtype!r}")
    for name, value in (
        ("chunk_rows", chunk_rows),
        ("shard_rows", writer_kwargs.get("shard_rows", 1)),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RlsaeError(f"{name} must be a positive integer, got {value!r}")
    out = Path(out_dir)
    if out.exists() and not writer_kwargs.get("overwrite", False):
        raise RlsaeError(f"{out} already exists; choose another --out or remove it")
    m = _load_matrix(src)
    if len(m.shape) != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise RlsaeError(
            f"{src} must hold a non-empty 2-D (rows, d) matrix, got shape {tuple(m.shape)}"
        )
    if isinstance(m, np.ndarray) and not np.issubdtype(m.dtype, np.number):
        raise RlsaeError(f"{src} holds {m.dtype} data, not numbers")
    if np.iscomplexobj(m) if isinstance(m, np.ndarray) else m.is_complex():
        raise RlsaeError(f"{src} holds complex numbers ({m.dtype}); import real values")
    writer_kwargs.setdefault("provider", "import")
    writer_kwargs.setdefault("source", src.stem)
    with ActivationWriter(out_dir, int(m.shape[1]), **writer_kwargs) as w:
        for i in range(0, m.shape[0], chunk_rows):
            block = m[i : i + chunk_rows]
            block = (
                torch.from_numpy(np.array(block, dtype=np.float32))
                if isinstance(block, np.ndarray)
                else block
            )
            block = torch.as_tensor(block).float()
            check_finite(block, str(src), i)
            w.append(block)
    return Path(out_dir)
