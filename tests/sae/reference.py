"""References for the SAE core's tests (not part of the library).

- ``naive_topk_forward``: the TopK SAE forward with dense tensors and plain autograd, the
  reference every gradient of the fast path is checked against (in float64).
- ``topk_forward``: the fast path's pieces (blockwise encoder + TopK selection, sparse decoder,
  the grouped sparse backward) assembled into an autograd function that returns the
  reconstruction itself, so its outputs and gradients can be compared with the reference
  directly. The library's training step (``topk_loss``) shares every one of these pieces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlsae.sae._fast.loss import (
    Workspace,
    _apply,
    _encode_batchtopk,
    _encode_topk,
    _sampled_dot,
    _sparse_grads,
)


class TopKSAEFunction(torch.autograd.Function):
    """Forward: (recon, vals, idx, aux_recon); the backward as in ``rlsae.sae._fast.loss``."""

    @staticmethod
    def forward(
        ctx, x, W_enc, b_enc, W_dec, b_dec, k, dead_idx, k_aux, apply_b_dec, workspace, batch
    ):  # type: ignore[override]
        encode = _encode_batchtopk if batch else _encode_topk
        vals, idx, a_vals, a_idx = encode(
            x, W_enc, b_enc, b_dec, apply_b_dec, k, dead_idx, k_aux, workspace
        )
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
        n = W_dec.shape[0]
        g_recon = g_recon if g_recon is not None else torch.zeros_like(x)
        # latent-value gradients and, through the ReLU, pre-activation gradients
        gv = _sampled_dot(g_recon, W_dec, idx)
        if g_vals is not None:
            gv = gv + g_vals
        gp = gv * (vals > 0)
        aux = None
        if a_idx is not None and g_aux is not None and g_aux.numel() > 0:
            ga = _sampled_dot(g_aux, W_dec, a_idx) * (a_vals > 0)
            aux = (a_idx, a_vals, ga, g_aux)
        g_W_dec, g_W_enc_t, g_b_enc = _sparse_grads(
            idx, vals, gp, g_recon, x, b_dec, ctx.apply_b_dec, n, aux
        )
        g_b_dec = g_recon.sum(0)
        if ctx.apply_b_dec:
            g_b_dec -= W_enc @ g_b_enc
        return None, g_W_enc_t.t(), g_b_enc, g_W_dec, g_b_dec, None, None, None, None, None, None


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
    workspace: Workspace | None = None,
    batch: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fast path: (recon, vals, idx, aux_recon) (``batch``: BatchTopK). ``aux_recon`` (no bias) uses the top ``k_aux``
    pre-activations among ``dead_idx`` (empty when there are none). Indices are in no particular
    order within a row. ``x`` gets no gradient. A training loop passes one ``Workspace`` to every
    step so the pre-activation buffer is allocated once."""
    return _apply(
        TopKSAEFunction,
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


def naive_batchtopk_forward(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    k: int,
    dead_idx: torch.Tensor | None = None,
    k_aux: int = 0,
    apply_b_dec: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference BatchTopK as SAELens computes it: the k * rows largest of relu(pre) over the
    flattened batch kept, dense, plain autograd. Returns (recon, dense latents, aux_recon); AuxK
    as in ``naive_topk_forward``."""
    xc = x.detach() - b_dec if apply_b_dec else x.detach()
    pre = xc @ W_enc + b_enc
    acts = torch.relu(pre)
    flat = acts.flatten()
    top = flat.detach().topk(k * x.shape[0]).indices
    mask = torch.zeros_like(flat).scatter_(0, top, 1.0).reshape(acts.shape)
    f = acts * mask
    recon = f @ W_dec + b_dec
    aux = naive_topk_forward(x, W_enc, b_enc, W_dec, b_dec, k, dead_idx, k_aux, apply_b_dec)[3]
    return recon, f, aux
