"""Training a crosscoder on two aligned stores: ``train_crosscoder(base, tuned, out, cfg)``.

A crosscoder is an SAE on the concatenated activations ``[base | tuned]`` (``PairedStore``)
whose decoder rows are read as one direction per model. So it is trained with the SAE trainer's
own parts (``rlsae.sae.train``): its ``TrainState``, Adam and LR schedule, checkpoint writer and
reader, the interrupted-run handling, and, for ``batchtopk``, its whole step (``train_step``:
the fast batch-wide TopK loss of ``rlsae.sae._fast``, AuxK on dead latents, the moving-average
inference threshold, the decoder-gradient projection and renormalisation, which keep each
latent's two decoder directions together at unit norm). Only the ``l1`` step is its own
(``l1_step``): the Anthropic crosscoder loss, sum over models of the squared error plus
l1 * sum_j f_j (||d_j base|| + ||d_j tuned||), with free decoder norms, which the SAE's ReLU
step (one norm over the concatenated row) does not give.

Work happens, as for an SAE, in a hidden sibling ``.NAME.partial/`` (``checkpoints/latest.pt``,
``resume.json`` with the settings and the pair's identity, ``history.json``); ``resume=True``
continues it and ends with the same weights as an uninterrupted run; other settings or other
stores are refused in one line. Only the finished files (``FINISHED``) are renamed into place.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from rlsae.artifacts import Artifact
from rlsae.configs import to_mapping
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_json
from rlsae.sae.config import TrainConfig
from rlsae.sae.crosscoder import CFG, WEIGHTS, Crosscoder, CrosscoderSpec, load_crosscoder
from rlsae.sae.crosscoder_config import CrosscoderConfig
from rlsae.sae.model import SAE
from rlsae.sae.optim import lr_factor
from rlsae.sae.paired import PairedStore
from rlsae.sae.store import ActivationStore, StoreIdentity
from rlsae.sae.train import (
    CHECKPOINT,
    RESUME,
    TrainState,
    _partial_dir,
    _restore,
    _save_checkpoint,
    check_same_run,
    open_interrupted,
    train_sae,
    train_step,
)

TRAINING = "training.json"
FINISHED = frozenset({CFG, WEIGHTS, TRAINING})
"""The files of a finished crosscoder directory."""
FREE_ON_RESUME = frozenset({"checkpoint_every"})
"""Settings a resume may change: they do not change the trained crosscoder."""

__all__ = [
    "CHECKPOINT",
    "CrosscoderMetrics",
    "CrosscoderRecord",
    "evaluate_crosscoder",
    "l1_loss",
    "l1_step",
    "train_crosscoder",
    "train_diff_sae",
]


@dataclass
class CrosscoderMetrics(Artifact):
    """A crosscoder's reconstruction and firing figures over a pair of stores."""

    FORMAT: ClassVar[str] = "rlsae.crosscoder_metrics"
    VERSION: ClassVar[int] = 1

    rows: int
    """Rows evaluated."""
    fvu_base: float
    """Fraction of the base model's variance left unexplained."""
    fvu_tuned: float
    """Fraction of the tuned model's variance left unexplained."""
    l0: float
    """Mean active latents per row."""
    dead: int
    """Latents that never fired over these rows."""


@dataclass
class CrosscoderRecord(Artifact):
    """``training.json``: how a crosscoder was trained, its history and final evaluation."""

    FORMAT: ClassVar[str] = "rlsae.crosscoder_training"
    VERSION: ClassVar[int] = 1

    config: CrosscoderConfig
    """The training settings."""
    crosscoder: CrosscoderSpec
    """The crosscoder's cfg.json."""
    lr: float
    """The base learning rate used."""
    aux_k: int
    """AuxK latents used (0: off)."""
    steps: int
    """Optimiser steps."""
    rows_seen: int
    """Training rows."""
    base_store: str
    """The base model's store (as given)."""
    tuned_store: str
    """The tuned model's store (as given)."""
    store: StoreIdentity
    """The pair's identity (both stores' fingerprints)."""
    history: list[dict[str, Any]]
    """Every ``log_every`` steps: step, rows, lr, loss, fvu, l0, dead and the loss terms."""
    final: CrosscoderMetrics
    """The evaluation over both whole stores at the end."""


def train_crosscoder(
    base: ActivationStore | str | os.PathLike,
    tuned: ActivationStore | str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: CrosscoderConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> Crosscoder:
    """Train a crosscoder on aligned stores ``base`` and ``tuned`` and write it to ``out_dir``.

    ``resume`` continues an interrupted run (or loads a finished one); a ``cfg`` or stores other
    than the run's are refused in one line naming the difference. ``on_step(step, stats)`` is
    called after every step (tests use it to interrupt a run)."""
    if cfg is not None:
        cfg.validate()
    pair = PairedStore(base, tuned, "concat")  # refuses misaligned stores
    out = Path(out_dir)
    work = _partial_dir(out)
    if out.exists():
        if resume and (out / CFG).is_file() and (out / TRAINING).is_file():
            record = CrosscoderRecord.read(out / TRAINING)
            _check_same_run(out, record.config, cfg, record.store, pair)
            return load_crosscoder(out)
        if not overwrite:
            raise RlsaeError(f"{out} already exists; choose another --out or remove it")
    saved_cfg, ckpt = open_interrupted(
        work, resume, CrosscoderConfig, lambda w, c, s: _check_same_run(w, c, cfg, s, pair)
    )
    cfg = cfg or saved_cfg or CrosscoderConfig()
    d_sae = cfg.resolve_d_sae(pair.d_model)
    tcfg = replace(cfg.train_config(), d_sae=d_sae)
    sae_cfg, base_lr = tcfg.resolve(pair.d_in)
    per_epoch = pair.batches_per_epoch(cfg.batch_size, drop_last=pair.rows >= cfg.batch_size)
    total = int(cfg.steps) if cfg.steps is not None else max(1, math.ceil(cfg.epochs * per_epoch))
    aux_k = (pair.d_model if cfg.aux_k is None else int(cfg.aux_k)) if cfg.arch != "l1" else 0
    torch.manual_seed(cfg.seed)
    sae = SAE(sae_cfg, seed=cfg.seed)
    state = TrainState.new(sae, tcfg, total, base_lr, aux_k)
    if ckpt is not None:
        _restore(state, ckpt, work)
    else:
        _start(work, state, cfg, pair)
    spec = CrosscoderSpec(
        d_in=pair.d_model,
        d_sae=d_sae,
        sparsity=cfg.arch,
        k=cfg.k,
        hook_name=pair.base.hook,
        sources=[pair.base.source, pair.tuned.source],
    )
    try:
        _loop(state, pair, work, l1_step if cfg.arch == "l1" else train_step, progress, on_step)
        return _finish(state, cfg, spec, pair, work, out)
    except RlsaeError:
        if ckpt is None:
            shutil.rmtree(work, ignore_errors=True)
        raise


def _check_same_run(
    where: Path,
    saved_cfg: CrosscoderConfig,
    cfg: CrosscoderConfig | None,
    saved_store: StoreIdentity,
    pair: PairedStore,
) -> None:
    """``check_same_run`` for a crosscoder on its stores (``FREE_ON_RESUME`` aside)."""
    check_same_run(
        where,
        (saved_cfg, saved_store),
        cfg,
        (pair.identity(), str(pair.path)),
        FREE_ON_RESUME,
        other="other stores than {path}; use those stores",
    )


def _start(work: Path, state: TrainState, cfg: CrosscoderConfig, pair: PairedStore) -> None:
    """Create the work directory: settings and the pair's identity, b_dec, the step-0
    checkpoint (as the SAE trainer's ``_start``, with the crosscoder's settings)."""
    work.mkdir(parents=True)
    try:
        atomic_write_json(
            work / RESUME, {"config": to_mapping(cfg), "store": to_mapping(pair.identity())}
        )
        if cfg.init_b_dec == "mean":
            with torch.no_grad():
                state.sae.b_dec.copy_(pair.mean(max_rows=65536))
        _save_checkpoint(work, state)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _loop(
    state: TrainState,
    pair: PairedStore,
    work: Path,
    step_fn: Callable[[TrainState, torch.Tensor], dict[str, float]],
    progress: bool,
    on_step: Callable[[int, dict[str, float]], None] | None,
) -> None:
    """Steps from ``state.step`` to ``state.total`` over the pair's shuffled batches (the SAE
    trainer's loop with the crosscoder's step); history and checkpoints as there."""
    cfg, total = state.cfg, state.total
    drop_last = pair.rows >= cfg.batch_size
    per_epoch = pair.batches_per_epoch(cfg.batch_size, drop_last=drop_last)
    batches = pair.iter_batches(
        cfg.batch_size,
        shuffle=cfg.shuffle,
        seed=cfg.seed,
        epochs=math.ceil(total / per_epoch),
        drop_last=drop_last,
        start_batch=state.step,
    )
    from tqdm import tqdm

    with tqdm(
        total=total, initial=state.step, desc="train crosscoder", disable=not progress
    ) as bar:
        for x in batches:
            if state.step >= total:
                break
            stats = step_fn(state, x)
            step = state.step
            if step % cfg.log_every == 0 or step == total:
                rows = step * min(cfg.batch_size, pair.rows)
                state.history.append({"step": step, "rows": rows, **stats})
            if step % cfg.checkpoint_every == 0 or step == total:
                _save_checkpoint(work, state)
            bar.update(1)
            if on_step is not None:
                on_step(step, stats)


def l1_loss(
    sae: SAE, x: torch.Tensor, l1c: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The L1 crosscoder's loss on concatenated batch ``x`` for the concatenated-layout ``sae``:
    (loss, f, err, sparsity) with loss = mean over rows of |err|^2 (both models' dimensions) +
    l1c * sparsity, sparsity = mean over rows of sum_j f_j (||d_j base|| + ||d_j tuned||)."""
    f = torch.relu(sae.pre_acts(x))
    err = f @ sae.W_dec + sae.b_dec - x
    n, d = sae.W_dec.shape[0], x.shape[1] // 2
    norms = sae.W_dec.reshape(n, 2, d).norm(dim=2).sum(1)
    sparsity = (f * norms).sum(-1).mean()
    return err.pow(2).sum(-1).mean() + l1c * sparsity, f, err, sparsity


def l1_step(state: TrainState, x: torch.Tensor) -> dict[str, float]:
    """One optimiser step of the L1 crosscoder on concatenated batch ``x`` (rows, 2d): loss =
    mean over rows of the squared error summed over both models' dimensions + l1 * mean over
    rows of sum_j f_j (||d_j base|| + ||d_j tuned||), the coefficient warmed up linearly. As
    ``train_step`` otherwise (schedule, clipping, dead-latent counters), without the decoder
    norm constraint (the penalty bounds the norms)."""
    sae, cfg, opt = state.sae, state.cfg, state.opt
    lr = state.base_lr * lr_factor(state.step, state.total, cfg.warmup_frac, cfg.decay_frac)
    for group in opt.param_groups:
        group["lr"] = lr
    warm = int(cfg.l1_warmup_frac * state.total)
    l1c = cfg.l1 * min(1.0, (state.step + 1) / warm) if warm else cfg.l1
    loss, f, err, sparsity = l1_loss(sae, x, l1c)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(list(sae.parameters()), cfg.grad_clip)
    opt.step()
    fired = (f > 0).any(0)
    state.since_fired += x.shape[0]
    state.since_fired.masked_fill_(fired, 0)
    total_var = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
    out = {
        "lr": lr,
        "loss": float(loss.detach()),
        "fvu": float(err.detach().pow(2).sum() / total_var),
        "l0": float((f > 0).sum()) / x.shape[0],
        "dead": int((state.since_fired >= cfg.dead_rows).sum()),
        "l1_loss": float(sparsity.detach()),
        "l1_coeff": l1c,
    }
    if not math.isfinite(out["loss"]):
        raise RlsaeError(
            f"training diverged at step {state.step} (loss is {out['loss']}); lower --lr"
        )
    state.step += 1
    return out


def _finish(
    state: TrainState,
    cfg: CrosscoderConfig,
    spec: CrosscoderSpec,
    pair: PairedStore,
    work: Path,
    out: Path,
) -> Crosscoder:
    """Convert, evaluate, write the crosscoder files next to the checkpoints, and rename only
    those into place."""
    sd = {k: v.detach() for k, v in state.sae.state_dict().items()}
    sd["W_enc"] = state.sae.W_enc.detach()
    cc = Crosscoder.from_concat(spec, sd)
    cc.save(work)
    record = CrosscoderRecord(
        config=cfg,
        crosscoder=spec,
        lr=state.base_lr,
        aux_k=state.aux_k,
        steps=state.total,
        rows_seen=state.total * min(cfg.batch_size, pair.rows),
        base_store=str(pair.base.path),
        tuned_store=str(pair.tuned.path),
        store=pair.identity(),
        history=state.history,
        final=evaluate_crosscoder(cc, pair),
    )
    record.write(work / TRAINING)
    for p in work.iterdir():
        if p.name not in FINISHED:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    if out.exists():  # overwrite=True
        shutil.rmtree(out)
    os.replace(work, out)
    return cc


@torch.no_grad()
def evaluate_crosscoder(
    cc: Crosscoder, pair: PairedStore, batch_size: int = 4096, max_rows: int | None = None
) -> CrosscoderMetrics:
    """Per-model FVU (pooled over rows, variance about each dimension's mean), L0 and the
    latents that never fired, in one sequential pass."""
    d = pair.d_model
    sse = torch.zeros(2, dtype=torch.float64)
    s1 = torch.zeros(2, d, dtype=torch.float64)
    s2 = torch.zeros(2, d, dtype=torch.float64)
    fired = torch.zeros(cc.d_sae, dtype=torch.bool)
    active, rows = 0.0, 0
    limit = max_rows if max_rows is not None else pair.rows
    for x in pair.iter_sequential(batch_size):
        x = x[: limit - rows]
        if not x.shape[0]:
            break
        xb, xt = pair.split(x)
        f = cc.encode(xb, xt)
        for m, (xm, rm) in enumerate(zip((xb, xt), cc.decode(f), strict=True)):
            sse[m] += (rm - xm).double().pow(2).sum()
            s1[m] += xm.double().sum(0)
            s2[m] += xm.double().pow(2).sum(0)
        nz = f > 0
        fired |= nz.any(0)
        active += float(nz.sum())
        rows += x.shape[0]
    var = (s2 - s1.pow(2) / max(rows, 1)).sum(1).clamp_min(1e-12)
    fvu = (sse / var).tolist()
    return CrosscoderMetrics(
        rows=rows,
        fvu_base=fvu[0],
        fvu_tuned=fvu[1],
        l0=active / max(rows, 1),
        dead=int((~fired).sum()),
    )


def train_diff_sae(
    base: ActivationStore | str | os.PathLike,
    tuned: ActivationStore | str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: TrainConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> SAE:
    """The diff-SAE: an SAE trained by ``train_sae`` on ``tuned - base`` row by row (a
    ``PairedStore`` in ``diff`` mode, computed on the fly; nothing is written but the SAE), a
    second lens on what the tuning changed. Its cfg.json's source is ``TUNED minus BASE``."""
    pair = PairedStore(base, tuned, "diff")  # refuses misaligned stores
    return train_sae(pair, out_dir, cfg, resume=resume, progress=progress, on_step=on_step)
