"""The TopK selection: the k largest pre-activations of each row, found faster than torch.topk.

Three back-ends, fastest first, with the same results (ties may be broken differently; the
values are the same): the native C kernel (``_kernels.c``, float32, built by ``_native``), the
numba kernel (``_numba``), and plain torch. See ``topk_select``.
"""

from __future__ import annotations

import math

import torch

from rlsae.sae._fast import _native, _numba


def _group_size(n: int, k: int) -> int:
    """Columns per group for ``topk_select``: the power of two nearest sqrt(n / k), which balances
    the two narrow TopKs (over n/g group maxima, then over k*g candidates); 1 (plain TopK) when
    grouping would not narrow them."""
    if k < 1 or n < max(16 * k, 512):  # narrow rows: torch.topk is as fast
        return 1
    g = 1 << max(0, round(math.log2(math.sqrt(n / k))))
    return g if g >= 4 and n % g == 0 else 1


def topk_select(
    pre: torch.Tensor, k: int, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries along the last dimension of ``pre`` (any leading dimensions) as
    (values, indices), in no particular order: the same selection as ``pre.topk(k, sorted=False)``
    (ties may be broken differently; the values are the same), found faster.

    Split the n columns into m = n/g strided groups {j, j+m, j+2m, ...} and take each group's
    maximum (an elementwise max of g contiguous slices). Every one of the row's k largest entries
    is at least the k-th largest group maximum, so it lies in one of the k groups with the
    largest maxima: the exact TopK is among those groups' members. The native kernel
    (``_kernels.c``, float32) or the numba one (``_numba.py``) finds it from the group maxima by
    counting against thresholds (rows with NaN or inf go to torch.topk); without either, two
    ``torch.topk`` calls over ~sqrt(n*k) columns do (top k groups, then top k of their k*g
    members). Values carry gradient to ``pre`` when it requires one.

    ``bias`` (n,), for a 2-D block without gradient (the training step's encoder): the top k of
    ``pre + bias``, ``pre`` unchanged. The native kernel adds it row by row in cache, so the
    block is read once and never written."""
    n = pre.shape[-1]
    g = _group_size(n, k)
    if bias is not None:
        if pre.requires_grad or pre.ndim != 2:
            raise ValueError("topk_select's bias is for a 2-D block without gradient")
        if g > 1 and pre.is_contiguous() and _native.usable(pre, bias):
            return _native_select(pre, k, g, bias)
        return topk_select(pre + bias, k)
    if g == 1:
        return pre.topk(k, dim=-1, sorted=False)
    if pre.ndim != 2:
        vals, idx = topk_select(pre.reshape(-1, n), k)
        return vals.view(*pre.shape[:-1], k), idx.view(*pre.shape[:-1], k)
    if _native.usable(pre):
        vals, idx = _native_select(pre.detach().contiguous(), k, g, None)
        return (pre.gather(1, idx) if pre.requires_grad else vals), idx
    B = pre.shape[0]
    m = n // g
    grouped = pre.reshape(B, g, m)
    group_max = grouped.amax(dim=1)
    if (
        _numba.AVAILABLE
        and pre.device.type == "cpu"
        and pre.dtype in (torch.float32, torch.float64)
    ):
        with torch.profiler.record_function("rlsae::topk_select"):
            vals, idx = _numba.select(pre.detach().contiguous(), group_max.detach(), k, g)
        return (pre.gather(1, idx) if pre.requires_grad else vals), idx
    _, top_groups = group_max.topk(k, dim=-1, sorted=False)
    cand = grouped.gather(2, top_groups.unsqueeze(1).expand(B, g, k))  # (B, g, k) candidates
    vals, pos = cand.view(B, g * k).topk(k, dim=-1, sorted=False)
    # candidate (i, j) is column top_groups[j] + i*m
    return vals, top_groups.gather(1, pos % k) + (pos // k) * m


def _native_select(
    pre: torch.Tensor, k: int, g: int, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.profiler.record_function("rlsae::topk_select"):
        vals, idx, failed = _native.select(pre, k, g, bias)
    if failed.any():  # rows with NaN or inf: torch.topk decides
        rows = failed.nonzero().reshape(-1)
        block = pre[rows] if bias is None else pre[rows] + bias
        vals[rows], idx[rows] = block.topk(k, dim=-1, sorted=False)
    return vals, idx
