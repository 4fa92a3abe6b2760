"""The fast TopK training step: encoder, TopK, sparse decoder and AuxK in one autograd function.

A TopK SAE's latents are (rows, k) values and indices, so the decoder only needs the k active
decoder rows per input (``F.embedding_bag``) and the backward pass never needs a dense
(rows, d_sae) gradient:

- d loss / d vals   = <grad_recon, W_dec[idx]>           sampled dense-dense product (CSR)
- d loss / d W_dec  = S^T grad_recon                     S = sparse (rows, d_sae) latents
- d loss / d W_enc  = (G^T x_centred)^T                  G = sparse grad of the selected pre-acts
- d loss / d b_enc  = column sums of G;   d loss / d b_dec = sum(grad_recon) - W_enc @ (d b_enc)

The only dense (rows, d_sae) work left is the encoder matmul and the TopK itself.
``naive_topk_forward`` is the same computation with dense tensors and ordinary autograd; the
tests check the two against each other (outputs and every gradient).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F


def _sparse_t_mm(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int, dense: torch.Tensor
) -> torch.Tensor:
    """(S^T @ dense) for the sparse S with S[rows, cols] = vals; S^T has n rows."""
    S_t = torch.sparse_coo_tensor(
        torch.stack([cols, rows]), vals, (n, dense.shape[0]), check_invariants=False
    )
    return torch.sparse.mm(S_t, dense)


def _sampled_dot(g: torch.Tensor, W: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """out[b, j] = g[b] . W[idx[b, j]], without a dense (rows, d_sae) result."""
    B, k = idx.shape
    crow = torch.arange(0, B * k + 1, k, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        mask = torch.sparse_csr_tensor(
            crow,
            idx.reshape(-1),
            torch.zeros(B * k, dtype=g.dtype),
            (B, W.shape[0]),
            check_invariants=False,
        )
    return torch.sparse.sampled_addmm(mask, g, W.t(), beta=0.0).values().reshape(B, k)


CHUNK = 4096
"""Rows per encoder block: bounds the (rows, d_sae) pre-activation buffer for large batches.
(Smaller blocks were no faster on one thread and slower on two: more parallel regions.)"""


def _encode_topk(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    c: torch.Tensor,
    k: int,
    dead_idx: torch.Tensor | None,
    k_aux: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """TopK (then ReLU) of x @ W_enc + c, in blocks of at most CHUNK rows.
    Also the top ``k_aux`` pre-activations among ``dead_idx`` (ReLU'd) when given."""
    B = x.shape[0]
    vals = torch.empty(B, k, dtype=x.dtype)
    idx = torch.empty(B, k, dtype=torch.long)
    aux = dead_idx is not None and dead_idx.numel() > 0 and k_aux > 0
    ka = min(int(k_aux), int(dead_idx.numel())) if aux else 0
    a_vals = torch.empty(B, ka, dtype=x.dtype) if aux else None
    a_idx = torch.empty(B, ka, dtype=torch.long) if aux else None
    buf = torch.empty(min(CHUNK, B), W_enc.shape[1], dtype=x.dtype)
    for s in range(0, B, CHUNK):
        e = min(B, s + CHUNK)
        pre = buf[: e - s]
        torch.mm(x[s:e], W_enc, out=pre)
        pre += c
        torch.topk(pre, k, dim=-1, sorted=False, out=(vals[s:e], idx[s:e]))
        if aux:
            av, ai = pre.index_select(1, dead_idx).topk(ka, dim=-1, sorted=False)
            a_vals[s:e], a_idx[s:e] = av, dead_idx[ai]
    vals.relu_()
    if aux:
        a_vals.relu_()
    return vals, idx, a_vals, a_idx


class TopKSAEFunction(torch.autograd.Function):
    """Forward: (recon, vals, idx, aux_recon). See the module docstring for the backward."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, k, dead_idx, k_aux, apply_b_dec):  # type: ignore[override]
        # (x - b_dec) @ W_enc + b_enc  ==  x @ W_enc + (b_enc - b_dec @ W_enc): no centred copy of x
        c = b_enc - b_dec @ W_enc if apply_b_dec else b_enc
        vals, idx, a_vals, a_idx = _encode_topk(x, W_enc, c, k, dead_idx, k_aux)
        recon = F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum")
        recon += b_dec
        if a_idx is not None:
            aux = F.embedding_bag(a_idx, W_dec, per_sample_weights=a_vals, mode="sum")
        else:
            aux = x.new_zeros(0)  # no dead latents: nothing to reconstruct
        ctx.save_for_backward(x, W_enc, W_dec, b_dec, vals, idx, a_vals, a_idx)
        ctx.apply_b_dec = apply_b_dec
        ctx.mark_non_differentiable(idx)
        return recon, vals, idx, aux

    @staticmethod
    def backward(ctx, g_recon, g_vals, _g_idx, g_aux):  # type: ignore[override]
        x, W_enc, W_dec, b_dec, vals, idx, a_vals, a_idx = ctx.saved_tensors
        B, k = idx.shape
        n = W_dec.shape[0]
        g_recon = g_recon if g_recon is not None else torch.zeros_like(x)
        rows = torch.arange(B).repeat_interleave(k)
        # latent-value gradients and, through the ReLU, pre-activation gradients
        gv = _sampled_dot(g_recon, W_dec, idx)
        if g_vals is not None:
            gv = gv + g_vals
        gp = gv * (vals > 0)
        dec_rows, dec_cols, dec_vals = rows, idx.reshape(-1), vals.reshape(-1)
        enc_rows, enc_cols, enc_vals = rows, idx.reshape(-1), gp.reshape(-1)
        dense_dec = g_recon
        if a_idx is not None and g_aux is not None and g_aux.numel():
            ka = a_idx.shape[1]
            a_rows = torch.arange(B).repeat_interleave(ka)
            ga = _sampled_dot(g_aux, W_dec, a_idx) * (a_vals > 0)
            dec_rows = torch.cat([rows, a_rows + B])
            dec_cols = torch.cat([dec_cols, a_idx.reshape(-1)])
            dec_vals = torch.cat([dec_vals, a_vals.reshape(-1)])
            dense_dec = torch.cat([g_recon, g_aux])
            enc_rows = torch.cat([rows, a_rows])
            enc_cols = torch.cat([enc_cols, a_idx.reshape(-1)])
            enc_vals = torch.cat([enc_vals, ga.reshape(-1)])
        g_W_dec = _sparse_t_mm(dec_rows, dec_cols, dec_vals, n, dense_dec)
        g_b_enc = torch.zeros(n, dtype=x.dtype).index_add_(0, enc_cols, enc_vals)
        # G^T (x - b_dec) = G^T x - outer(column sums of G, b_dec)
        g_W_enc_t = _sparse_t_mm(enc_rows, enc_cols, enc_vals, n, x)
        g_b_dec = g_recon.sum(0)
        if ctx.apply_b_dec:
            g_W_enc_t -= torch.outer(g_b_enc, b_dec)
            g_b_dec -= W_enc @ g_b_enc
        return None, g_W_enc_t.t(), g_b_enc, g_W_dec, g_b_dec, None, None, None, None


def topk_forward(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    k: int,
    dead_idx: torch.Tensor | None = None,
    k_aux: int = 0,
    apply_b_dec: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fast path: (recon, vals, idx, aux_recon). ``aux_recon`` (no bias) uses the top ``k_aux``
    pre-activations among ``dead_idx`` (empty when there are none). Indices are in no particular
    order within a row. ``x`` gets no gradient."""
    return TopKSAEFunction.apply(
        x.detach().contiguous(),
        W_enc,
        b_enc,
        W_dec,
        b_dec,
        int(k),
        dead_idx,
        int(k_aux),
        bool(apply_b_dec),
    )


def naive_topk_forward(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    k: int,
    dead_idx: torch.Tensor | None = None,
    k_aux: int = 0,
    apply_b_dec: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference: the same outputs from dense tensors and plain autograd (slow; for tests)."""
    xc = x.detach() - b_dec if apply_b_dec else x.detach()
    pre = xc @ W_enc + b_enc
    _, idx = pre.detach().topk(k, dim=-1)
    idx = idx.sort(dim=-1).values
    mask = torch.zeros_like(pre).scatter_(-1, idx, 1.0)
    f = torch.relu(pre) * mask
    recon = f @ W_dec + b_dec
    vals = f.gather(-1, idx)
    aux = x.new_zeros(0)
    if dead_idx is not None and dead_idx.numel() > 0 and k_aux > 0:
        dead = torch.zeros(pre.shape[-1], dtype=torch.bool)
        dead[dead_idx] = True
        masked = pre.detach().masked_fill(~dead, float("-inf"))
        _, a_idx = masked.topk(min(k_aux, int(dead_idx.numel())), dim=-1)
        a_mask = torch.zeros_like(pre).scatter_(-1, a_idx, 1.0)
        aux = (torch.relu(pre) * a_mask) @ W_dec
    return recon, vals, idx, aux
