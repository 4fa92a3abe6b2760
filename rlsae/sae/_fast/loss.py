"""The TopK training loss in one autograd function: encoder, TopK, sparse decoder and AuxK (and
BatchTopK's, whose batch-wide selection ``_encode_batchtopk`` feeds the same sparse path).

A TopK SAE's latents are (rows, k) values and indices, so the decoder only needs the k active
decoder rows per input (``F.embedding_bag``) and the backward pass never needs a dense
(rows, d_sae) gradient:

- d loss / d vals   = <grad_recon, W_dec[idx]>           sampled dense-dense product (CSR)
- d loss / d W_dec  = S^T grad_recon                     S = sparse (rows, d_sae) latents
- d loss / d W_enc  = (G^T x_centred)^T                  G = sparse grad of the selected pre-acts
- d loss / d b_enc  = column sums of G;   d loss / d b_dec = sum(grad_recon) - W_enc @ (d b_enc)

The only dense (rows, d_sae) work left is the encoder matmul and the TopK itself. The tests
check every output and gradient against a dense float64 reference with plain autograd
(``tests/sae/reference.py``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from rlsae.sae._fast import _native
from rlsae.sae._fast.topk import topk_select


def _csc_order(cols: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Group the entries of a sparse (rows, n) matrix by column: (order, offsets) such that the
    entries of column j are ``order[offsets[j]:offsets[j+1]]``. One sort, shared by every product
    with the same sparsity pattern."""
    order = torch.argsort(cols, stable=True)
    offsets = torch.zeros(n, dtype=torch.long, device=cols.device)
    torch.cumsum(torch.bincount(cols, minlength=n)[:-1], 0, out=offsets[1:])
    return order, offsets


def _sparse_t_mm(
    sorted_rows: torch.Tensor, sorted_vals: torch.Tensor, offsets: torch.Tensor, dense: torch.Tensor
) -> torch.Tensor:
    """(S^T @ dense) for a sparse S whose entries are grouped by column (``_csc_order``): row j of
    the result is the sum over column j's entries of val * dense[row], i.e. one ``embedding_bag``
    with a bag per column (an empty bag gives 0)."""
    return F.embedding_bag(sorted_rows, dense, offsets, mode="sum", per_sample_weights=sorted_vals)


def _sampled_dot(g: torch.Tensor, W: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """out[b, j] = g[b] . W[idx[b, j]], without a dense (rows, d_sae) result."""
    B, k = idx.shape
    crow = torch.arange(0, B * k + 1, k, dtype=torch.long, device=g.device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        mask = torch.sparse_csr_tensor(
            crow,
            idx.reshape(-1),
            torch.zeros(B * k, dtype=g.dtype, device=g.device),
            (B, W.shape[0]),
            check_invariants=False,
        )
    return torch.sparse.sampled_addmm(mask, g, W.t(), beta=0.0).values().reshape(B, k)


class Workspace:
    """Buffers reused from one training step to the next. The (rows, d_sae) pre-activation block is
    the step's largest temporary (32 MiB at 4096 x 2048); allocated afresh, its pages would be
    faulted in again on every step (see docs/benchmarks.md). Buffers that outlive the forward pass (saved for the backward) are leased: ``take`` hands
    out a fresh tensor while the buffer is still out, so nothing is overwritten early."""

    def __init__(self) -> None:
        self._bufs: dict[str, torch.Tensor] = {}
        self._leased: set[str] = set()

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A tensor of ``shape`` with ``like``'s dtype and device, reused while those match."""
        buf = self._bufs.get(name)
        if (
            buf is None
            or buf.shape != shape
            or buf.dtype != like.dtype
            or buf.device != like.device
        ):
            buf = self._bufs[name] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def take(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Like ``get``, for a buffer kept until ``give_back``; a fresh tensor while it is out."""
        if name in self._leased:
            return torch.empty(shape, dtype=like.dtype, device=like.device)
        self._leased.add(name)
        return self.get(name, shape, like)

    def give_back(self, name: str, t: torch.Tensor) -> None:
        """End the lease of ``name`` if ``t`` is that buffer."""
        if self._bufs.get(name) is t:
            self._leased.discard(name)


CHUNK = 4096
"""Rows per encoder block: bounds the (rows, d_sae) pre-activation buffer for large batches."""


def _encode_topk(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    b_dec: torch.Tensor,
    apply_b_dec: bool,
    k: int,
    dead_idx: torch.Tensor | None,
    k_aux: int,
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """TopK (then ReLU) of the encoder's pre-activations (x - b_dec) @ W_enc + b_enc (x @ W_enc
    + b_enc without ``apply_b_dec``), in blocks of at most CHUNK rows. Also the top ``k_aux``
    pre-activations among ``dead_idx`` (ReLU'd) when given."""
    # (x - b_dec) @ W_enc + b_enc  ==  x @ W_enc + (b_enc - b_dec @ W_enc): no centred copy of x
    c = b_enc - b_dec @ W_enc if apply_b_dec else b_enc
    B = x.shape[0]
    vals = torch.empty(B, k, dtype=x.dtype, device=x.device)
    idx = torch.empty(B, k, dtype=torch.long, device=x.device)
    dead = dead_idx if dead_idx is not None and dead_idx.numel() > 0 and k_aux > 0 else None
    ka = min(int(k_aux), int(dead.numel())) if dead is not None else 0
    a_vals = torch.empty(B, ka, dtype=x.dtype, device=x.device)
    a_idx = torch.empty(B, ka, dtype=torch.long, device=x.device)
    shape = (min(CHUNK, B), W_enc.shape[1])
    buf = workspace.get("pre", shape, x) if workspace is not None else x.new_empty(shape)
    for s in range(0, B, CHUNK):
        e = min(B, s + CHUNK)
        pre = buf[: e - s]
        torch.mm(x[s:e], W_enc, out=pre)
        # + c inside the selection (addmm's broadcast copy of c into ``out`` is several times
        # slower than a separate pass; the native selection needs no pass of its own)
        vals[s:e], idx[s:e] = topk_select(pre, k, bias=c)
        if dead is not None:
            dead_pre = pre.index_select(1, dead) + c[dead]
            av, ai = dead_pre.topk(ka, dim=-1, sorted=False)
            a_vals[s:e], a_idx[s:e] = av, dead[ai]
    vals.relu_()
    if dead is None:
        return vals, idx, None, None
    return vals, idx, a_vals.relu_(), a_idx


def _encode_batchtopk(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    b_dec: torch.Tensor,
    apply_b_dec: bool,
    k: int | float,
    dead_idx: torch.Tensor | None,
    k_aux: int,
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """BatchTopK: the ``k * rows`` largest ReLU'd pre-activations over the whole batch, as (rows,
    w) values and indices whose entries outside the kept set have value 0 (they decode to nothing
    and get no gradient, exactly as the dense ``relu(pre) * kept``), plus AuxK as ``_encode_topk``.
    An entry is kept where it is >= t, the (k * rows)-th largest over the batch (ties at t all
    kept), and above 0.

    A threshold search over the block: each row's top m = 2k (the grouped selection), then t0 =
    the (k * rows)-th largest of those candidates, a lower bound of t. Every entry >= t0 is
    among its row's candidates unless the row is short (its smallest candidate is positive and
    >= t0); only the short rows are read again, for all their entries >= t0. t is then the
    (k * rows)-th largest of the entries >= t0, and each row's kept entries are moved into the
    first w columns, w = the most any row keeps, rounded up to a multiple of 8 (``_assemble``,
    or ``_assemble_native`` with the C kernels: the same entries kept). Batches above CHUNK
    rows, whose block is not kept whole, re-run the blockwise encoder with m doubled instead.
    Deterministic given the data (a resume repeats it)."""
    B, n = x.shape[0], W_enc.shape[1]
    keep = max(1, int(k * B))  # a fractional k: int(k x rows), as SAELens
    m = min(n, 2 * math.ceil(k))
    if B > CHUNK:
        while True:
            vals, idx, a_vals, a_idx = _encode_topk(
                x, W_enc, b_enc, b_dec, apply_b_dec, m, dead_idx, k_aux, workspace
            )
            t = _kth_largest(vals, keep)
            if m == n or not bool(_short(vals, t).any()):
                break
            m = min(n, 2 * m)
        vals.mul_(vals >= t)
        return vals, idx, a_vals, a_idx
    c = b_enc - b_dec @ W_enc if apply_b_dec else b_enc
    pre = workspace.get("pre", (B, n), x) if workspace is not None else x.new_empty((B, n))
    torch.mm(x, W_enc, out=pre)
    vals, idx = topk_select(pre, m, bias=c)
    vals.relu_()
    native = _native.usable(pre, c, vals) and not bool(vals.isnan().any())
    if native:  # the native kernels, from the same candidates to the same kept entries
        with torch.profiler.record_function("rlsae::batchtopk_threshold"):
            vals, idx = _assemble_native(pre, c, vals.contiguous(), idx.contiguous(), keep)
    else:
        vals, idx = _assemble(pre, c, vals, idx, keep)
    dead = dead_idx if dead_idx is not None and dead_idx.numel() > 0 and k_aux > 0 else None
    if dead is None:
        return vals, idx, None, None
    ka = min(int(k_aux), int(dead.numel()))
    a_vals, a_pos = (pre.index_select(1, dead) + c[dead]).topk(ka, dim=-1, sorted=False)
    return vals, idx, a_vals.relu_(), dead[a_pos]


def _assemble(
    pre: torch.Tensor, c: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor, keep: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchTopK's kept entries (``_encode_batchtopk``) from the block ``pre`` (+ ``c``) and each
    row's ReLU'd candidates ``vals``/``idx`` (B, m): (rows, w) values and indices. A short
    row's entries >= t0 all lie within its top ``need``: the selection runs once more at the
    widest such width."""
    n, m = pre.shape[1], vals.shape[1]
    t = t0 = _kth_largest(vals, keep)
    rows = _short(vals, t0).nonzero().reshape(-1) if m < n else idx.new_empty(0)
    if rows.numel():
        full = (pre[rows] + c).relu_()
        need = int(((full >= t0) & (full > 0)).sum(1).max())
        vals, idx = topk_select(pre, min(n, max(m, need)), bias=c)
        vals.relu_()
        t = _kth_largest(vals, keep)  # every entry >= t0 is among the candidates now
    vals.mul_(vals >= t)
    return _compact(vals, idx)


def _assemble_native(
    pre: torch.Tensor, c: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor, keep: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``_assemble`` with the native kernels (float32, no NaN among the candidates): the short
    rows' entries >= t0 gathered from the block (``gather_ge``) instead of a second selection,
    t by a radix select over the entries >= t0, the kept entries compacted in C
    (``batchtopk_assemble``: each row's kept entries first, then value 0 at latents the row does
    not keep). ``vals`` is overwritten."""
    B, n = pre.shape
    m = vals.shape[1]
    t = t0 = _native.kth_largest(vals, keep)
    rows = _short(vals, t0).nonzero().reshape(-1) if m < n else idx.new_empty(0)
    g_vals, g_idx, g_counts = _native.gather_ge(pre, c, rows, t0)
    src = torch.full((B,), -1, dtype=torch.long)
    if rows.numel():
        src[rows] = torch.arange(rows.numel())
        # the short rows' candidates are among their gathered entries: counted there only
        vals[rows] = 0.0
        t = _native.kth_largest(vals, keep, g_vals, g_counts)
    args = (vals, idx, src, g_vals, g_idx, g_counts, t, n)
    counts = _native.batchtopk_assemble(*args, None)[2]
    w = round8(int(counts.max()), n)
    out_v, out_i, _ = _native.batchtopk_assemble(*args, w)
    return out_v, out_i


def round8(w: int, n: int) -> int:
    """A padded row width: ``w`` entries rounded up to a multiple of 8 (at least 8, at most
    ``n``), so that the widths, and with them the kernels' shapes, change rarely."""
    return min(n, max(8, -(-w // 8) * 8))


def pack_rows(mask: torch.Tensor, w: int, *sources: torch.Tensor) -> list[torch.Tensor]:
    """Each row's ``mask``ed entries of every (rows, cols) ``source``, in column order, moved
    into the first columns of a (rows, w) tensor padded with 0 (``w`` >= the most any row
    holds)."""
    per_row = mask.sum(1)
    rows, cols = mask.nonzero(as_tuple=True)  # row-major: each row's columns in order
    pos = (
        torch.arange(rows.numel(), device=mask.device) - (torch.cumsum(per_row, 0) - per_row)[rows]
    )
    out = []
    for s in sources:
        o = s.new_zeros(mask.shape[0], w)
        o[rows, pos] = s[rows, cols]
        out.append(o)
    return out


def _compact(vals: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the columns no row needs: each row's kept (non-zero) entries moved into the first
    w columns, w = the most any row keeps, rounded up to a multiple of 8; the sparse decode and
    backward then work on w entries a row instead of the selection's width."""
    w = round8(int(torch.count_nonzero(vals, dim=1).max()), vals.shape[1])
    if w >= vals.shape[1]:
        return vals, idx
    top, pos = vals.topk(w, dim=1, sorted=False)
    return top, idx.gather(1, pos)


def _kth_largest(vals: torch.Tensor, keep: int) -> torch.Tensor:
    """The ``keep``-th largest entry of ``vals`` (a 0-d tensor)."""
    flat = vals.reshape(-1)
    return flat.kthvalue(flat.numel() - keep + 1).values


def _short(vals: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """(rows,) bool: the rows whose candidates may have left out an entry >= t (and > 0): their
    smallest candidate is positive and >= t."""
    low = vals.amin(dim=1)
    return (low > 0) & (low >= t)


def _sparse_grads(
    idx: torch.Tensor,
    dec_vals: torch.Tensor,
    enc_vals: torch.Tensor,
    dense_dec: torch.Tensor,
    x: torch.Tensor,
    b_dec: torch.Tensor,
    apply_b_dec: bool,
    n: int,
    aux: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(g_W_dec, g_W_enc_t, g_b_enc) for latents ``idx`` (B, k) with decoder weights ``dec_vals``
    and pre-activation gradients ``enc_vals`` (B, k): S^T dense_dec, G^T (x - b_dec) (G^T x
    without ``apply_b_dec``) and the column sums of G, plus the AuxK entries
    ``aux = (a_idx, a_dec_vals, a_enc_vals, a_dense_dec)`` where given. The decoder's S and the
    encoder's G share one sparsity pattern, so one grouping by latent serves both products."""
    B, k = idx.shape
    if _native.usable(dec_vals, enc_vals, dense_dec, x):  # one counting sort, in C
        cont = (
            (aux[0].contiguous(), aux[1].contiguous(), aux[2].contiguous())
            if aux is not None
            else None
        )
        offsets, enc_rows, dec_rows, dec_sorted, enc_sorted, g_b_enc = _native.group_by_latent(
            idx.contiguous(), dec_vals.contiguous(), enc_vals.contiguous(), n, cont
        )
        if aux is not None:
            dense_dec = torch.cat([dense_dec, aux[3]])  # AuxK entries decode into rows B..2B-1
    else:
        cols, rows = idx.reshape(-1), torch.arange(B, device=x.device).repeat_interleave(k)
        dec_vals, enc_vals = dec_vals.reshape(-1), enc_vals.reshape(-1)
        if aux is not None:
            a_idx, a_dec, a_enc, a_dense = aux
            ka = a_idx.shape[1]
            cols = torch.cat([cols, a_idx.reshape(-1)])
            rows = torch.cat([rows, torch.arange(B, device=x.device).repeat_interleave(ka)])
            dec_vals = torch.cat([dec_vals, a_dec.reshape(-1)])
            enc_vals = torch.cat([enc_vals, a_enc.reshape(-1)])
            dense_dec = torch.cat([dense_dec, a_dense])  # AuxK entries decode into rows B..2B-1
        order, offsets = _csc_order(cols, n)
        enc_rows = rows[order]
        dec_rows = enc_rows + B * (order >= B * k) if aux is not None else enc_rows
        dec_sorted, enc_sorted = dec_vals[order], enc_vals[order]
        g_b_enc = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, cols, enc_vals)
    g_W_dec = _sparse_t_mm(dec_rows, dec_sorted, offsets[:n], dense_dec)
    g_W_enc_t = _sparse_t_mm(enc_rows, enc_sorted, offsets[:n], x)
    if apply_b_dec:  # G^T (x - b_dec) = G^T x - outer(column sums of G, b_dec)
        g_W_enc_t.addr_(g_b_enc, b_dec, alpha=-1)
    return g_W_dec, g_W_enc_t, g_b_enc


def _residual(
    x: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    idx: torch.Tensor,
    vals: torch.Tensor,
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(e, sse, gdot): e = recon - x, sse = |e|^2 per row, gdot[r, j] = e[r] . W_dec[idx[r, j]].
    The native kernel gathers each row's k decoder rows once for all three (and writes e into the
    workspace's leased "residual" buffer when given one)."""
    if _native.usable(x, W_dec, b_dec, vals):
        e = workspace.take("residual", tuple(x.shape), x) if workspace is not None else None
        with torch.profiler.record_function("rlsae::residual"):
            return _native.residual(x, W_dec.contiguous(), b_dec.contiguous(), idx, vals, out=e)
    e = F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum")
    e += b_dec
    e -= x
    return e, torch.linalg.vecdot(e, e), _sampled_dot(e, W_dec, idx)


class TopKLossFunction(torch.autograd.Function):
    """The TopK training loss terms without the reconstruction as an output.

    Forward: (sse, aux_sse, vals, idx) with sse = |recon - x|^2 summed over the batch and
    aux_sse = |aux_recon - (x - recon)|^2 (the residual detached, as AuxK's target); aux_sse is
    0 without dead latents. Knowing the loss, the forward computes e = recon - x and the dots
    e . W_dec[idx] once, while each row's decoder rows are in cache; the backward only scales
    them. Gradients as in the module docstring, with d sse / d recon = 2 e."""

    @staticmethod
    def forward(
        ctx, x, W_enc, b_enc, W_dec, b_dec, k, dead_idx, k_aux, apply_b_dec, workspace, batch
    ):
        encode = _encode_batchtopk if batch else _encode_topk
        vals, idx, a_vals, a_idx = encode(
            x, W_enc, b_enc, b_dec, apply_b_dec, k, dead_idx, k_aux, workspace
        )
        e, sse, gdot = _residual(x, W_dec, b_dec, idx, vals, workspace)
        res = None
        if a_idx is not None:
            # aux_recon - (x - recon) = aux_recon + e
            res = F.embedding_bag(a_idx, W_dec, per_sample_weights=a_vals, mode="sum")
            res += e
            aux_sse = torch.linalg.vector_norm(res).square()
        else:
            aux_sse = x.new_zeros(())
        ctx.save_for_backward(x, W_enc, W_dec, b_dec, vals, idx, e, gdot, a_vals, a_idx, res)
        ctx.apply_b_dec = apply_b_dec
        ctx.workspace = workspace
        ctx.mark_non_differentiable(idx)
        return sse.sum(), aux_sse, vals, idx

    @staticmethod
    def backward(ctx, g_sse, g_aux, g_vals, _g_idx):
        x, W_enc, W_dec, b_dec, vals, idx, e, gdot, a_vals, a_idx, res = ctx.saved_tensors
        n = W_dec.shape[0]
        s = 2.0 * float(g_sse) if g_sse is not None else 0.0
        gv = gdot * s
        if g_vals is not None:
            gv = gv + g_vals
        gp = gv * (vals > 0)
        aux = None
        if res is not None and g_aux is not None:
            s_aux = 2.0 * float(g_aux)
            ga = _sampled_dot(res, W_dec, a_idx) * s_aux * (a_vals > 0)
            aux = (a_idx, a_vals * s_aux, ga, res)
        g_W_dec, g_W_enc_t, g_b_enc = _sparse_grads(
            idx, vals * s, gp, e, x, b_dec, ctx.apply_b_dec, n, aux
        )
        g_b_dec = e.sum(0) * s
        if ctx.apply_b_dec:
            g_b_dec -= W_enc @ g_b_enc
        if ctx.workspace is not None:
            ctx.workspace.give_back("residual", e)
        return None, g_W_enc_t.t(), g_b_enc, g_W_dec, g_b_dec, None, None, None, None, None, None


def _dec_grad(idx: torch.Tensor, vals: torch.Tensor, dense: torch.Tensor, n: int) -> torch.Tensor:
    """S^T dense for the sparse (rows, n) matrix S of latents ``idx`` (rows, k) with values
    ``vals``: one grouping by latent (the native counting sort where it runs), one
    ``embedding_bag`` with a bag per latent."""
    if _native.usable(vals, dense):
        zeros = torch.zeros_like(vals)
        offsets, _, rows, dec_sorted, _, _ = _native.group_by_latent(
            idx.contiguous(), vals.contiguous(), zeros, n
        )
    else:
        B, k = idx.shape
        order, offsets = _csc_order(idx.reshape(-1), n)
        rows = torch.arange(B, device=idx.device).repeat_interleave(k)[order]
        dec_sorted = vals.reshape(-1)[order]
    return _sparse_t_mm(rows, dec_sorted, offsets[:n], dense)


class PrefixLossFunction(torch.autograd.Function):
    """Matryoshka's inner-prefix terms sum_p |recon_p - x|^2 (recon_p: the kept entries of
    latents below width p, plus b_dec) in one autograd function, on the sparse path. Each row's
    entries are sorted by latent once, so prefix p's entries are the first c_p of the row: its
    fused gather (the residual and the dots e_p . W_dec[idx] together, as the TopK loss) and its
    decoder gradient's grouping by latent run over the widest row's c_p columns only, not over
    every kept entry. The kept values' gradient goes on to ``TopKLossFunction``'s backward (its
    ``g_vals``)."""

    @staticmethod
    def forward(ctx, vals, idx, W_dec, b_dec, x, widths):
        W, b = W_dec.contiguous(), b_dec.contiguous()
        idx_s, order = idx.sort(dim=1)
        vals_s = vals.gather(1, order)
        saved, sses = [], []
        for w in widths:
            width = max(1, int((idx_s < w).sum(1).max()))
            i_p = idx_s[:, :width].contiguous()
            mask = i_p < w
            v_p = (vals_s[:, :width] * mask).contiguous()
            e, sse, gdot = _residual(x, W, b, i_p, v_p)
            saved += [i_p, v_p, mask, e, gdot]
            sses.append(sse.sum())
        ctx.save_for_backward(vals, order, *saved)
        ctx.n_latents = W_dec.shape[0]
        return torch.stack(sses)

    @staticmethod
    def backward(ctx, g_sses):
        vals, order, *saved = ctx.saved_tensors
        g_sorted = torch.zeros_like(vals)
        g_W_dec = None
        g_b_dec = None
        for p in range(len(saved) // 5):
            i_p, v_p, mask, e, gdot = saved[5 * p : 5 * p + 5]
            s = 2.0 * float(g_sses[p])
            g_sorted[:, : i_p.shape[1]].add_(gdot * mask, alpha=s)
            g_dec = _dec_grad(i_p, v_p * s, e, ctx.n_latents)
            g_W_dec = g_dec if g_W_dec is None else g_W_dec.add_(g_dec)
            g_b = e.sum(0).mul_(s)
            g_b_dec = g_b if g_b_dec is None else g_b_dec.add_(g_b)
        g_vals = torch.empty_like(vals).scatter_(1, order, g_sorted)
        return g_vals, None, g_W_dec, g_b_dec, None, None


def prefix_sse(
    vals: torch.Tensor,
    idx: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    x: torch.Tensor,
    widths: list[int],
) -> torch.Tensor:
    """Matryoshka: (prefixes,) summed squared errors |recon_p - x|^2 of the reconstructions from
    the kept entries ``vals``/``idx`` of latents below each width in ``widths`` (with b_dec),
    differentiable in ``vals``, ``W_dec`` and ``b_dec`` (``PrefixLossFunction``)."""
    out: torch.Tensor = PrefixLossFunction.apply(
        vals, idx, W_dec, b_dec, x.detach().contiguous(), list(widths)
    )
    return out


def _apply(
    function: Any,
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    k: int | float,
    dead_idx: torch.Tensor | None,
    k_aux: int,
    apply_b_dec: bool,
    workspace: Workspace | None,
    batch: bool = False,
) -> Any:
    """Run a TopK autograd function (``x`` gets no gradient); the tests' reference uses it too.
    ``batch``: BatchTopK (``k * rows`` kept over the batch) instead of k per row."""
    x = x.detach().contiguous()
    k = float(k) if batch else int(k)  # BatchTopK's k is an average: it may be fractional
    k_aux, apply_b_dec = int(k_aux), bool(apply_b_dec)
    return function.apply(
        x, W_enc, b_enc, W_dec, b_dec, k, dead_idx, k_aux, apply_b_dec, workspace, bool(batch)
    )


def topk_loss(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    k: int | float,
    dead_idx: torch.Tensor | None = None,
    k_aux: int = 0,
    apply_b_dec: bool = True,
    workspace: Workspace | None = None,
    batch: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training path: (sse, aux_sse, vals, idx), the summed squared reconstruction error, the
    AuxK summed squared error against the detached residual (0 without ``dead_idx``), and the
    latents (indices in no particular order): the squared errors of the dense reconstruction,
    computed in fewer passes over the batch. A training loop passes one ``Workspace`` to every
    step so the pre-activation buffer is allocated once. ``batch``: BatchTopK, the ``k * rows``
    largest over the batch (``_encode_batchtopk``; idx is then (rows, m) with unkept entries at
    value 0)."""
    return _apply(
        TopKLossFunction,
        x,
        W_enc,
        b_enc,
        W_dec,
        b_dec,
        k,
        dead_idx,
        k_aux,
        apply_b_dec,
        workspace,
        batch,
    )
