"""JumpReLU's training loss on the sparse path, where the candidate entries are few.

    z = (x - b_dec) @ W_enc + b_enc        f = z * H(z - t)        recon = f @ W_dec + b_dec

The threshold's straight-through gradient (``rlsae.sae.jumprelu``) needs d loss / d f at every
entry inside the rectangle band |z - t_j| < bandwidth / 2, active or not; the encoder's needs it
at the active entries z > t_j. Both sets lie among the **candidates**, the entries with
z > t_j - bandwidth / 2 (a slightly lower bound ``_lower_bounds``, so rounding never leaves one
out). With them as (rows, w) values and columns, padded with zeros as BatchTopK's:

- recon, e = recon - x and gdot[r, c] = e[r] . W_dec[idx[r, c]] in one gather (``_residual``);
- d loss / d f at a candidate: gv = 2 g_sse gdot + (the caller's gradient of f, e.g. tanh);
- d loss / d z = gv * H(z - t): sparse, so W_enc, b_enc, W_dec get their gradients from the
  same grouping by latent as TopK's (``_sparse_grads``); b_dec as there;
- d loss / d t_j = -sum over band entries of (t_j / bw) gv + g_count / bw, where ``count`` (the
  number of entries above threshold, the step L0 term times rows) has gradient only in t.

Every entry outside the candidates has zero gradient in all of these (H = 0 and rect = 0
there), so the results are the dense autograd's up to float rounding; the tests check them
against a dense float64 reference. Where the candidates are dense (JumpReLU's start, when most
pre-activations sit near their thresholds) this costs more than the dense step, so
``jumprelu_loss`` runs the same terms on the whole block (``DenseJumpReLUFunction``: dense
products, no autograd graph over the block) above ``MAX_DENSITY`` candidates per entry. The choice depends only on the step's data and
parameters: a resumed run repeats it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from rlsae.sae._fast import _native
from rlsae.sae._fast.loss import Workspace, _sampled_dot, _sparse_grads, pack_rows, round8

MAX_DENSITY = 0.5
"""The sparse path runs where at most this fraction of the (rows, d_sae) entries are
candidates. Measured (docs/benchmarks.md, "The other SAE kinds"; d_in 512, d_sae 2048, 4096
rows, 2 threads), loss and backward: sparse 101 / 135 / 206 / 306 / 367 ms against dense
341 / 338 / 324 / 268 / 312 ms at 11 / 22 / 43 / 72 / 94 % candidates."""

_SLACK = 1e-3
"""Relative widening of the candidates' band below the threshold (``_lower_bounds``)."""


def _lower_bounds(t: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """Per latent, a bound below every z with (z - t) / bw > -1/2 in t's dtype: t - bw / 2
    widened by 0.1 % of bw and by far more than the rounding of z - t, of the division and of
    the bound itself (16 units of the dtype's precision of |t| + bw; computed in float64)."""
    td = t.detach().double()
    eps = torch.finfo(t.dtype).eps
    lo = td - 0.5 * bandwidth * (1.0 + _SLACK) - 16 * eps * (td.abs() + bandwidth)
    return lo.to(t.dtype)


Candidates = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _pad(z: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> Candidates:
    """Zero the values and columns past each row's count (in place): (z, idx, valid, counts)."""
    valid = torch.arange(z.shape[1], device=z.device) < counts.unsqueeze(1)
    z.masked_fill_(~valid, 0.0)
    idx.masked_fill_(~valid, 0)
    return z, idx, valid, counts


def candidates(
    block: torch.Tensor,
    bias: torch.Tensor,
    lo: torch.Tensor,
    max_density: float,
    workspace: Workspace | None = None,
) -> Candidates | None:
    """``block += bias`` in place (it then holds the pre-activations); then each row's entries
    above ``lo`` (n,) in column order as (z, idx, valid, counts) of width w (the most any row has,
    rounded up to a multiple of 8), padded with value 0 at column 0 (``valid`` False); None
    (nothing gathered) where they are more than ``max_density`` of the block or a row holds NaN
    or inf. The native kernel where it runs, else torch, with the same results."""
    B, n = block.shape
    if _native.usable(block, bias, lo) and block.is_contiguous():
        cap = round8(n // 4, n)
        zb = workspace.get("jr_z", (B, cap), block) if workspace is not None else None
        ib = (
            workspace.get("jr_idx", (B, cap), torch.empty(0, dtype=torch.long))
            if workspace is not None
            else None
        )
        with torch.profiler.record_function("rlsae::jumprelu_candidates"):
            zb, ib, counts, bad = _native.jumprelu_candidates(block, bias, lo, cap, zb, ib)
        if bool(bad.any()) or int(counts.sum()) > max_density * B * n:
            return None
        w = round8(int(counts.max()), n)
        if w > cap:  # some row has more: gather again at its width (the bias is in already)
            with torch.profiler.record_function("rlsae::jumprelu_candidates"):
                zb, ib, counts, _ = _native.jumprelu_candidates(block, None, lo, w)
        return _pad(zb[:, :w].clone(), ib[:, :w].clone(), counts)
    block.add_(bias)
    mask = block > lo
    counts = mask.sum(1)
    if not bool(torch.isfinite(block).all()) or int(counts.sum()) > max_density * B * n:
        return None
    w = round8(int(counts.max()), n)
    columns = torch.arange(n, device=block.device).expand(B, n)
    z, idx = pack_rows(mask, w, block, columns)
    return _pad(z, idx, counts)


class BlockPreActs(torch.autograd.Function):
    """A pre-activation block computed outside autograd, (x - b_dec) @ W_enc + b_enc over some
    columns, given gradients: W_enc (those columns) from x_in^T g, b_enc from g's column sums,
    b_dec (with ``apply_b_dec``) from -W_enc @ (g's column sums). ``holder`` is a one-element
    list with the block (an output, not an input returned as it is)."""

    @staticmethod
    def forward(ctx, x_in, W_enc, b_enc, b_dec, apply_b_dec, holder):
        ctx.save_for_backward(x_in, W_enc)
        ctx.apply_b_dec = apply_b_dec
        return holder.pop()

    @staticmethod
    def backward(ctx, g):
        x_in, W_enc = ctx.saved_tensors
        g_b_enc = g.sum(0)
        g_W_enc = (g.t() @ x_in).t()  # (n, d) rows: the layout of rlsae's encoder parameter
        g_b_dec = -(W_enc @ g_b_enc) if ctx.apply_b_dec else None
        return None, g_W_enc, g_b_enc, g_b_dec, None, None


def _residual(
    x: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    idx: torch.Tensor,
    f: torch.Tensor,
    valid: torch.Tensor,
    counts: torch.Tensor,
    workspace: Workspace | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(e, sse, gdot): e = recon - x, sse = |e|^2 per row, gdot[r, c] = e[r] . W_dec[idx[r, c]]
    at every candidate (active or not; 0 in the padding). The native kernel gathers each row's
    decoder rows once for all three (e into the workspace's leased "residual" buffer)."""
    if _native.usable(x, W_dec, b_dec, f):
        e = workspace.take("residual", tuple(x.shape), x) if workspace is not None else None
        with torch.profiler.record_function("rlsae::residual"):
            return _native.jumprelu_residual(
                x, W_dec.contiguous(), b_dec.contiguous(), idx, f, counts, out=e
            )
    e = F.embedding_bag(idx, W_dec, per_sample_weights=f, mode="sum")
    e += b_dec
    e -= x
    return e, torch.linalg.vecdot(e, e), _sampled_dot(e, W_dec, idx) * valid


def _active_only(
    active: torch.Tensor, idx: torch.Tensor, *vals: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The ``active`` entries of (rows, w) ``idx`` and ``vals`` moved to the front of each row,
    in order, at width the most any row has (a multiple of 8), padded with value 0 at column 0."""
    B, w = idx.shape
    per_row = active.sum(1)
    wa = round8(int(per_row.max()) if B else 0, w)
    if wa >= w:
        return (idx, *(v * active for v in vals))
    return tuple(pack_rows(active, wa, idx, *vals))


def _rect_band(z: torch.Tensor, t: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """rectangle((z - t) / bw) as a mask: the same expression as the dense estimator's."""
    u = (z - t).div_(bandwidth)
    return (u > -0.5) & (u < 0.5)


class JumpReLULossFunction(torch.autograd.Function):
    """Forward: (sse, count, f, active): the summed squared error |recon - x|^2 over the batch,
    the number of entries above threshold (differentiable in t only, by the step estimator),
    the candidates' activations f (rows, w) (differentiable: a caller's function of them, such
    as the tanh sparsity, adds its gradient) and which candidates are above threshold.
    Backward as in the module docstring."""

    @staticmethod
    def forward(
        ctx, x, W_enc, b_enc, W_dec, b_dec, threshold, z, idx, valid, counts, bw, apply_b_dec, ws
    ):
        t_idx = threshold.detach()[idx]
        active = valid & (z > t_idx)
        f = z * active
        band = valid & _rect_band(z, t_idx, bw)
        e, sse, gdot = _residual(x, W_dec.detach(), b_dec.detach(), idx, f, valid, counts, ws)
        count = active.sum().to(x.dtype)
        ctx.save_for_backward(x, W_enc, b_dec, f, idx, active, band, t_idx, e, gdot)
        ctx.mark_non_differentiable(active)
        ctx.bw, ctx.apply_b_dec, ctx.ws, ctx.n = bw, apply_b_dec, ws, W_dec.shape[0]
        return sse.sum(), count, f, active

    @staticmethod
    def backward(ctx, g_sse, g_count, g_f, _g_active):
        x, W_enc, b_dec, f, idx, active, band, t_idx, e, gdot = ctx.saved_tensors
        bw, n = ctx.bw, ctx.n
        s = 2.0 * float(g_sse) if g_sse is not None else 0.0
        gv = gdot * s
        if g_f is not None:
            gv = gv + g_f
        # threshold: -(t / bw) * rect * gv (jumprelu) - (1 / bw) * rect * g_count (step)
        g_entry = (t_idx / bw) * gv
        if g_count is not None:
            g_entry = g_entry + float(g_count) / bw
        g_entry = g_entry * band
        g_t = torch.zeros(n, dtype=x.dtype, device=x.device)
        g_t.index_add_(0, idx.reshape(-1), g_entry.reshape(-1)).neg_()
        # only the active entries carry decoder and encoder gradient: the rest are left out of
        # the grouping by latent (in BatchTopK's padded form, at the most any row has)
        a_idx, a_dec, a_enc = _active_only(active, idx, f * s, gv)
        g_W_dec, g_W_enc_t, g_b_enc = _sparse_grads(
            a_idx, a_dec, a_enc, e, x, b_dec, ctx.apply_b_dec, n
        )
        g_b_dec = e.sum(0) * s
        if ctx.apply_b_dec:
            g_b_dec -= W_enc @ g_b_enc
        if ctx.ws is not None:
            ctx.ws.give_back("residual", e)
        return (None, g_W_enc_t.t(), g_b_enc, g_W_dec, g_b_dec, g_t) + (None,) * 7


class DenseJumpReLUFunction(torch.autograd.Function):
    """The same terms as ``JumpReLULossFunction`` on the whole (rows, d_sae) block, for steps
    where most entries are candidates: (sse, count, f, active) with f and active dense. The
    straight-through estimators of ``rlsae.sae.jumprelu`` written out, with dense products
    for the decoder (f @ W_dec), the dots (e @ W_dec^T) and the gradients (f^T e, G^T x_in),
    and no autograd graph over the block's elementwise steps. ``holder``: a one-element list
    with the block (the pre-activations, bias included); kept until the backward (the band)
    and then handed back to the workspace."""

    @staticmethod
    def forward(ctx, x, x_in, W_enc, b_enc, W_dec, b_dec, threshold, holder, bw, apply_b_dec, ws):
        pre = holder.pop()
        t = threshold.detach()
        active = pre > t
        f = pre * active
        e = torch.addmm(b_dec.detach(), f, W_dec.detach())
        e -= x
        sse = torch.linalg.vector_norm(e).square()
        count = active.sum().to(x.dtype)
        ctx.save_for_backward(x_in, W_enc, W_dec, f, active, e, t)
        ctx.mark_non_differentiable(active)
        ctx.pre, ctx.bw, ctx.apply_b_dec, ctx.ws = pre, bw, apply_b_dec, ws
        return sse, count, f, active

    @staticmethod
    def backward(ctx, g_sse, g_count, g_f, _g_active):
        x_in, W_enc, W_dec, f, active, e, t = ctx.saved_tensors
        pre, bw = ctx.pre, ctx.bw
        s = 2.0 * float(g_sse) if g_sse is not None else 0.0
        gv = torch.mm(e, W_dec.t()).mul_(s)  # d loss / d f
        if g_f is not None:
            gv += g_f
        band = _rect_band(pre, t, bw)
        # threshold: -(t / bw) * sum_rows rect * gv - (1 / bw) * sum_rows rect * g_count
        g_t = torch.where(band, gv, 0.0).sum(0).mul_(t / bw)
        if g_count is not None:
            g_t += band.sum(0).to(gv.dtype) * (float(g_count) / bw)
        g_t.neg_()
        G = gv.mul_(active)  # d loss / d pre
        g_b_enc = G.sum(0)
        g_W_enc = (G.t() @ x_in).t()  # (n, d) rows: the layout of rlsae's encoder parameter
        g_W_dec = torch.mm(f.t(), e).mul_(s)
        g_b_dec = e.sum(0).mul_(s)
        if ctx.apply_b_dec:
            g_b_dec -= W_enc @ g_b_enc
        if ctx.ws is not None:
            ctx.ws.give_back("jr_pre", pre)
        ctx.pre = None
        return (None, None, g_W_enc, g_b_enc, g_W_dec, g_b_dec, g_t) + (None,) * 4


@dataclass
class JumpReLUTerms:
    """What ``jumprelu_loss`` gives: ``sse`` the summed squared error, ``count`` the entries
    above threshold (gradient in t by the step estimator), ``f`` / ``active`` the activations
    and which entries are above threshold, ``pre_dead`` the pre-activations of the ``dead``
    columns asked for (rows, dead) with autograd (None without). Sparse path: f and active
    over the candidates, (rows, w), whose columns are ``idx``. Dense path: (rows, d_sae), idx
    None."""

    sse: torch.Tensor
    count: torch.Tensor
    f: torch.Tensor
    active: torch.Tensor
    idx: torch.Tensor | None = None
    pre_dead: torch.Tensor | None = None
    density: float = 1.0
    """Candidates per entry (1.0 on the dense path)."""


def jumprelu_loss(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    threshold: torch.Tensor,
    bandwidth: float,
    apply_b_dec: bool = True,
    dead: torch.Tensor | None = None,
    workspace: Workspace | None = None,
    max_density: float | None = None,
) -> JumpReLUTerms:
    """JumpReLU's training terms for batch ``x`` (no gradient to x): the encoder block once
    (into the workspace's buffer), then the sparse path (``JumpReLULossFunction``) where the
    candidates are at most ``max_density`` (default ``MAX_DENSITY``) of the entries, else the
    whole block (``DenseJumpReLUFunction``). ``dead``: columns whose pre-activations the caller
    needs with autograd (the pre-activation loss; ``BlockPreActs``)."""
    max_density = MAX_DENSITY if max_density is None else float(max_density)
    x = x.detach().to(W_dec.dtype).contiguous()
    x_in = x - b_dec.detach() if apply_b_dec else x
    B, n = x.shape[0], W_dec.shape[0]
    shape = (B, n)
    block = workspace.take("jr_pre", shape, x) if workspace is not None else x.new_empty(shape)
    torch.mm(x_in, W_enc.detach(), out=block)
    lo = _lower_bounds(threshold, bandwidth)
    cand = candidates(block, b_enc.detach(), lo, max_density, workspace)
    pre_dead = None
    if dead is not None and dead.numel():
        sub = block.index_select(1, dead)
        pre_dead = BlockPreActs.apply(x_in, W_enc[:, dead], b_enc[dead], b_dec, apply_b_dec, [sub])
    bw, apply = float(bandwidth), bool(apply_b_dec)
    if cand is None:
        sse, count, f, active = DenseJumpReLUFunction.apply(
            x, x_in, W_enc, b_enc, W_dec, b_dec, threshold, [block], bw, apply, workspace
        )
        return JumpReLUTerms(sse, count, f, active, None, pre_dead)
    if workspace is not None:
        workspace.give_back("jr_pre", block)
    z, idx, valid, counts = cand
    args: tuple[Any, ...] = (x, W_enc, b_enc, W_dec, b_dec, threshold, z, idx, valid, counts)
    sse, count, f, active = JumpReLULossFunction.apply(*args, bw, apply, workspace)
    density = float(valid.sum()) / (B * n)
    return JumpReLUTerms(sse, count, f, active, idx, pre_dead, density)
