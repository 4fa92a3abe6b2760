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


def _merge_top_distinct(
    vals: torch.Tensor, rows: torch.Tensor, groups: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per feature (row of the inputs), the ``n`` largest values with pairwise distinct groups."""
    order = vals.argsort(dim=1, descending=True)
    v, r, g = vals.gather(1, order), rows.gather(1, order), groups.gather(1, order)
    by_group = g.argsort(dim=1, stable=True)  # stable: best value first within each group
    gs = g.gather(1, by_group)
    first = torch.ones_like(gs, dtype=torch.bool)
    first[:, 1:] = gs[:, 1:] != gs[:, :-1]
    keep = torch.zeros_like(first).scatter_(1, by_group, first)
    v = torch.where(keep, v, torch.full_like(v, NEG))
    if v.shape[1] < n:
        pad = n - v.shape[1]
        v = torch.cat([v, torch.full((v.shape[0], pad), NEG)], 1)
        r = torch.cat([r, torch.full((r.shape[0], pad), -1, dtype=r.dtype)], 1)
        g = torch.cat([g, torch.full((g.shape[0], pad), -1, dtype=g.dtype)], 1)
    top_v, ti = v.topk(n, dim=1)
    return top_v, r.gather(1, ti), g.gather(1, ti)


def _group_max(acts: torch.Tensor, gid: torch.Tensor, n_groups: int):
    """Per (local group, feature): the maximum activation and the batch row that reaches it."""
    b, f = acts.shape
    idx = gid[:, None].expand(b, f)
    gmax = torch.full((n_groups, f), NEG).scatter_reduce(0, idx, acts, "amax", include_self=True)
    hit = acts == gmax.gather(0, idx)
    pos = torch.arange(b)[:, None].expand(b, f)
    cand = torch.where(hit, pos, torch.full_like(pos, -1))
    garg = torch.full((n_groups, f), -1, dtype=torch.long).scatter_reduce(
        0, idx, cand, "amax", include_self=True
    )
    return gmax, garg


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
    group). ``progress`` is called with the number of rows done in each batch.
    """
    f = int(sae.cfg.d_sae)
    n = int(cfg.top)
    rows_total = int(store.rows)
    g_all = torch.tensor(np.asarray(groups), dtype=torch.long) if groups is not None else None

    firing = torch.zeros(f, dtype=torch.long)
    sums = torch.zeros(f, dtype=torch.float64)
    maxv = torch.zeros(f)
    top_v = torch.full((f, n), NEG)
    top_r = torch.full((f, n), -1, dtype=torch.long)
    top_g = torch.full((f, n), -1, dtype=torch.long)
    sse = 0.0
    l0 = 0.0
    xsum = torch.zeros(store.d_in, dtype=torch.float64)
    xsq = torch.zeros(store.d_in, dtype=torch.float64)

    for start, x in _batches(store, cfg.batch_size):
        b = x.shape[0]
        acts = sae.encode(x).float()
        fire = acts > 0
        firing += fire.sum(0)
        sums += acts.sum(0, dtype=torch.float64)
        maxv = torch.maximum(maxv, acts.amax(0))
        l0 += float(fire.sum())
        recon = sae.decode(acts)
        sse += float(((x - recon).double() ** 2).sum())
        xsum += x.double().sum(0)
        xsq += (x.double() ** 2).sum(0)
        rows = torch.arange(start, start + b)
        if g_all is None:
            cand_v, cand_r, cand_g = acts.T, rows.expand(f, b), rows.expand(f, b)
        else:
            gb = g_all[start : start + b]
            uniq, gid = torch.unique(gb, return_inverse=True)
            gmax, garg = _group_max(acts, gid, len(uniq))
            cand_v = gmax.T
            cand_r = (garg + start).T
            cand_g = uniq[:, None].expand_as(garg).T
        top_v, top_r, top_g = _merge_top_distinct(
            torch.cat([top_v, cand_v], 1),
            torch.cat([top_r, cand_r], 1),
            torch.cat([top_g, cand_g], 1),
            n,
        )
        if progress:
            progress(b)

    nb = int(cfg.hist_bins)
    hist = torch.zeros(f * nb, dtype=torch.long)
    intervals = list(cfg.intervals)
    s = int(cfg.samples_per_interval)
    iv_key = torch.full((f, len(intervals), s), float("inf"))
    iv_v = torch.zeros((f, len(intervals), s))
    iv_r = torch.full((f, len(intervals), s), -1, dtype=torch.long)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    safe_max = torch.where(maxv > 0, maxv, torch.ones_like(maxv))
    for start, x in _batches(store, cfg.batch_size):
        b = x.shape[0]
        acts = sae.encode(x).float()
        rr, ff = (acts > 0).nonzero(as_tuple=True)
        vals = acts[rr, ff]
        bins = (vals / safe_max[ff] * nb).long().clamp_(0, nb - 1)
        hist.index_add_(0, ff * nb + bins, torch.ones_like(bins))
        if intervals:
            frac = acts / safe_max
            keys = torch.rand(acts.shape, generator=gen)
            rows = torch.arange(start, start + b)
            for j, (lo, hi) in enumerate(intervals):
                inside = (acts > 0) & (frac > lo) & (frac <= hi)
                k = torch.where(inside, keys, torch.full_like(keys, float("inf"))).T
                allk = torch.cat([iv_key[:, j], k], 1)
                allv = torch.cat([iv_v[:, j], acts.T], 1)
                allr = torch.cat([iv_r[:, j], rows.expand(f, b)], 1)
                best, bi = allk.topk(s, dim=1, largest=False)
                iv_key[:, j], iv_v[:, j], iv_r[:, j] = best, allv.gather(1, bi), allr.gather(1, bi)
        if progress:
            progress(b)
    iv_r = torch.where(torch.isinf(iv_key), torch.full_like(iv_r, -1), iv_r)

    sst = float((xsq - xsum**2 / max(1, rows_total)).sum())
    metrics = {
        "rows": rows_total,
        "d_sae": f,
        "d_in": int(store.d_in),
        "l0": l0 / max(1, rows_total),
        "fvu": sse / sst if sst > 0 else float("nan"),
        "mse": sse / max(1, rows_total * store.d_in),
        "dead": int((firing == 0).sum()),
        "live": int((firing > 0).sum()),
        "dense": int((firing > 0.1 * rows_total).sum()),
    }
    mean = torch.where(firing > 0, sums / firing.clamp(min=1).double(), torch.zeros_like(sums))
    top_r = torch.where(top_v > 0, top_r, torch.full_like(top_r, -1))
    return FeatureScan(
        rows=rows_total,
        firing_counts=firing.numpy(),
        max_act=maxv.numpy(),
        mean_act=mean.float().numpy(),
        hist=hist.view(f, nb).numpy(),
        top_vals=top_v.numpy(),
        top_rows=top_r.numpy(),
        interval_vals=iv_v.numpy(),
        interval_rows=iv_r.numpy(),
        metrics=metrics,
    )


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
