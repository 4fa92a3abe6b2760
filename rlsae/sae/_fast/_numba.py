"""Compiled (numba) second half of ``topk_select``: the exact top k of each row, given the row's
strided group maxima, by thresholds instead of sorting.

For one row with group maxima ``gm`` (group s = columns s, s+m, s+2m, ...):

1. t1: bisect for a value with at least k group maxima >= t1 (stop once at most 1.5k are). Those
   maxima are distinct entries, so the row's k-th largest value is >= t1: every top-k entry lies
   in a group whose maximum is >= t1.
2. Gather the entries >= t1 of those groups (about k to 2k of them).
3. Bisect on the gathered values for a threshold t with exactly k of them >= t. Where ties make
   that impossible, keep every value above the tie and fill up with tied values (any choice among
   equal values is a valid top k, as with ``torch.topk``).

Every step is a count or a copy over a few hundred floats, with no data-dependent sort (the
figures against ``torch.topk`` are in docs/benchmarks.md). Rows are split across Python threads (the kernel
releases the GIL). Rows holding NaN or inf are left to ``torch.topk``; without numba,
``topk_select`` uses its pure-torch path.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

# numba is an accelerator, imported (and the kernel compiled, or loaded from numba's cache) at
# the first selection, not at import: rlsae works without it
AVAILABLE = importlib.util.find_spec("numba") is not None


# One function of ~90 lines on purpose: numba compiles it into one loop nest with its scratch
# buffers allocated once per call; the three steps are the numbered comments inside.
def _select_rows_py(pre, gm, k, g, row0, row1, vals, idx, failed):
    m = gm.shape[1]
    sel = np.empty(m, np.int64)
    buf_v = np.empty(m * g, pre.dtype)
    buf_i = np.empty(m * g, np.int64)
    half = k // 2
    for b in range(row0, row1):
        # 1. t1 with k <= count(gm >= t1) (<= 1.5 k when bisection gets there)
        lo = gm[b, 0]
        hi = gm[b, 0]
        finite = True
        for s in range(m):
            v = gm[b, s]
            finite = finite and np.isfinite(v)
            lo = v if v < lo else lo
            hi = v if v > hi else hi
        if not finite:  # NaN or inf in the row (its group maxima show it): torch decides
            failed[b] = 1
            continue
        for _ in range(64):
            mid = lo + (hi - lo) * 0.5
            if not (lo < mid < hi):
                break
            c = 0
            for s in range(m):
                c += 1 if gm[b, s] >= mid else 0
            if c >= k:
                lo = mid
                if c <= k + half:
                    break
            else:
                hi = mid
        t1 = lo
        # 2. the entries >= t1 of the groups whose maximum is >= t1
        ns = 0
        for s in range(m):
            sel[ns] = s
            ns += 1 if gm[b, s] >= t1 else 0
        cnt = 0
        for q in range(ns):
            j = sel[q]
            for _ in range(g):
                v = pre[b, j]
                buf_v[cnt] = v
                buf_i[cnt] = j
                cnt += 1 if v >= t1 else 0
                j += m
        # 3. a threshold with exactly k values >= it
        lo_t = t1
        hi_t = buf_v[0]
        for q in range(cnt):
            hi_t = buf_v[q] if buf_v[q] > hi_t else hi_t
        cur = cnt
        if cur > k:
            for _ in range(200):
                mid = lo_t + (hi_t - lo_t) * 0.5
                if not (lo_t < mid < hi_t):
                    break
                c = 0
                for q in range(cnt):
                    c += 1 if buf_v[q] >= mid else 0
                if c >= k:
                    lo_t = mid
                    cur = c
                    if c == k:
                        break
                else:
                    hi_t = mid
        o = 0
        if cur == k:
            for q in range(cnt):
                if buf_v[q] >= lo_t:
                    vals[b, o] = buf_v[q]
                    idx[b, o] = buf_i[q]
                    o += 1
            continue
        mid = lo_t + (hi_t - lo_t) * 0.5
        if lo_t < mid < hi_t:  # not resolved (cannot happen for finite values): torch decides
            failed[b] = 1
            continue
        # ties at the k-th value: no float lies strictly between lo_t and hi_t, so the values in
        # [lo_t, hi_t) are all equal: everything >= hi_t first, then as many equal ones as needed
        for q in range(cnt):
            if o < k and buf_v[q] >= hi_t:
                vals[b, o] = buf_v[q]
                idx[b, o] = buf_i[q]
                o += 1
        for q in range(cnt):
            if o < k and lo_t <= buf_v[q] < hi_t:
                vals[b, o] = buf_v[q]
                idx[b, o] = buf_i[q]
                o += 1


_kernel = None
_lock = threading.Lock()


def _get_kernel():
    global _kernel
    with _lock:
        if _kernel is None:
            import numba

            _kernel = numba.njit(nogil=True, cache=True, boundscheck=False)(_select_rows_py)
    return _kernel


_pool: ThreadPoolExecutor | None = None


def _forget_pool() -> None:
    global _pool
    _pool = None  # a forked child has none of the parent's threads


os.register_at_fork(after_in_child=_forget_pool)


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool._max_workers < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rlsae-topk")
        return _pool


def _run_rows(
    kernel: Callable[..., Any], B: int, args: tuple[Any, ...], out: tuple[Any, ...]
) -> None:
    """``kernel(*args, row0, row1, *out)`` over rows [0, B), split across up to
    ``torch.get_num_threads()`` Python threads (the kernel releases the GIL), at least 256 rows
    each. Each row is done by one thread whatever the split: results do not depend on the
    thread count."""
    workers = min(torch.get_num_threads(), max(1, B // 256))
    if workers <= 1:
        kernel(*args, 0, B, *out)
        return
    step = -(-B // workers)
    jobs = [
        _executor(workers).submit(kernel, *args, s, min(B, s + step), *out)
        for s in range(0, B, step)
    ]
    for j in jobs:
        j.result()


def select(
    pre: torch.Tensor, gm: torch.Tensor, k: int, g: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the top k of each row of ``pre`` (B, n), given its strided group
    maxima ``gm`` (B, n/g). CPU float32/float64; rows with NaN or inf go to ``torch.topk``."""
    B = pre.shape[0]
    vals = torch.empty(B, k, dtype=pre.dtype)
    idx = torch.empty(B, k, dtype=torch.long)
    failed = torch.zeros(B, dtype=torch.uint8)
    args = (pre.numpy(), gm.numpy(), int(k), int(g))
    _run_rows(_get_kernel(), B, args, (vals.numpy(), idx.numpy(), failed.numpy()))
    if failed.any():
        rows = failed.nonzero().reshape(-1)
        vals[rows], idx[rows] = pre[rows].topk(k, dim=-1, sorted=False)
    return vals, idx
