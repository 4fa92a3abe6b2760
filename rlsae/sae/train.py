"""Training an SAE on an activation store: ``train_sae(store, out_dir, TrainConfig(...))``.

Read top to bottom: set-up (or resume from the last checkpoint), then the loop: one batch, the
loss, the decoder-gradient projection, clipping, an Adam step, the decoder renormalisation, dead
latent bookkeeping, history, checkpoints. At the end the SAE is evaluated over the store and the
finished directory is renamed into place.

TopK (Gao et al. 2024): encoder initialised as the decoder's transpose, unit-norm decoder rows
(gradient parallel to each row removed before the step, rows renormalised after), b_dec from the
data mean, loss = FVU + aux_coeff * AuxK-FVU, where AuxK reconstructs the residual from the
top ``aux_k`` pre-activations among dead latents (dead = no firing in the last ``dead_rows``
rows). BatchTopK (Bussmann et al. 2024): as TopK, but the k x rows largest ReLU'd
pre-activations over the whole batch are kept, and the inference threshold is the moving average
(rate ``topk_threshold_lr``, in float64, from 0) of the smallest kept positive activation, as
SAELens estimates it; the SAE's ``threshold`` holds it, so the saved SAE is SAELens's JumpReLU.
JumpReLU (Rajamanoharan et al. 2024): loss = MSE + l0 * mean over rows of the latents above
their thresholds (``rlsae.sae.jumprelu``'s straight-through estimators with the rectangle kernel
of width ``bandwidth``; or the tanh surrogate), the L0 coefficient warmed up linearly over
``l0_warmup_frac``; thresholds start at ``init_threshold`` and are kept >= 0 (projected before
every step, as SAELens does); decoder rows start at norm ``decoder_init_norm`` (0.1, the encoder
at their transpose) and are left free, as SAELens trains JumpReLU (``decoder_init_norm=None``:
unit-norm rows as TopK); with ``pre_act_loss``, Anthropic's pre-activation loss on the dead
latents (``pre_act_loss``, the function). Matryoshka BatchTopK (Bussmann et al. 2025): BatchTopK whose loss adds, for each inner prefix
of ``matryoshka_groups`` (the first 1, 2, ... groups of latents), the FVU of the reconstruction
from that prefix's latents alone; the prefix decodes weigh the kept entries by their group, so
the whole step stays on the sparse path (the extra terms reach the encoder through the kept
values' gradient). ReLU: loss = MSE (summed over dimensions, mean over rows) + l1 * sum_i f_i ||d_i||, the L1
coefficient warmed up linearly. Both: Adam, linear LR warm-up and final linear decay, gradient
norm clipping, optional tied weights.

Work happens in a hidden sibling ``.NAME.partial/`` holding ``checkpoints/latest.pt`` (weights,
optimiser, step, dead-latent counters and the history, in one atomic write), ``resume.json``
(the settings and the store's identity the run started with) and ``history.json`` (a readable
copy of the history). ``--resume`` continues from it and, on CPU, ends with the same weights as
an uninterrupted run; a resume with other settings or another store is refused in one line
naming the difference. Only the finished files (``FINISHED``) are renamed into place: temporary
files of an interrupted write never reach the SAE directory.
"""

from __future__ import annotations

import io
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from rlsae.artifacts import Artifact
from rlsae.configs import differing_keys, from_mapping, to_mapping
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_bytes, atomic_write_json, read_json
from rlsae.sae._fast import Workspace, prefix_sse, topk_loss
from rlsae.sae.config import SAEConfig, TrainConfig
from rlsae.sae.io import CFG
from rlsae.sae.jumprelu import jumprelu, step
from rlsae.sae.metrics import SAEMetrics, evaluate_sae
from rlsae.sae.model import SAE, load_sae
from rlsae.sae.optim import Adam, lr_factor, make_optimizer
from rlsae.sae.store import ActivationStore, StoreIdentity

__all__ = [
    "Adam",
    "TrainConfig",
    "TrainState",
    "TrainingRecord",
    "lr_factor",
    "make_optimizer",
    "train_sae",
    "train_step",
]

CHECKPOINT = "checkpoints/latest.pt"
RESUME = "resume.json"
HISTORY = "history.json"
TRAINING = "training.json"
FINISHED = frozenset({CFG, "sae_weights.safetensors", TRAINING, "feature_stats.safetensors"})
"""The files of a finished SAE directory; nothing else in the work directory is published."""
FREE_ON_RESUME = frozenset({"checkpoint_every"})
"""Settings a resume may change: they do not change the trained SAE."""


@dataclass
class TrainingRecord(Artifact):
    """``training.json``: how an SAE was trained, its history and its final evaluation."""

    FORMAT: ClassVar[str] = "rlsae.sae_training"
    VERSION: ClassVar[int] = 1

    config: TrainConfig
    """The training settings."""
    sae: SAEConfig
    """The SAE's config (as in cfg.json)."""
    lr: float
    """The base learning rate used (``config.lr`` or its default for this width)."""
    aux_k: int
    """AuxK latents used (0: off)."""
    steps: int
    """Optimiser steps."""
    rows_seen: int
    """Training rows: full batches, or the whole store per step when it is smaller."""
    store_path: str
    """The activation store trained on (as given)."""
    store: StoreIdentity
    """The store's meta and content fingerprint."""
    history: list[dict[str, Any]]
    """Every ``log_every`` steps: step, rows, lr, loss, fvu, l0, dead (+ aux_loss or l1 terms)."""
    final: SAEMetrics | None = None
    """The evaluation over the whole store at the end (None with ``final_eval=False``)."""
    origin: dict[str, Any] = field(default_factory=dict)
    """What the store was recorded from: its ``provider`` and, for an agent's store, the
    agent's ``arch`` and ``layer`` (tools using the SAE refuse another agent architecture or
    layer without the store; empty for SAEs trained before this was recorded)."""


def store_origin(store: ActivationStore) -> dict[str, Any]:
    """A store's provider and, when its meta records them, the agent ``arch`` and ``layer``."""
    keys = {"provider": store.provider, "arch": store.extra.get("arch")}
    keys["layer"] = store.extra.get("layer")
    return {k: str(v) for k, v in keys.items() if v}


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


def _partial_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def _save_checkpoint(work: Path, state: TrainState) -> None:
    blob = {
        "model": state.sae.state_dict(),
        "optim": state.opt.state_dict(),
        "step": state.step,
        "since_fired": state.since_fired,
        "history": state.history,
        "topk_threshold": state.topk_threshold,
    }
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write_bytes(work / CHECKPOINT, buf.getvalue())
    atomic_write_json(work / HISTORY, state.history)  # a readable copy


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

    ``resume`` continues an interrupted run from its last checkpoint; if ``out_dir`` is already
    complete it is loaded and returned. Either way a ``cfg`` or store other than the run's is
    refused in one line naming the difference (``cfg=None`` takes the run's settings).
    ``on_step(step, stats)`` is called after every step (tests use it to interrupt a run).
    """
    if cfg is not None:
        cfg.validate()
    out = Path(out_dir)
    work = _partial_dir(out)
    st = store if isinstance(store, ActivationStore) else ActivationStore(store)
    if out.exists():
        if resume and (out / CFG).is_file():
            if (out / TRAINING).is_file():
                record = TrainingRecord.read(out / TRAINING)
                _check_same_run(out, record.config, cfg, record.store, st)
            return load_sae(out)
        if not overwrite:
            raise RlsaeError(f"{out} already exists; choose another --out or remove it")
    ckpt = _open_partial(work, resume)
    if ckpt is not None:
        saved = read_json(work / RESUME)
        saved_cfg = from_mapping(TrainConfig, saved["config"], str(work / RESUME))
        saved_store = from_mapping(StoreIdentity, saved["store"], str(work / RESUME))
        _check_same_run(work, saved_cfg, cfg, saved_store, st)
        cfg = cfg or saved_cfg
    cfg = cfg or TrainConfig()
    cfg.validate()
    sae_cfg, base_lr = cfg.resolve(st.d_in)
    sae_cfg.hook_name = cfg.hook_name if cfg.hook_name is not None else st.hook
    sae_cfg.source = cfg.source if cfg.source is not None else st.source
    per_epoch = st.batches_per_epoch(cfg.batch_size, drop_last=st.rows >= cfg.batch_size)
    total = int(cfg.steps) if cfg.steps is not None else max(1, math.ceil(cfg.epochs * per_epoch))
    aux_k = (st.d_in // 2 if cfg.aux_k is None else int(cfg.aux_k)) if cfg.arch != "relu" else 0

    torch.manual_seed(cfg.seed)
    sae = SAE(sae_cfg, seed=cfg.seed)
    if sae.cfg.arch == "jumprelu":
        init_jumprelu(sae, cfg)
    state = TrainState.new(sae, cfg, total, base_lr, aux_k)
    if ckpt is not None:
        _restore(state, ckpt, work)
    else:
        _start(work, state, st)
    try:
        _loop(state, st, work, progress, on_step)
        return _finish(state, st, work, out, progress)
    except RlsaeError:
        if ckpt is None:  # bad data met in a run that had not checkpointed anything worth keeping
            shutil.rmtree(work, ignore_errors=True)
        raise


def init_jumprelu(sae: SAE, cfg: TrainConfig) -> None:
    """JumpReLU's start, as SAELens's: every threshold at ``init_threshold`` and, with
    ``decoder_init_norm``, decoder rows at that norm with the encoder at their transpose."""
    assert sae.threshold is not None
    with torch.no_grad():
        sae.threshold.fill_(cfg.init_threshold)
        if cfg.decoder_init_norm is not None:
            sae.W_dec.mul_(cfg.decoder_init_norm / sae.W_dec.norm(dim=1, keepdim=True))
            if not sae.cfg.tied:
                sae.W_enc.copy_(sae.W_dec.t())


def unit_norm_decoder(cfg: TrainConfig) -> bool:
    """Whether training keeps the decoder rows at unit norm: every kind but ReLU, and JumpReLU
    with ``decoder_init_norm`` (SAELens leaves its decoder free)."""
    return cfg.arch != "relu" and not (cfg.arch == "jumprelu" and cfg.decoder_init_norm)


def _open_partial(work: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint of an interrupted run at ``work`` (None: start afresh). Without ``resume``
    an interrupted run is refused; with it, one that saved nothing usable is removed and the
    temporary files of writes it was killed in are cleaned."""
    if not work.exists():
        return None
    if not resume:
        raise RlsaeError(f"an interrupted run exists at {work}; re-run with --resume or remove it")
    if not (work / CHECKPOINT).is_file() or not (work / RESUME).is_file():
        shutil.rmtree(work)  # nothing usable yet: start over
        return None
    for d in (work, work / "checkpoints"):
        for p in d.glob(".*"):  # atomic writes' temporary files, left by a kill
            p.unlink(missing_ok=True)
    try:
        ckpt = torch.load(work / CHECKPOINT, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged files
        raise RlsaeError(
            f"checkpoint {work / CHECKPOINT} cannot be read ({str(e).splitlines()[0]})"
        ) from None
    missing = {"model", "optim", "step", "since_fired", "history"} - set(ckpt)
    if missing:
        raise RlsaeError(
            f"checkpoint {work / CHECKPOINT} lacks {sorted(missing)[0]!r} (written by another "
            "version of rlsae); remove it to start over"
        )
    return ckpt


def _check_same_run(
    where: Path,
    saved_cfg: TrainConfig,
    cfg: TrainConfig | None,
    saved_store: StoreIdentity,
    store: ActivationStore,
) -> None:
    """Refuse, in one line naming the difference, to continue ``where`` with other settings
    (``FREE_ON_RESUME`` aside) or on a store other than the one it started on."""
    if cfg is not None:
        a, b = to_mapping(saved_cfg), to_mapping(cfg)
        diff = [k for k in differing_keys(a, b) if k not in FREE_ON_RESUME]
        if diff:
            changes = ", ".join(f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in diff)
            raise RlsaeError(
                f"cannot resume {where}: it was trained with other settings ({changes}); "
                "use the same settings, or another --out"
            )
    diff = saved_store.differences(store.identity())
    if diff:
        raise RlsaeError(
            f"cannot resume {where}: it was trained on another activation store than {store.path} "
            f"({'; '.join(diff)}); use that store, or another --out"
        )


def _restore(state: TrainState, ckpt: dict[str, Any], work: Path) -> None:
    try:
        state.sae.load_state_dict(ckpt["model"])
        state.opt.load_state_dict(ckpt["optim"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise RlsaeError(
            f"checkpoint {work / CHECKPOINT} does not fit this store ({str(e).splitlines()[0]})"
        ) from None
    state.since_fired = ckpt["since_fired"]
    state.step = int(ckpt["step"])
    state.history = list(ckpt["history"])
    state.topk_threshold = float(ckpt.get("topk_threshold", 0.0))


def _start(work: Path, state: TrainState, store: ActivationStore) -> None:
    """Create the work directory: settings and store identity, b_dec, the step-0 checkpoint."""
    work.mkdir(parents=True)
    try:
        resume_info = {"config": to_mapping(state.cfg), "store": to_mapping(store.identity())}
        atomic_write_json(work / RESUME, resume_info)
        if state.cfg.init_b_dec == "mean":
            with torch.no_grad():
                state.sae.b_dec.copy_(store.mean(max_rows=65536))
        _save_checkpoint(work, state)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _loop(
    state: TrainState,
    st: ActivationStore,
    work: Path,
    progress: bool,
    on_step: Callable[[int, dict[str, float]], None] | None,
) -> None:
    """Steps from ``state.step`` to ``state.total``: history every ``log_every`` steps, a
    checkpoint every ``checkpoint_every`` steps and at the last."""
    cfg, total = state.cfg, state.total
    drop_last = st.rows >= cfg.batch_size
    per_epoch = st.batches_per_epoch(cfg.batch_size, drop_last=drop_last)
    batches = st.iter_batches(
        cfg.batch_size,
        shuffle=cfg.shuffle,
        seed=cfg.seed,
        epochs=math.ceil(total / per_epoch),
        drop_last=drop_last,
        start_batch=state.step,
    )
    bar = None
    if progress:
        from tqdm import tqdm

        desc = f"train {state.sae.cfg.arch}"
        bar = tqdm(total=total, initial=state.step, desc=desc, unit="step", dynamic_ncols=True)
    try:
        for x in batches:
            if state.step >= total:
                break
            stats = train_step(state, x)
            step = state.step
            if step % cfg.log_every == 0 or step == total:
                rows = step * min(cfg.batch_size, st.rows)
                state.history.append({"step": step, "rows": rows, **stats})
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{stats['loss']:.4g}",
                        fvu=f"{stats['fvu']:.4f}",
                        l0=f"{stats['l0']:.1f}",
                        dead=stats["dead"],
                    )
            if step % cfg.checkpoint_every == 0 or step == total:
                _save_checkpoint(work, state)
            if bar is not None:
                bar.update(1)
            if on_step is not None:
                on_step(step, stats)
    finally:
        if bar is not None:
            bar.close()


def _finish(state: TrainState, st: ActivationStore, work: Path, out: Path, progress: bool) -> SAE:
    """Evaluate, write the SAE files next to the checkpoints, and rename only those into place."""
    sae, cfg = state.sae, state.cfg
    sae.eval()
    sae.save(work)
    final = None
    if cfg.final_eval:
        result = evaluate_sae(sae, st, batch_size=max(cfg.batch_size, 4096), progress=progress)
        result.stats.write(work)
        final = result.metrics
        final.feature_stats = "feature_stats.safetensors"
    record = TrainingRecord(
        config=cfg,
        sae=sae.cfg,
        lr=state.base_lr,
        aux_k=state.aux_k,
        steps=state.total,
        rows_seen=state.total * min(cfg.batch_size, st.rows),
        store_path=str(st.path),
        store=st.identity(),
        history=state.history,
        final=final,
        origin=store_origin(st),
    )
    record.write(work / TRAINING)
    for p in work.iterdir():  # checkpoints, copies, and any temporary file of a killed write
        if p.name not in FINISHED:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    if out.exists():  # overwrite=True
        shutil.rmtree(out)
    os.replace(work, out)
    return sae


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
    """JumpReLU: (loss, fvu, fired latents, l0); MSE plus the warmed-up L0 term (into ``out``)."""
    sae, cfg = state.sae, state.cfg
    t = sae.threshold
    assert t is not None  # a jumprelu SAE has one
    with torch.no_grad():
        t.clamp_(min=0.0)  # below 0 the gate would pass negative pre-activations
    pre = sae.pre_acts(x)
    f = jumprelu(pre, t, cfg.bandwidth)
    recon = f @ sae.W_dec + sae.b_dec
    mse = (recon - x).pow(2).sum(-1).mean()
    if cfg.sparsity_loss == "step":
        sparsity = step(pre, t, cfg.bandwidth).sum(-1).mean()
    else:
        sparsity = torch.tanh(cfg.tanh_scale * f * sae.W_dec.norm(dim=1)).sum(-1).mean()
    warm = int(cfg.l0_warmup_frac * state.total)
    l0c = cfg.l0 * min(1.0, (state.step + 1) / warm) if warm else cfg.l0
    out["l0_loss"] = float(sparsity.detach())
    out["l0_coeff"] = l0c
    loss = mse + l0c * sparsity
    if cfg.pre_act_loss is not None:
        dead = state.since_fired >= cfg.dead_rows
        pre_act = pre_act_loss(pre, t, sae.W_dec, dead)
        out["pre_act_loss"] = float(pre_act.detach())
        loss = loss + cfg.pre_act_loss * pre_act
    fvu = (recon - x).pow(2).sum() / total_var
    active = f.detach() != 0
    return loss, fvu, active.any(0), float(active.sum()) / x.shape[0]


def pre_act_loss(
    pre: torch.Tensor, threshold: torch.Tensor, W_dec: torch.Tensor, dead: torch.Tensor
) -> torch.Tensor:
    """Anthropic's pre-activation loss as SAELens computes it (before its coefficient): the mean
    over rows of sum_i relu(threshold_i - pre_i) * ||W_dec[i]|| over the ``dead`` latents (0
    when none is dead). It pulls dead latents' pre-activations up towards their thresholds."""
    if not bool(dead.any()):
        return pre.new_zeros(())
    cols = dead.nonzero().reshape(-1)
    gap = (threshold[cols] - pre[:, cols]).relu()
    return (gap * W_dec[cols].norm(dim=1)).sum(-1).mean()


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
