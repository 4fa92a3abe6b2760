"""Per-feature statistics for the viewer, computed in sequential passes over an activation store.

Pass 1 encodes every row once and keeps, per feature: firing count, sum and maximum of the
activation, the top-N rows *from distinct groups* (episodes for agents, documents for language
models; every row is its own group when the store has no such column), and the SAE's
reconstruction metrics (FVU, L0). Pass 2 knows each feature's maximum, so it builds the
activation histogram (bins from 0 to the maximum) and, if asked, draws random samples from
lower activation intervals (fractions of the maximum). :func:`gather_activations` then reads the
activations of chosen (row, feature) pairs, e.g. the tokens around a top context.

Everything is vectorised over features, so a 16k-feature SAE costs a few encoder passes.
Nothing here knows about Atari or language models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

NEG = float("-inf")


@dataclass
class ScanConfig:
    """How the viewer summarises each feature."""

    top: int = 25
    """Top-activating rows kept per feature, each from a different group (episode/document)."""
    batch_size: int = 1024
    """Rows encoded at a time."""
    hist_bins: int = 30
    """Bins of the activation histogram, from 0 to the feature's maximum activation."""
    intervals: Sequence[tuple[float, float]] = ()
    """Lower activation intervals to sample from, as fractions of the max, e.g. ((0, .25),)."""
    samples_per_interval: int = 5
    """Random rows kept per interval and feature."""
    neighbours: int = 8
    """Most similar features by decoder cosine, per feature."""
    seed: int = 0
    """Seed of the interval sampling."""


@dataclass
class FeatureScan:
    """What :func:`scan_features` found; arrays are indexed by feature."""

    rows: int
    firing_counts: np.ndarray  # (F,) int64
    max_act: np.ndarray  # (F,) float32
    mean_act: np.ndarray  # (F,) float32, mean over rows where the feature fires
    hist: np.ndarray  # (F, bins) int64, bins of width max_act / bins
    top_vals: np.ndarray  # (F, top) float32, -inf where fewer were found
    top_rows: np.ndarray  # (F, top) int64, -1 where none
    interval_vals: np.ndarray  # (F, n_intervals, samples) float32
    interval_rows: np.ndarray  # (F, n_intervals, samples) int64, -1 where none
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def density(self) -> np.ndarray:
        """Fraction of rows on which each feature fires."""
        return self.firing_counts / max(1, self.rows)

    @property
    def dead(self) -> np.ndarray:
        """Features that never fired over the scanned rows."""
        return self.firing_counts == 0


def _batches(store: Any, batch_size: int):
    start = 0
    for x in store.iter_sequential(batch_size):
        yield start, x
        start += x.shape[0]


def _ranked(feat: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For entries sorted by feature: the rank of each within its feature and the mask rank < n."""
    start = np.searchsorted(feat, feat, side="left")
    rank = np.arange(len(feat)) - start
    return rank, rank < n


def _merge_top_distinct(
    top_v: np.ndarray,
    top_r: np.ndarray,
    top_g: np.ndarray,
    feat: np.ndarray,
    vals: np.ndarray,
    rows: np.ndarray,
    grps: np.ndarray,
) -> None:
    """Merge candidate (feature, value, row, group) entries into the per-feature top lists in
    place, keeping for each feature the ``n`` largest values from pairwise distinct groups.

    Only candidates above their feature's current n-th value can enter (an entry of the same
    group already listed is then below the candidate too), so after the first batches only a few
    features are touched. Cost O(candidates log candidates), not O(rows × features)."""
    n = top_v.shape[1]
    keep = vals > top_v[feat, n - 1]
    if not keep.any():
        return
    feat, vals, rows, grps = feat[keep], vals[keep], rows[keep], grps[keep]
    feats = np.unique(feat)
    old_r = top_r[feats].ravel()
    valid = old_r >= 0
    f_ = np.concatenate([feat, np.repeat(feats, n)[valid]])
    v_ = np.concatenate([vals, top_v[feats].ravel()[valid]])
    r_ = np.concatenate([rows, old_r[valid]])
    g_ = np.concatenate([grps, top_g[feats].ravel()[valid]])
    o = np.lexsort((-v_, g_, f_))  # by feature, then group, best value first
    f_, v_, r_, g_ = f_[o], v_[o], r_[o], g_[o]
    first = np.ones(len(f_), dtype=bool)
    first[1:] = (f_[1:] != f_[:-1]) | (g_[1:] != g_[:-1])
    f_, v_, r_, g_ = f_[first], v_[first], r_[first], g_[first]
    o = np.lexsort((-v_, f_))
    f_, v_, r_, g_ = f_[o], v_[o], r_[o], g_[o]
    rank, m = _ranked(f_, n)
    top_v[feats], top_r[feats], top_g[feats] = NEG, -1, -1
    top_v[f_[m], rank[m]], top_r[f_[m], rank[m]], top_g[f_[m], rank[m]] = v_[m], r_[m], g_[m]


def _merge_smallest_keys(
    keys: np.ndarray,
    vals: np.ndarray,
    rows: np.ndarray,
    feat: np.ndarray,
    k_new: np.ndarray,
    v_new: np.ndarray,
    r_new: np.ndarray,
) -> None:
    """Keep, per feature, the entries with the smallest random keys (a uniform sample without
    replacement of everything seen), merging candidates into (F, S) arrays in place."""
    s = keys.shape[1]
    keep = k_new < keys[feat, s - 1]
    if not keep.any():
        return
    feat, k_new, v_new, r_new = feat[keep], k_new[keep], v_new[keep], r_new[keep]
    feats = np.unique(feat)
    old_r = rows[feats].ravel()
    valid = old_r >= 0
    f_ = np.concatenate([feat, np.repeat(feats, s)[valid]])
    k_ = np.concatenate([k_new, keys[feats].ravel()[valid]])
    v_ = np.concatenate([v_new, vals[feats].ravel()[valid]])
    r_ = np.concatenate([r_new, old_r[valid]])
    o = np.lexsort((k_, f_))
    f_, k_, v_, r_ = f_[o], k_[o], v_[o], r_[o]
    rank, m = _ranked(f_, s)
    keys[feats], vals[feats], rows[feats] = np.inf, 0.0, -1
    keys[f_[m], rank[m]], vals[f_[m], rank[m]], rows[f_[m], rank[m]] = k_[m], v_[m], r_[m]


@dataclass
class _PassOne:
    """What the first pass accumulates (see :func:`scan_features`)."""

    firing: torch.Tensor
    sums: torch.Tensor
    maxv: torch.Tensor
    top_v: np.ndarray
    top_r: np.ndarray
    top_g: np.ndarray
    xsum: torch.Tensor
    xsq: torch.Tensor
    sse: float = 0.0
    l0: float = 0.0


@torch.no_grad()
def scan_features(
    sae: Any,
    store: Any,
    groups: np.ndarray | None,
    cfg: ScanConfig,
    progress: Callable[[int], None] | None = None,
) -> FeatureScan:
    """Two sequential passes of ``sae.encode`` over ``store``; see the module docstring.

    ``groups`` holds one integer per row (episode or document) or is ``None`` (each row its own
    group). ``progress`` is called with the number of rows done in each batch. Per-feature
    selections work on the (row, feature) pairs that fire, so their cost follows the SAE's L0,
    not its width.
    """
    f = int(sae.cfg.d_sae)
    rows_total = int(store.rows)
    one = _first_pass(sae, store, groups, cfg, progress)
    hist, iv_v, iv_r = _second_pass(sae, store, one.maxv, cfg, progress)
    firing = one.firing
    sst = float((one.xsq - one.xsum**2 / max(1, rows_total)).sum())
    metrics = {
        "rows": rows_total,
        "d_sae": f,
        "d_in": int(store.d_in),
        "l0": one.l0 / max(1, rows_total),
        "fvu": one.sse / sst if sst > 0 else float("nan"),
        "mse": one.sse / max(1, rows_total * store.d_in),
        "dead": int((firing == 0).sum()),
        "live": int((firing > 0).sum()),
        "dense": int((firing > 0.1 * rows_total).sum()),
    }
    sums = one.sums
    mean = torch.where(firing > 0, sums / firing.clamp(min=1).double(), torch.zeros_like(sums))
    return FeatureScan(
        rows=rows_total,
        firing_counts=firing.numpy(),
        max_act=one.maxv.numpy(),
        mean_act=mean.float().numpy(),
        hist=hist.view(f, int(cfg.hist_bins)).numpy(),
        top_vals=one.top_v,
        top_rows=one.top_r,
        interval_vals=iv_v,
        interval_rows=iv_r,
        metrics=metrics,
    )


def _first_pass(
    sae: Any,
    store: Any,
    groups: np.ndarray | None,
    cfg: ScanConfig,
    progress: Callable[[int], None] | None,
) -> _PassOne:
    """Firing counts, sums, maxima, the top rows from distinct groups, reconstruction error."""
    f, n = int(sae.cfg.d_sae), int(cfg.top)
    g_all = np.asarray(groups, dtype=np.int64) if groups is not None else None
    one = _PassOne(
        firing=torch.zeros(f, dtype=torch.long),
        sums=torch.zeros(f, dtype=torch.float64),
        maxv=torch.zeros(f),
        top_v=np.full((f, n), NEG, dtype=np.float32),
        top_r=np.full((f, n), -1, dtype=np.int64),
        top_g=np.full((f, n), -1, dtype=np.int64),
        xsum=torch.zeros(store.d_in, dtype=torch.float64),
        xsq=torch.zeros(store.d_in, dtype=torch.float64),
    )
    for start, x in _batches(store, cfg.batch_size):
        acts = sae.encode(x).float()
        rr, ff = (acts > 0).nonzero(as_tuple=True)
        vals = acts[rr, ff]
        one.firing += torch.bincount(ff, minlength=f)
        one.sums += torch.bincount(ff, weights=vals.double(), minlength=f)
        one.maxv = torch.maximum(one.maxv, acts.amax(0))
        one.l0 += float(len(ff))
        recon = sae.decode(acts)
        one.sse += float(((x - recon).double() ** 2).sum())
        one.xsum += x.double().sum(0)
        one.xsq += (x.double() ** 2).sum(0)
        rows = rr.numpy() + start
        grps = g_all[rows] if g_all is not None else rows
        _merge_top_distinct(one.top_v, one.top_r, one.top_g, ff.numpy(), vals.numpy(), rows, grps)
        if progress:
            progress(x.shape[0])
    return one


def _second_pass(
    sae: Any,
    store: Any,
    maxv: torch.Tensor,
    cfg: ScanConfig,
    progress: Callable[[int], None] | None,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Histogram counts (flat, F * bins) and the interval samples (values, rows), knowing each
    feature's maximum."""
    f = int(sae.cfg.d_sae)
    nb = int(cfg.hist_bins)
    hist = torch.zeros(f * nb, dtype=torch.long)
    intervals = list(cfg.intervals)
    s = int(cfg.samples_per_interval)
    iv_key = np.full((f, len(intervals), s), np.inf)
    iv_v = np.zeros((f, len(intervals), s), dtype=np.float32)
    iv_r = np.full((f, len(intervals), s), -1, dtype=np.int64)
    rng = np.random.default_rng(int(cfg.seed))
    safe_max = torch.where(maxv > 0, maxv, torch.ones_like(maxv))
    for start, x in _batches(store, cfg.batch_size):
        acts = sae.encode(x).float()
        rr, ff = (acts > 0).nonzero(as_tuple=True)
        vals = acts[rr, ff]
        frac = vals / safe_max[ff]
        bins = (frac * nb).long().clamp_(0, nb - 1)
        hist.index_add_(0, ff * nb + bins, torch.ones_like(bins))
        if intervals:
            keys = rng.random(len(ff))
            fr, fn, vn, rn = frac.numpy(), ff.numpy(), vals.numpy(), rr.numpy() + start
            for j, (lo, hi) in enumerate(intervals):
                m = (fr > lo) & (fr <= hi)
                _merge_smallest_keys(
                    iv_key[:, j], iv_v[:, j], iv_r[:, j], fn[m], keys[m], vn[m], rn[m]
                )
        if progress:
            progress(x.shape[0])
    return hist, iv_v, iv_r


@torch.no_grad()
def gather_activations(
    sae: Any, store: Any, rows: np.ndarray, features: np.ndarray, batch_size: int = 1024
) -> np.ndarray:
    """Activation of ``features[i]`` on store row ``rows[i]``, for every i (one sequential pass,
    encoding only the batches that hold a requested row)."""
    rows = np.asarray(rows, dtype=np.int64)
    features = np.asarray(features, dtype=np.int64)
    out = np.zeros(len(rows), dtype=np.float32)
    if len(rows) == 0:
        return out
    order = np.argsort(rows, kind="stable")
    srows = rows[order]
    for start, x in _batches(store, batch_size):
        lo, hi = np.searchsorted(srows, [start, start + x.shape[0]])
        if lo == hi:
            continue
        sel = order[lo:hi]
        uniq, inv = np.unique(rows[sel] - start, return_inverse=True)
        acts = sae.encode(x[torch.as_tensor(uniq)]).float()
        out[sel] = acts[torch.as_tensor(inv), torch.as_tensor(features[sel])].numpy()
    return out


@torch.no_grad()
def decoder_neighbours(
    w_dec: torch.Tensor, k: int, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """For each feature, the ``k`` other features whose decoder directions have the highest
    cosine similarity: (indices (F, k), cosines (F, k))."""
    w = w_dec.detach().float()
    w = w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)
    f = w.shape[0]
    k = max(0, min(k, f - 1))
    idx = np.zeros((f, k), dtype=np.int64)
    cos = np.zeros((f, k), dtype=np.float32)
    if k == 0:
        return idx, cos
    for s in range(0, f, chunk):
        sims = w[s : s + chunk] @ w.T
        ar = torch.arange(sims.shape[0])
        sims[ar, ar + s] = NEG
        v, i = sims.topk(k, dim=1)
        idx[s : s + chunk], cos[s : s + chunk] = i.numpy(), v.numpy()
    return idx, cos
