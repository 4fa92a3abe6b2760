"""Training an SAE on an activation store: ``train_sae(store, out_dir, TrainConfig(...))``.

Read top to bottom: set-up (or resume from the last checkpoint), then the loop: one batch, the
loss, the decoder-gradient projection, clipping, an Adam step, the decoder renormalisation, dead
latent bookkeeping, history, checkpoints. At the end the SAE is evaluated over the store and the
finished directory is renamed into place.

TopK (Gao et al. 2024): encoder initialised as the decoder's transpose, unit-norm decoder rows
(gradient parallel to each row removed before the step, rows renormalised after), b_dec from the
data mean, loss = FVU + aux_coeff * AuxK-FVU, where AuxK reconstructs the residual from the
top ``aux_k`` pre-activations among dead latents (dead = no firing in the last ``dead_rows``
rows). ReLU: loss = MSE (summed over dimensions, mean over rows) + l1 * sum_i f_i ||d_i||, the L1
coefficient warmed up linearly. Both: Adam, linear LR warm-up and final linear decay, gradient
norm clipping, optional tied weights.

Work happens in a hidden sibling ``.NAME.partial/`` holding ``checkpoints/latest.pt``; ``--resume``
continues from it and, on CPU, ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import io
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch

from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_bytes, atomic_write_json, read_json
from rlsae.sae.io import load_sae
from rlsae.sae.model import SAE, SAEConfig
from rlsae.sae.sparse import Workspace, topk_loss
from rlsae.sae.store import ActivationStore

CHECKPOINT = "checkpoints/latest.pt"


@dataclass
class TrainConfig:
    """Everything that decides an SAE training run. Saved in training.json beside the SAE."""

    arch: Literal["topk", "relu"] = "topk"
    """``topk`` (TopK + AuxK) or ``relu`` (ReLU with an L1 penalty)."""
    d_sae: int | None = None
    """Number of latents; None means ``expansion * d_in``."""
    expansion: float = 4.0
    """Latents per input dimension when ``d_sae`` is not given."""
    k: int = 32
    """TopK: active latents per row."""
    l1: float = 1e-3
    """ReLU: coefficient of the penalty sum_i f_i * ||W_dec[i]|| (mean over rows)."""
    l1_warmup_frac: float = 0.05
    """ReLU: fraction of the steps over which the L1 coefficient rises linearly from 0."""
    tied: bool = False
    """Tie the encoder to the decoder's transpose."""
    aux_k: int | None = None
    """TopK: latents used by the AuxK loss; None means d_in // 2, 0 turns AuxK off."""
    aux_coeff: float = 1 / 32
    """TopK: weight of the AuxK loss."""
    dead_rows: int = 1_000_000
    """A latent is dead once it has not fired for this many training rows (AuxK, logs)."""
    steps: int | None = None
    """Optimiser steps; None means ``epochs`` passes over the store."""
    epochs: float = 1.0
    """Passes over the store when ``steps`` is not given."""
    batch_size: int = 4096
    """Rows per step."""
    lr: float | None = None
    """Adam learning rate; None means 2e-4 / sqrt(d_sae / 16384) for topk, 1e-3 for relu."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    warmup_frac: float = 0.01
    """Fraction of the steps with a linear LR warm-up from 0."""
    decay_frac: float = 0.2
    """Fraction of the steps at the end with a linear LR decay to 0."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 turns clipping off)."""
    init_b_dec: Literal["mean", "zeros"] = "mean"
    """Initialise b_dec from the data mean (over up to 65536 rows) or at zero."""
    seed: int = 0
    """Seeds the initial weights and the data order."""
    checkpoint_every: int = 200
    """Steps between checkpoints (the last step is always checkpointed)."""
    log_every: int = 25
    """Steps between entries in the training history."""
    final_eval: bool = True
    """Evaluate over the whole store at the end and write feature_stats.safetensors."""
    hook_name: str | None = None
    """Recorded in cfg.json; None takes the store's hook."""
    source: str | None = None
    """Recorded in cfg.json; None takes the store's source."""

    def resolve(self, d_in: int) -> tuple[SAEConfig, float]:
        """The SAE's config and the learning rate for activations of width ``d_in``."""
        d_sae = int(self.d_sae) if self.d_sae is not None else int(round(self.expansion * d_in))
        cfg = SAEConfig(d_in=d_in, d_sae=d_sae, arch=self.arch, k=self.k, tied=self.tied)
        lr = (
            self.lr
            if self.lr is not None
            else (2e-4 / math.sqrt(d_sae / 16384) if self.arch == "topk" else 1e-3)
        )
        if self.batch_size < 1 or (self.steps is not None and self.steps < 1) or self.epochs <= 0:
            raise RlsaeError("batch size, steps and epochs must be positive")
        return cfg, float(lr)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


def lr_factor(step: int, total: int, warmup_frac: float, decay_frac: float) -> float:
    """Linear warm-up from 0, constant, linear decay to 0 over the last ``decay_frac``."""
    warm = int(warmup_frac * total)
    decay = int(decay_frac * total)
    if warm and step < warm:
        return (step + 1) / warm
    if decay and step >= total - decay:
        return max(0.0, (total - step) / decay)
    return 1.0


class Adam(torch.optim.Adam):
    """torch's Adam, stepping column-major parameters (the TopK encoder, see
    ``rlsae.sae.model.encoder_parameter``) as their contiguous transposes. Adam is elementwise,
    so the result is the same, but the fused kernel would otherwise copy such a parameter, its
    gradient and both moment buffers to row-major and back on every step (~2 ms of a ~60 ms
    step at d_sae 2048). The moment buffers keep the parameter's shape and layout, so
    checkpoints are those of torch's Adam."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        flipped = [
            p
            for group in self.param_groups
            for p in group["params"]
            if p.ndim == 2 and not p.is_contiguous() and p.t().is_contiguous()
        ]
        for p in flipped:
            _transpose_param(p, self.state.get(p, {}))
        try:
            return super().step(closure)
        finally:
            for p in flipped:
                _transpose_param(p, self.state.get(p, {}))


def _transpose_param(p: torch.Tensor, state: dict[str, Any]) -> None:
    """Swap a 2-D parameter, its gradient and its Adam moments for their transposed views."""
    p.data = p.data.t()
    if p.grad is not None:
        p.grad = p.grad.t()
    for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        if isinstance(state.get(name), torch.Tensor) and state[name].ndim == 2:
            state[name] = state[name].t()


def make_optimizer(
    sae: SAE, lr: float, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.Adam:
    """Adam over the SAE's parameters (the fused kernel where this torch build has one)."""
    try:
        return Adam(sae.parameters(), lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):  # no fused Adam for this device or dtype
        return Adam(sae.parameters(), lr=lr, betas=betas)


def _partial_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def _save_checkpoint(
    work: Path, sae: SAE, opt: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    buf = io.BytesIO()
    torch.save({"model": sae.state_dict(), "optim": opt.state_dict(), **state}, buf)
    atomic_write_bytes(work / CHECKPOINT, buf.getvalue())


def train_sae(
    store: ActivationStore | str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: TrainConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> SAE:
    """Train an SAE on ``store`` and write it to ``out_dir``; returns the trained SAE.

    ``resume`` continues an interrupted run from its last checkpoint (the saved config wins);
    if ``out_dir`` is already complete it is loaded and returned. ``on_step(step, stats)`` is
    called after every step (tests use it to interrupt a run).
    """
    out = Path(out_dir)
    work = _partial_dir(out)
    if out.exists():
        if resume and (out / "cfg.json").is_file():
            return load_sae(out)
        if not overwrite:
            raise RlsaeError(f"{out} already exists; choose another --out or remove it")
    st = store if isinstance(store, ActivationStore) else ActivationStore(store)
    ckpt: dict[str, Any] | None = None
    if resume and (work / CHECKPOINT).is_file():
        try:
            ckpt = torch.load(work / CHECKPOINT, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for damaged files
            raise RlsaeError(
                f"checkpoint {work / CHECKPOINT} cannot be read ({str(e).splitlines()[0]})"
            ) from None
        cfg = TrainConfig.from_dict(read_json(work / "train_config.json"))
    elif work.exists():
        if resume:
            shutil.rmtree(work)  # nothing usable yet: start over
        else:
            raise RlsaeError(
                f"an interrupted run exists at {work}; re-run with --resume or remove it"
            )
    cfg = cfg or TrainConfig()
    sae_cfg, base_lr = cfg.resolve(st.d_in)
    sae_cfg.hook_name = cfg.hook_name if cfg.hook_name is not None else st.hook
    sae_cfg.source = cfg.source if cfg.source is not None else st.source
    per_epoch = st.batches_per_epoch(cfg.batch_size, drop_last=st.rows >= cfg.batch_size)
    total = int(cfg.steps) if cfg.steps is not None else max(1, math.ceil(cfg.epochs * per_epoch))
    aux_k = (st.d_in // 2 if cfg.aux_k is None else int(cfg.aux_k)) if cfg.arch == "topk" else 0

    torch.manual_seed(cfg.seed)
    sae = SAE(sae_cfg, seed=cfg.seed)
    opt = make_optimizer(sae, base_lr, cfg.betas)
    since_fired = torch.zeros(sae_cfg.d_sae, dtype=torch.int64)
    history: list[dict[str, Any]] = []
    step = 0
    if ckpt is not None:
        try:
            sae.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optim"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise RlsaeError(
                f"checkpoint {work / CHECKPOINT} does not fit this store ({str(e).splitlines()[0]})"
            ) from None
        since_fired = ckpt["since_fired"]
        step = int(ckpt["step"])
        # the history as of the checkpoint rides inside it (one atomic write); history.json is
        # a copy that may be behind or ahead of it when a run stopped between the two writes
        history = ckpt.get("history")
        if history is None:  # a checkpoint from before the history moved in
            history = [h for h in read_json(work / "history.json") if h["step"] <= step]
    else:
        work.mkdir(parents=True)
        try:
            atomic_write_json(work / "train_config.json", cfg.to_dict())
            if cfg.init_b_dec == "mean":
                with torch.no_grad():
                    sae.b_dec.copy_(st.mean(max_rows=65536))
            _save_checkpoint(work, sae, opt, {"step": 0, "since_fired": since_fired})
            atomic_write_json(work / "history.json", history)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    created = ckpt is None
    try:
        return _run(
            st,
            out,
            work,
            cfg,
            sae,
            opt,
            since_fired,
            history,
            step,
            total,
            base_lr,
            aux_k,
            sae_cfg,
            progress,
            on_step,
        )
    except RlsaeError:
        if created:  # bad data met in a run that had not checkpointed anything worth keeping
            shutil.rmtree(work, ignore_errors=True)
        raise


def _run(
    st: ActivationStore,
    out: Path,
    work: Path,
    cfg: TrainConfig,
    sae: SAE,
    opt: torch.optim.Optimizer,
    since_fired: torch.Tensor,
    history: list[dict[str, Any]],
    step: int,
    total: int,
    base_lr: float,
    aux_k: int,
    sae_cfg: SAEConfig,
    progress: bool,
    on_step: Callable[[int, dict[str, float]], None] | None,
) -> SAE:
    """The training loop and the finishing steps (see the module docstring)."""
    per_epoch = st.batches_per_epoch(cfg.batch_size, drop_last=st.rows >= cfg.batch_size)
    batches = st.iter_batches(
        cfg.batch_size,
        shuffle=True,
        seed=cfg.seed,
        epochs=math.ceil(total / per_epoch),
        drop_last=st.rows >= cfg.batch_size,
        start_batch=step,
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=total, initial=step, desc=f"train {sae_cfg.arch}", unit="step", dynamic_ncols=True
        )
    workspace = Workspace()
    try:
        for x in batches:
            if step >= total:
                break
            stats = train_step(
                sae, opt, x, cfg, step, total, base_lr, since_fired, aux_k, workspace
            )
            step += 1
            if step % cfg.log_every == 0 or step == total:
                history.append({"step": step, "rows": step * min(cfg.batch_size, st.rows), **stats})
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{stats['loss']:.4g}",
                        fvu=f"{stats['fvu']:.4f}",
                        l0=f"{stats['l0']:.1f}",
                        dead=stats["dead"],
                    )
            if step % cfg.checkpoint_every == 0 or step == total:
                state = {"step": step, "since_fired": since_fired, "history": history}
                _save_checkpoint(work, sae, opt, state)
                atomic_write_json(work / "history.json", history)  # a readable copy
            if bar is not None:
                bar.update(1)
            if on_step is not None:
                on_step(step, stats)
    finally:
        if bar is not None:
            bar.close()

    # Finish: evaluate, write the SAE directory next to the checkpoints, rename into place.
    from rlsae.sae.metrics import evaluate_sae, json_metrics, save_feature_stats

    sae.eval()
    sae.save(work)
    final: dict[str, Any] = {}
    if cfg.final_eval:
        result = evaluate_sae(sae, st, batch_size=max(cfg.batch_size, 4096), progress=progress)
        save_feature_stats(result, work)
        final = json_metrics(result)
    atomic_write_json(
        work / "training.json",
        {
            "config": cfg.to_dict(),
            "sae": sae_cfg.to_dict(),
            "lr": base_lr,
            "aux_k": aux_k,
            "steps": total,
            "rows_seen": total * min(cfg.batch_size, st.rows),  # full batches, or the whole store
            "store": {
                "path": str(st.path),
                "rows": st.rows,
                "d_in": st.d_in,
                "hook": st.hook,
                "source": st.source,
            },
            "history": history,
            "final": final,
        },
    )
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    for name in ("history.json", "train_config.json"):
        (work / name).unlink(missing_ok=True)
    if out.exists():  # overwrite=True
        shutil.rmtree(out)
    os.replace(work, out)
    return sae


def train_step(
    sae: SAE,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    cfg: TrainConfig,
    step: int,
    total: int,
    base_lr: float,
    since_fired: torch.Tensor,
    aux_k: int,
    workspace: Workspace | None = None,
) -> dict[str, float]:
    """One optimiser step; updates ``since_fired`` in place and returns the batch's figures.
    A loop passes the same ``Workspace`` to each step (TopK: the pre-activation buffer is reused)."""
    lr = base_lr * lr_factor(step, total, cfg.warmup_frac, cfg.decay_frac)
    for group in opt.param_groups:
        group["lr"] = lr
    dead_mask = since_fired >= cfg.dead_rows
    n_dead = int(dead_mask.sum())
    # sum of squared deviations from the batch mean, without a centred copy of x
    total_var = (
        torch.linalg.vector_norm(x).square() - x.sum(0).square().sum() / x.shape[0]
    ).clamp_min(1e-12)
    out: dict[str, float] = {"lr": lr}
    if sae.cfg.arch == "topk":
        dead_idx = dead_mask.nonzero().reshape(-1) if (aux_k and n_dead) else None
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
            workspace,
        )
        fvu = sse / total_var
        loss = fvu
        if dead_idx is not None:
            # AuxK: the dead latents' top aux_k reconstruct the (detached) residual x - recon
            aux_loss = aux_sse / total_var
            scale = min(1.0, n_dead / aux_k)  # fewer dead latents than aux_k: weigh AuxK down
            loss = loss + cfg.aux_coeff * scale * aux_loss
            out["aux_loss"] = float(aux_loss.detach())
        active = (vals > 0).reshape(-1)
        fired = (
            torch.bincount(idx.reshape(-1), weights=active.to(vals.dtype), minlength=sae.cfg.d_sae)
            > 0
        )
        l0 = float(active.sum()) / x.shape[0]
    else:
        f = torch.relu(sae.pre_acts(x))
        recon = f @ sae.W_dec + sae.b_dec
        mse = (recon - x).pow(2).sum(-1).mean()
        warm = int(cfg.l1_warmup_frac * total)
        l1c = cfg.l1 * min(1.0, (step + 1) / warm) if warm else cfg.l1
        sparsity = (f * sae.W_dec.norm(dim=1)).sum(-1).mean()
        loss = mse + l1c * sparsity
        fvu = (recon - x).pow(2).sum() / total_var
        fired = (f > 0).any(0)
        l0 = float((f > 0).sum()) / x.shape[0]
        out["l1_loss"] = float(sparsity.detach())
        out["l1_coeff"] = l1c
    opt.zero_grad(set_to_none=True)
    loss.backward()
    unit_norm = sae.cfg.arch == "topk"
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
    since_fired += x.shape[0]
    since_fired.masked_fill_(fired, 0)
    out.update(
        loss=float(loss.detach()),
        fvu=float(fvu.detach()),
        l0=l0,
        dead=int((since_fired >= cfg.dead_rows).sum()),
    )
    if not math.isfinite(out["loss"]):
        raise RlsaeError(f"training diverged at step {step} (loss is {out['loss']}); lower --lr")
    return out
