"""One optimiser step of SAE training (:func:`train_step`) and what it carries from step to step
(:class:`TrainState`): the loss of each kind — TopK / BatchTopK / Matryoshka with AuxK, JumpReLU,
ReLU + L1 — its backward pass, the decoder-gradient projection, clipping, the Adam step, the
decoder renormalisation and the dead-latent bookkeeping. The maths is in :mod:`rlsae.sae.train`'s
docstring; :func:`rlsae.sae.train.train_sae` drives the loop, the checkpoints and resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from rlsae.errors import RlsaeError
from rlsae.sae._fast import Workspace, jumprelu_loss, prefix_sse, topk_loss
from rlsae.sae.config import TrainConfig
from rlsae.sae.model import SAE
from rlsae.sae.optim import lr_factor, make_optimizer


@dataclass
class TrainState:
    """What a training run carries from one step to the next (a checkpoint holds the part that
    changes: the SAE, the optimiser, ``since_fired``, ``step`` and ``history``)."""

    sae: SAE
    opt: torch.optim.Optimizer
    cfg: TrainConfig
    total: int
    """Steps of the whole run (the LR schedule depends on it)."""
    base_lr: float
    aux_k: int
    since_fired: torch.Tensor
    """(d_sae,) rows since each latent last fired."""
    step: int = 0
    """Steps done."""
    history: list[dict[str, Any]] = field(default_factory=list)
    workspace: Workspace = field(default_factory=Workspace)
    """Buffers reused from step to step (TopK: the pre-activation block)."""
    topk_threshold: float = 0.0
    """BatchTopK: the inference threshold's moving average (float64; copied to the SAE's
    ``threshold`` after every step)."""

    @classmethod
    def new(cls, sae: SAE, cfg: TrainConfig, total: int, base_lr: float, aux_k: int) -> TrainState:
        """A fresh state for ``sae``: Adam at ``base_lr``, no latent dead yet, step 0."""
        since = torch.zeros(sae.cfg.d_sae, dtype=torch.int64)
        return cls(sae, make_optimizer(sae, base_lr, cfg.betas), cfg, total, base_lr, aux_k, since)


def unit_norm_decoder(cfg: TrainConfig) -> bool:
    """Whether training keeps the decoder rows at unit norm: every kind but ReLU, and JumpReLU
    with ``decoder_init_norm`` (SAELens leaves its decoder free)."""
    return cfg.arch != "relu" and not (cfg.arch == "jumprelu" and cfg.decoder_init_norm)


def train_step(state: TrainState, x: torch.Tensor) -> dict[str, float]:
    """One optimiser step on batch ``x``: updates the SAE, ``state.since_fired`` and
    ``state.step``; returns the batch's figures (loss, fvu, l0, dead, lr and the loss terms)."""
    sae, cfg, opt = state.sae, state.cfg, state.opt
    lr = state.base_lr * lr_factor(state.step, state.total, cfg.warmup_frac, cfg.decay_frac)
    for group in opt.param_groups:
        group["lr"] = lr
    # sum of squared deviations from the batch mean, without a centred copy of x
    total_var = (
        torch.linalg.vector_norm(x).square() - x.sum(0).square().sum() / x.shape[0]
    ).clamp_min(1e-12)
    out: dict[str, float] = {"lr": lr}
    if sae.cfg.arch in ("topk", "batchtopk", "matryoshka"):
        loss, fvu, fired, l0 = _topk_terms(state, x, total_var, out)
    elif sae.cfg.arch == "jumprelu":
        loss, fvu, fired, l0 = _jumprelu_terms(state, x, total_var, out)
    else:
        loss, fvu, fired, l0 = _relu_terms(state, x, total_var, out)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    unit_norm = unit_norm_decoder(cfg)
    if unit_norm:
        sae.remove_parallel_decoder_grad()
    if cfg.grad_clip > 0:  # clip_grad_norm_'s rule, skipping its multiply-by-1 pass when unclipped
        grads = [p.grad for p in sae.parameters() if p.grad is not None]
        total_norm = float(torch.nn.utils.get_total_norm(grads))
        if total_norm + 1e-6 > cfg.grad_clip:
            for grad in grads:
                grad.mul_(cfg.grad_clip / (total_norm + 1e-6))
    opt.step()
    if unit_norm:
        sae.normalize_decoder()
    state.since_fired += x.shape[0]
    state.since_fired.masked_fill_(fired, 0)
    out.update(
        loss=float(loss.detach()),
        fvu=float(fvu.detach()),
        l0=l0,
        dead=int((state.since_fired >= cfg.dead_rows).sum()),
    )
    if not math.isfinite(out["loss"]):
        raise RlsaeError(
            f"training diverged at step {state.step} (loss is {out['loss']}); lower --lr"
        )
    state.step += 1
    return out


def _topk_terms(
    state: TrainState, x: torch.Tensor, total_var: torch.Tensor, out: dict[str, float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """TopK and BatchTopK: (loss, fvu, fired latents, l0); FVU plus the weighted AuxK term (into
    ``out``). BatchTopK also moves the inference threshold (``_update_threshold``)."""
    sae, cfg, aux_k = state.sae, state.cfg, state.aux_k
    dead_mask = state.since_fired >= cfg.dead_rows
    n_dead = int(dead_mask.sum())
    per_level = bool(cfg.matryoshka_aux and sae.cfg.matryoshka_groups and aux_k and n_dead)
    dead_idx = dead_mask.nonzero().reshape(-1) if (aux_k and n_dead and not per_level) else None
    sse, aux_sse, vals, idx = topk_loss(
        x,
        sae.W_enc,
        sae.b_enc,
        sae.W_dec,
        sae.b_dec,
        sae.cfg.k,
        dead_idx,
        aux_k,
        sae.cfg.apply_b_dec_to_input,
        state.workspace,
        batch=sae.cfg.arch != "topk",
    )
    if sae.cfg.arch != "topk":
        _update_threshold(state, vals.detach())
        out["topk_threshold"] = state.topk_threshold
    fvu = sse / total_var
    loss = fvu
    if sae.cfg.matryoshka_groups:
        loss = loss + _prefix_losses(sae, x, vals, idx, total_var, out)
    if per_level:
        aux_loss = matryoshka_aux_loss(sae, x, vals.detach(), idx, dead_mask, aux_k, total_var)
        loss = loss + cfg.aux_coeff * aux_loss
        out["aux_loss"] = float(aux_loss.detach())
    if dead_idx is not None:
        # AuxK: the dead latents' top aux_k reconstruct the (detached) residual x - recon
        aux_loss = aux_sse / total_var
        scale = min(1.0, n_dead / aux_k)  # fewer dead latents than aux_k: weigh AuxK down
        loss = loss + cfg.aux_coeff * scale * aux_loss
        out["aux_loss"] = float(aux_loss.detach())
    active = (vals > 0).reshape(-1)
    counts = torch.bincount(idx.reshape(-1), weights=active.to(vals.dtype), minlength=sae.d_sae)
    return loss, fvu, counts > 0, float(active.sum()) / x.shape[0]


def prefix_widths(groups: list[int]) -> list[int]:
    """The Matryoshka prefixes' widths: the running sums of the group sizes."""
    out, total = [], 0
    for g in groups:
        total += g
        out.append(total)
    return out


def _prefix_losses(
    sae: SAE,
    x: torch.Tensor,
    vals: torch.Tensor,
    idx: torch.Tensor,
    total_var: torch.Tensor,
    out: dict[str, float],
) -> torch.Tensor:
    """Matryoshka: the sum over the inner prefixes of the FVU of each prefix's reconstruction
    (the kept entries of latents below the prefix's width, decoded sparsely); each also goes
    into ``out`` as ``fvu_prefix_WIDTH``."""
    assert sae.cfg.matryoshka_groups is not None
    widths = prefix_widths(sae.cfg.matryoshka_groups)[:-1]
    if not widths:
        return x.new_zeros(())
    terms = prefix_sse(vals, idx, sae.W_dec, sae.b_dec, x, widths) / total_var
    for width, term in zip(widths, terms.detach().tolist(), strict=True):
        out[f"fvu_prefix_{width}"] = term
    return terms.sum()


def matryoshka_aux_loss(
    sae: SAE,
    x: torch.Tensor,
    vals: torch.Tensor,
    idx: torch.Tensor,
    dead: torch.Tensor,
    aux_k: int,
    total_var: torch.Tensor,
) -> torch.Tensor:
    """Matryoshka's AuxK per level, as SAELens's ``calculate_matryoshka_aux_loss`` (here with
    ReLU'd auxiliary activations and each term over ``total_var``, as rlsae's AuxK): for each
    group [s, e) holding dead latents, the top min(aux_k, dead in the group) ReLU'd
    pre-activations among them reconstruct (without b_dec) the detached residual of the prefix
    [0, e); the squared error, times min(1, dead in the group / aux_k), summed over groups."""
    assert sae.cfg.matryoshka_groups is not None
    W_enc, W_dec, b_dec = sae.W_enc, sae.W_dec, sae.b_dec
    x_in = x - b_dec if sae.cfg.apply_b_dec_to_input else x
    total = x.new_zeros(())
    start = 0
    for end in prefix_widths(sae.cfg.matryoshka_groups):
        cols = dead[start:end].nonzero().reshape(-1) + start
        start, n_dead = end, int(cols.numel())
        if not n_dead:
            continue
        with torch.no_grad():  # the prefix's residual, detached (AuxK's target)
            weights = vals * (idx < end)
            recon = F.embedding_bag(idx, W_dec, per_sample_weights=weights, mode="sum") + b_dec
            residual = x - recon
        pre = x_in @ W_enc[:, cols] + sae.b_enc[cols]
        a_vals, a_pos = pre.topk(min(aux_k, n_dead), dim=-1, sorted=False)
        aux = F.embedding_bag(cols[a_pos], W_dec, per_sample_weights=a_vals.relu(), mode="sum")
        total = total + min(1.0, n_dead / aux_k) * (aux - residual).pow(2).sum() / total_var
    return total


@torch.no_grad()
def _update_threshold(state: TrainState, vals: torch.Tensor) -> None:
    """BatchTopK: threshold <- (1 - lr) threshold + lr * (smallest kept positive activation), in
    float64 as SAELens does; the SAE's ``threshold`` buffer takes the new value."""
    positive = vals[vals > 0]
    if positive.numel():
        lr = state.cfg.topk_threshold_lr
        low = float(positive.min().double())
        state.topk_threshold = (1 - lr) * state.topk_threshold + lr * low
    assert state.sae.threshold is not None  # a batchtopk SAE has one
    state.sae.threshold.fill_(state.topk_threshold)


def _jumprelu_terms(
    state: TrainState, x: torch.Tensor, total_var: torch.Tensor, out: dict[str, float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """JumpReLU: (loss, fvu, fired latents, l0); MSE plus the warmed-up L0 term (into ``out``).
    On the sparse path (``rlsae.sae._fast.jumprelu_loss``) where few entries lie above their
    threshold's band, else on the dense block: the same terms either way (the straight-through
    estimators of ``rlsae.sae.jumprelu``)."""
    sae, cfg = state.sae, state.cfg
    t = sae.threshold
    assert t is not None  # a jumprelu SAE has one
    with torch.no_grad():
        t.clamp_(min=0.0)  # below 0 the gate would pass negative pre-activations
    dead = state.since_fired >= cfg.dead_rows
    dead_cols = dead.nonzero().reshape(-1) if cfg.pre_act_loss is not None else None
    terms = jumprelu_loss(
        x,
        sae.W_enc,
        sae.b_enc,
        sae.W_dec,
        sae.b_dec,
        t,
        cfg.bandwidth,
        sae.cfg.apply_b_dec_to_input,
        dead_cols,
        state.workspace,
    )
    rows = x.shape[0]
    mse = terms.sse / rows
    fvu = terms.sse / total_var
    norms = sae.W_dec.norm(dim=1) if cfg.sparsity_loss == "tanh" else None
    if terms.idx is not None:  # the sparse path: the candidates' entries
        active = terms.active.reshape(-1)
        hits = torch.bincount(  # active entries per latent
            terms.idx.reshape(-1), weights=active.to(x.dtype), minlength=sae.d_sae
        )
        fired, n_active = hits > 0, int(active.sum())
        norms = norms[terms.idx] if norms is not None else None
        out["candidates"] = terms.density
    else:  # the dense path: every entry
        fired, n_active = terms.active.any(0), int(terms.active.sum())
    if norms is None:
        sparsity = terms.count / rows
    else:
        sparsity = torch.tanh(cfg.tanh_scale * terms.f * norms).sum() / rows
    warm = int(cfg.l0_warmup_frac * state.total)
    l0c = cfg.l0 * min(1.0, (state.step + 1) / warm) if warm else cfg.l0
    out["l0_loss"] = float(sparsity.detach())
    out["l0_coeff"] = l0c
    loss = mse + l0c * sparsity
    if cfg.pre_act_loss is not None:
        # Anthropic's pre-activation loss as SAELens computes it (before its coefficient): the
        # mean over rows of sum_i relu(threshold_i - pre_i) ||W_dec[i]|| over the dead latents
        # (0 when none is dead); it pulls their pre-activations up towards their thresholds
        if terms.pre_dead is not None:  # the dead columns' block
            assert dead_cols is not None
            gap = (t[dead_cols] - terms.pre_dead).relu()
            pre_act = (gap * sae.W_dec[dead_cols].norm(dim=1)).sum(-1).mean()
        else:
            pre_act = x.new_zeros(())
        out["pre_act_loss"] = float(pre_act.detach())
        loss = loss + cfg.pre_act_loss * pre_act
    return loss, fvu, fired, n_active / rows


def _relu_terms(
    state: TrainState, x: torch.Tensor, total_var: torch.Tensor, out: dict[str, float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """ReLU: (loss, fvu, fired latents, l0); MSE plus the warmed-up L1 term (into ``out``)."""
    sae, cfg = state.sae, state.cfg
    f = torch.relu(sae.pre_acts(x))
    recon = f @ sae.W_dec + sae.b_dec
    mse = (recon - x).pow(2).sum(-1).mean()
    warm = int(cfg.l1_warmup_frac * state.total)
    l1c = cfg.l1 * min(1.0, (state.step + 1) / warm) if warm else cfg.l1
    sparsity = (f * sae.W_dec.norm(dim=1)).sum(-1).mean()
    out["l1_loss"] = float(sparsity.detach())
    out["l1_coeff"] = l1c
    fvu = (recon - x).pow(2).sum() / total_var
    return mse + l1c * sparsity, fvu, (f > 0).any(0), float((f > 0).sum()) / x.shape[0]
