"""How well an SAE recovers known features: ``ground_truth_metrics(sae, truth, store)``.

With the true directions D (n_features, d_in) and the SAE's decoder rows W (d_sae, d_in), both
normalised to unit rows, C = D W^T holds every cosine:

- ``mmcs_truth``: mean over true features of their best cosine with a decoder row (ground truth
  -> decoder); ``mmcs_sae``: mean over decoder rows of their best cosine with a true feature;
- ``recovered``: fraction of true features with a decoder row at cosine >= 0.9;
- ``mcc`` (given the true activations of the store's rows, as ``rlsae acts synth`` writes them):
  the mean over true features of the Pearson correlation, over the rows, between the feature's
  true activation and that of its best-matching latent (SynthSAEBench-style); a constant series
  counts as correlation 0.
- ``absorption`` (hierarchical truth only): over rows where a parent and at least one of its
  children fire, the fraction where the parent's best-matching latent does not fire.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from rlsae.artifacts import Artifact
from rlsae.errors import RlsaeError
from rlsae.sae.model import SAE
from rlsae.sae.store import ActivationStore

RECOVERED_COSINE = 0.9


@dataclass
class GroundTruth:
    """Planted directions and, optionally, their activations on the store's rows."""

    directions: torch.Tensor
    """(n_features, d_in)."""
    act_rows: torch.Tensor | None = None
    act_features: torch.Tensor | None = None
    act_values: torch.Tensor | None = None
    parent: torch.Tensor | None = None
    """(n_features,) parent index, -1 for none (None: no hierarchy recorded)."""


@dataclass
class GroundTruthMetrics(Artifact):
    """An SAE against planted features (see the module docstring)."""

    FORMAT: ClassVar[str] = "rlsae.ground_truth_metrics"
    VERSION: ClassVar[int] = 1

    n_features: int
    """True features."""
    mmcs_truth: float
    """Mean over true features of the best cosine with a decoder row."""
    mmcs_sae: float
    """Mean over decoder rows of the best cosine with a true feature."""
    recovered: float
    """Fraction of true features with a decoder row at cosine >= 0.9."""
    mcc: float | None = None
    """Mean correlation of each true feature's activation with its best-matching latent's
    (None without the true activations)."""
    absorption: float | None = None
    """Hierarchical truth: fraction of parent-and-child rows where the parent's latent is off."""
    rows: int = 0
    """Rows the activation figures were measured on."""


def read_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """A ground-truth file: ``.safetensors`` (``directions`` and, from ``acts synth``, the true
    activations), or a (n_features, d_in) matrix as ``.npy`` or ``.pt``."""
    path = Path(path)
    if not path.is_file():
        raise RlsaeError(f"ground truth {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            t = load_file(str(path))
            if "directions" not in t:
                raise RlsaeError(f"{path} has no tensor 'directions'")
            gt = GroundTruth(
                t["directions"].float(),
                t.get("act_rows"),
                t.get("act_features"),
                t.get("act_values"),
                t.get("parent"),
            )
        elif path.suffix == ".npy":
            import numpy as np

            gt = GroundTruth(torch.as_tensor(np.load(path)).float())
        else:
            gt = GroundTruth(torch.load(path, map_location="cpu", weights_only=True).float())
    except RlsaeError:
        raise
    except Exception as e:  # numpy, torch and safetensors raise several types
        raise RlsaeError(f"{path} cannot be read ({str(e).splitlines()[0]})") from None
    if gt.directions.ndim != 2 or not torch.isfinite(gt.directions).all():
        raise RlsaeError(f"{path}: directions must be a finite (n_features, d_in) matrix")
    return gt


def _unit(m: torch.Tensor) -> torch.Tensor:
    m = m.detach().float()
    return m / m.norm(dim=1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def ground_truth_metrics(
    sae: SAE, truth: GroundTruth, store: ActivationStore | None = None, batch_size: int = 4096
) -> GroundTruthMetrics:
    """The figures of the module docstring; the activation ones need ``store`` and the truth's
    activations (rows beyond the truth's are refused)."""
    n, d = truth.directions.shape
    if d != sae.cfg.d_in:
        raise RlsaeError(f"ground truth has d_in={d}, the SAE {sae.cfg.d_in}")
    cos = _unit(truth.directions) @ _unit(sae.W_dec).t()
    best, match = cos.max(1)
    out = GroundTruthMetrics(
        n_features=n,
        mmcs_truth=float(best.mean()),
        mmcs_sae=float(cos.max(0).values.mean()),
        recovered=float((best >= RECOVERED_COSINE).float().mean()),
    )
    if store is None or truth.act_rows is None:
        return out
    assert truth.act_features is not None and truth.act_values is not None
    if truth.act_rows.numel() and int(truth.act_rows.max()) >= store.rows:
        raise RlsaeError("ground truth's activations name rows beyond the store's")
    order = torch.argsort(truth.act_rows, stable=True)
    rows_s = truth.act_rows[order]
    feats_s, vals_s = truth.act_features[order], truth.act_values[order].double()
    s = {k: torch.zeros(n, dtype=torch.float64) for k in ("a", "f", "aa", "ff", "af")}
    absorbed = torch.zeros(2, dtype=torch.float64)  # (parent+child rows, of them parent latent off)
    start = 0
    for x in store.iter_sequential(batch_size):
        b = x.shape[0]
        lo, hi = torch.searchsorted(rows_s, torch.tensor([start, start + b]))
        a = torch.zeros(b, n, dtype=torch.float64)
        a[rows_s[lo:hi] - start, feats_s[lo:hi]] = vals_s[lo:hi]
        f = sae.encode(x).double()[:, match]
        s["a"] += a.sum(0)
        s["f"] += f.sum(0)
        s["aa"] += (a * a).sum(0)
        s["ff"] += (f * f).sum(0)
        s["af"] += (a * f).sum(0)
        if truth.parent is not None and bool((truth.parent >= 0).any()):
            absorbed += _absorption_counts(a > 0, f > 0, truth.parent)
        start += b
    rows = start
    cov = s["af"] / rows - s["a"] * s["f"] / rows**2
    var_a = s["aa"] / rows - (s["a"] / rows) ** 2
    var_f = s["ff"] / rows - (s["f"] / rows) ** 2
    denom = (var_a * var_f).sqrt()
    corr = torch.where(denom > 1e-12, cov / denom.clamp_min(1e-300), torch.zeros_like(cov))
    out.mcc = float(corr.mean())
    out.rows = rows
    if absorbed[0] > 0:
        out.absorption = float(absorbed[1] / absorbed[0])
    return out


def _absorption_counts(true_on: torch.Tensor, latent_on: torch.Tensor, parent: torch.Tensor) -> Any:
    """(rows where a parent and one of its children fire, those where the parent's matched
    latent is off), summed over parents."""
    total = torch.zeros(2, dtype=torch.float64)
    for p in torch.unique(parent[parent >= 0]).tolist():
        kids = (parent == p).nonzero().reshape(-1)
        both = true_on[:, p] & true_on[:, kids].any(1)
        total[0] += float(both.sum())
        total[1] += float((both & ~latent_on[:, p]).sum())
    return total
