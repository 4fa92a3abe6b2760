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
latents (in ``rlsae.sae.step._jumprelu_terms``). Matryoshka BatchTopK (Bussmann et al. 2025):
BatchTopK whose loss adds, for each inner prefix
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
from typing import Any, ClassVar, TypeVar

import torch

from rlsae.artifacts import Artifact
from rlsae.configs import differing_keys, from_mapping, to_mapping
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_bytes, atomic_write_json, read_json
from rlsae.sae.config import SAEConfig, TrainConfig
from rlsae.sae.io import CFG
from rlsae.sae.metrics import SAEMetrics, evaluate_sae
from rlsae.sae.model import SAE, load_sae
from rlsae.sae.optim import Adam, lr_factor, make_optimizer
from rlsae.sae.step import TrainState, train_step
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
    saved_cfg, ckpt = open_interrupted(
        work, resume, TrainConfig, lambda w, c, s: _check_same_run(w, c, cfg, s, st)
    )
    cfg = cfg or saved_cfg or TrainConfig()
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


C = TypeVar("C")


def open_interrupted(
    work: Path,
    resume: bool,
    cfg_type: type[C],
    check: Callable[[Path, Any, StoreIdentity], None],
) -> tuple[C | None, dict[str, Any] | None]:
    """(saved settings, checkpoint) of an interrupted run at ``work`` (``_open_partial``), its
    saved settings and store passed through ``check(work, saved_cfg, saved_store)`` (which
    refuses another run in one line); (None, None) where there is nothing to resume. The SAE and
    crosscoder trainers share it."""
    ckpt = _open_partial(work, resume)
    if ckpt is None:
        return None, None
    saved = read_json(work / RESUME)
    saved_cfg = from_mapping(cfg_type, saved["config"], str(work / RESUME))
    saved_store = from_mapping(StoreIdentity, saved["store"], str(work / RESUME))
    check(work, saved_cfg, saved_store)
    return saved_cfg, ckpt


def check_same_run(
    where: Path,
    saved: tuple[Any, StoreIdentity],
    cfg: Any | None,
    store: tuple[StoreIdentity, str],
    free: frozenset[str],
    other: str = "another activation store than {path}; use that store",
) -> None:
    """Refuse, in one line naming the difference, to continue ``where`` (trained with settings
    and store ``saved``) with settings ``cfg`` (``free`` aside; None: the run's own) or on a store
    ``store = (identity, path)`` other than its own (``other`` words it)."""
    saved_cfg, saved_store = saved
    if cfg is not None:
        a, b = to_mapping(saved_cfg), to_mapping(cfg)
        diff = [k for k in differing_keys(a, b) if k not in free]
        if diff:
            changes = ", ".join(f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in diff)
            raise RlsaeError(
                f"cannot resume {where}: it was trained with other settings ({changes}); "
                "use the same settings, or another --out"
            )
    diff = saved_store.differences(store[0])
    if diff:
        what, use = other.format(path=store[1]).split("; ")
        raise RlsaeError(
            f"cannot resume {where}: it was trained on {what} ({'; '.join(diff)}); "
            f"{use}, or another --out"
        )


def _check_same_run(
    where: Path,
    saved_cfg: TrainConfig,
    cfg: TrainConfig | None,
    saved_store: StoreIdentity,
    store: ActivationStore,
) -> None:
    """``check_same_run`` for an SAE on an activation store (``FREE_ON_RESUME`` aside)."""
    check_same_run(
        where, (saved_cfg, saved_store), cfg, (store.identity(), str(store.path)), FREE_ON_RESUME
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
