"""How well an SAE reconstructs a store, and which latents fire: ``evaluate_sae``.

One sequential pass over the store. Reconstruction figures are pooled over every row and
dimension: ``fvu`` = sum of squared errors / sum of squared deviations from the store's mean
(fraction of variance unexplained), ``explained_variance`` = 1 - fvu, ``mse`` = mean squared error
per element. ``l0`` = mean active latents per row. A latent is ``dead`` if it never fires over the
evaluated rows and ``dense`` if it fires on more than 10% of them. The figures are a typed
artifact (``SAEMetrics``: ``sae eval --json``, ``training.json``'s ``final``); the per-latent
``firing_counts``, ``max_activation`` and ``mean_activation`` are tensors (``FeatureStats``,
written as ``feature_stats.safetensors``), not JSON.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from rlsae.artifacts import Artifact
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_bytes
from rlsae.sae.config import check_eval_args
from rlsae.sae.model import SAE
from rlsae.sae.store import ActivationStore

FEATURE_STATS = "feature_stats.safetensors"
TENSOR_KEYS = ("firing_counts", "max_activation", "mean_activation")
DENSE_FRACTION = 0.1

__all__ = [
    "FeatureStats",
    "PrefixMetrics",
    "SAEEvaluation",
    "SAEMetrics",
    "check_compatible",
    "check_eval_args",
    "evaluate_sae",
    "live_feature_count",
]


@dataclass
class PrefixMetrics:
    """A Matryoshka SAE's figures from its first ``width`` latents alone."""

    width: int
    """Latents in the prefix."""
    fvu: float | None
    """Fraction of variance unexplained by the prefix's reconstruction (None: no variance)."""
    l0: float
    """Mean active latents of the prefix per row."""


@dataclass
class SAEMetrics(Artifact):
    """An SAE's reconstruction and firing figures over (part of) an activation store."""

    FORMAT: ClassVar[str] = "rlsae.sae_metrics"
    VERSION: ClassVar[int] = 1

    fvu: float | None
    """Fraction of variance unexplained; None when the evaluated rows have no variance."""
    explained_variance: float | None
    """1 - fvu; None with fvu."""
    mse: float
    """Mean squared reconstruction error per element."""
    l0: float
    """Mean active latents per row."""
    dead: int
    """Latents that never fired over the evaluated rows."""
    dense: int
    """Latents that fired on more than 10% of the evaluated rows."""
    d_sae: int
    """Number of latents."""
    rows: int
    """Rows evaluated."""
    feature_stats: str | None = None
    """Where the per-latent statistics were written (None: not written)."""
    prefixes: list[PrefixMetrics] | None = None
    """Matryoshka SAEs: FVU and L0 of every nested prefix, narrowest first (None otherwise)."""


@dataclass
class FeatureStats:
    """Per-latent statistics over the evaluated rows (``feature_stats.safetensors``)."""

    firing_counts: torch.Tensor
    """(d_sae,) int64: rows on which each latent fired."""
    max_activation: torch.Tensor
    """(d_sae,) float32: largest activation of each latent."""
    mean_activation: torch.Tensor
    """(d_sae,) float32: mean activation of each latent over all rows."""
    rows: int
    """Rows evaluated."""

    def write(self, sae_dir: str | os.PathLike) -> Path:
        """Write ``feature_stats.safetensors`` (the three tensors and ``rows``) atomically."""
        from safetensors.torch import save

        path = Path(sae_dir) / FEATURE_STATS
        tensors = {k: getattr(self, k).contiguous() for k in TENSOR_KEYS}
        tensors["rows"] = torch.tensor([int(self.rows)], dtype=torch.int64)
        atomic_write_bytes(path, save(tensors))
        return path

    @classmethod
    def read(cls, sae_dir: str | os.PathLike) -> FeatureStats:
        """Read ``feature_stats.safetensors`` from an SAE directory (one-line errors)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(sae_dir) / FEATURE_STATS
        if not path.is_file():
            raise RlsaeError(
                f"{path} not found; run `rlsae sae eval --sae {sae_dir} --acts STORE` first"
            )
        try:
            t = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise RlsaeError(f"{path} is truncated or corrupt ({e})") from None
        missing = [k for k in (*TENSOR_KEYS, "rows") if k not in t]
        if missing:
            raise RlsaeError(f"{path} has no tensor {missing[0]!r}")
        return cls(
            firing_counts=t["firing_counts"],
            max_activation=t["max_activation"],
            mean_activation=t["mean_activation"],
            rows=int(t["rows"].reshape(-1)[0]),
        )


@dataclass
class SAEEvaluation:
    """What ``evaluate_sae`` returns: the figures and the per-latent statistics."""

    metrics: SAEMetrics
    stats: FeatureStats


def check_compatible(sae: SAE, store: ActivationStore, *, check_hook: bool = False) -> None:
    """RlsaeError if the store's width (or, with ``check_hook``, its hook) differs from the SAE's."""
    if sae.cfg.d_in != store.d_in:
        raise RlsaeError(
            f"SAE expects d_in={sae.cfg.d_in} but the store {store.path} has d_in={store.d_in}; "
            "use the SAE trained on this layer"
        )
    if check_hook and sae.cfg.hook_name and store.hook and sae.cfg.hook_name != store.hook:
        raise RlsaeError(
            f"SAE was trained on hook {sae.cfg.hook_name!r} but the store {store.path} holds {store.hook!r}"
        )


class _Tally:
    """Running sums of one evaluation pass."""

    def __init__(self, d_sae: int, d_in: int) -> None:
        self.n = d_sae
        self.counts = torch.zeros(d_sae, dtype=torch.int64)
        self.max_act = torch.zeros(d_sae)
        self.sum_act = torch.zeros(d_sae, dtype=torch.float64)
        self.sq_err = 0.0
        self.sum_x = torch.zeros(d_in, dtype=torch.float64)
        self.sum_x2 = 0.0
        self.active = 0
        self.rows = 0
        self.widths: list[int] = []
        self.prefix_err: list[float] = []
        self.prefix_active: list[int] = []

    def add(self, sae: SAE, x: torch.Tensor) -> None:
        n = self.n
        if sae.cfg.arch == "topk":
            vals, idx = sae.encode_topk(x)
            recon = sae.decode_sparse(vals, idx)
            fire = vals > 0
            self.counts += torch.bincount(idx[fire], minlength=n)
            self.sum_act.index_add_(0, idx.reshape(-1), vals.reshape(-1).double())
            batch_max = torch.zeros(n).scatter_reduce_(
                0, idx.reshape(-1), vals.reshape(-1).float(), "amax"
            )
            self.max_act = torch.maximum(self.max_act, batch_max)
        else:
            f = sae.encode(x)
            recon = sae.decode(f)
            fire = f > 0
            if sae.cfg.matryoshka_groups:
                self._add_prefixes(sae, x, f)
            self.counts += fire.sum(0)
            self.sum_act += f.double().sum(0)
            self.max_act = torch.maximum(self.max_act, f.float().amax(0))
        self.active += int(fire.sum())
        self.sq_err += float((recon.double() - x.double()).pow(2).sum())
        self.sum_x += x.double().sum(0)
        self.sum_x2 += float(x.double().pow(2).sum())
        self.rows += x.shape[0]

    def _add_prefixes(self, sae: SAE, x: torch.Tensor, f: torch.Tensor) -> None:
        """Matryoshka: squared errors and active latents of every nested prefix."""
        if not self.widths:
            total = 0
            for g in sae.cfg.matryoshka_groups or []:
                total += g
                self.widths.append(total)
            self.prefix_err = [0.0] * len(self.widths)
            self.prefix_active = [0] * len(self.widths)
        for i, w in enumerate(self.widths):
            recon = f[:, :w] @ sae.W_dec[:w] + sae.b_dec
            self.prefix_err[i] += float((recon.double() - x.double()).pow(2).sum())
            self.prefix_active[i] += int((f[:, :w] > 0).sum())

    def result(self) -> SAEEvaluation:
        rows, d = self.rows, self.sum_x.numel()
        total_var = self.sum_x2 - float((self.sum_x * self.sum_x).sum()) / rows
        fvu = self.sq_err / total_var if total_var > 0 else None
        prefixes = [
            PrefixMetrics(w, err / total_var if total_var > 0 else None, act / rows)
            for w, err, act in zip(self.widths, self.prefix_err, self.prefix_active, strict=True)
        ]
        metrics = SAEMetrics(
            fvu=fvu,
            explained_variance=None if fvu is None else 1.0 - fvu,
            mse=self.sq_err / (rows * d),
            l0=self.active / rows,
            dead=int((self.counts == 0).sum()),
            dense=int((self.counts > DENSE_FRACTION * rows).sum()),
            d_sae=self.n,
            rows=rows,
            prefixes=prefixes or None,
        )
        stats = FeatureStats(self.counts, self.max_act, (self.sum_act / rows).float(), rows=rows)
        return SAEEvaluation(metrics, stats)


@torch.no_grad()
def evaluate_sae(
    sae: SAE,
    store: ActivationStore,
    batch_size: int = 4096,
    *,
    max_rows: int | None = None,
    check_hook: bool = False,
    progress: bool = False,
) -> SAEEvaluation:
    """Reconstruction and firing statistics of ``sae`` over ``store`` (or its first ``max_rows``).
    A batch size or row limit below 1 is refused before any work."""
    check_eval_args(batch_size, max_rows)
    check_compatible(sae, store, check_hook=check_hook)
    tally = _Tally(sae.cfg.d_sae, sae.cfg.d_in)
    limit = max_rows if max_rows is not None else store.rows
    batches: Any = store.iter_sequential(batch_size)
    if progress:
        from tqdm import tqdm

        total = -(-min(limit, store.rows) // batch_size)
        batches = tqdm(batches, total=total, desc="eval", unit="batch", leave=False)
    for x in batches:
        x = x[: limit - tally.rows]
        if x.shape[0] == 0:
            break
        tally.add(sae, x)
        if tally.rows >= limit:
            break
    if tally.rows == 0:
        raise RlsaeError(f"activation store {store.path} has no rows to evaluate")
    return tally.result()


def live_feature_count(firing_counts: torch.Tensor | Any, threshold: int = 1) -> int:
    """Latents that fired at least ``threshold`` times (``threshold=1``: not dead)."""
    c = torch.as_tensor(firing_counts)
    return int((c >= threshold).sum())
