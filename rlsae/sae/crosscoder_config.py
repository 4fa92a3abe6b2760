"""Configs of model diffing: ``CrosscoderConfig`` (how a crosscoder is trained) and
``LatentConfig`` (how its latents are classified). Plain dataclasses whose field docstrings are
the documentation and the ``rlsae diff`` help texts; each checks its own fields in
``validate(where)``. Importing this module is cheap (no torch).

A crosscoder is trained by the SAE trainer's machinery (``rlsae.sae.train``): its settings map
onto a ``TrainConfig`` (``CrosscoderConfig.train_config``), which does the numeric checks, so a
crosscoder and an SAE refuse the same bad values with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlsae.configs import check_range, describe
from rlsae.errors import RlsaeError
from rlsae.sae.config import MAX_D_SAE, TrainConfig

CROSSCODER_ARCHS = ("batchtopk", "l1")
"""Sparsity of a crosscoder (``CrosscoderConfig.arch``)."""


@dataclass
class CrosscoderConfig:
    """Everything that decides a crosscoder training run. Saved in training.json beside it."""

    arch: Literal["batchtopk", "l1"] = "batchtopk"
    """``batchtopk``: the k x rows largest pre-activations over the batch are kept (Bussmann et
    al. 2024), AuxK for dead latents, each latent's two decoder directions together of unit norm
    (Minder et al. 2025's recommendation). ``l1``: ReLU with the penalty
    sum_j f_j (||d_j base|| + ||d_j tuned||) (Anthropic's crosscoder loss, for comparison)."""
    d_sae: int | None = None
    """Number of latents; None means ``expansion`` x the width of one model's activations."""
    expansion: float = 4.0
    """Latents per dimension of one model's activations when ``d_sae`` is not given."""
    k: int = 32
    """BatchTopK: active latents per row on average (k x rows kept per batch)."""
    topk_threshold_lr: float = 0.01
    """BatchTopK: rate of the moving average of the smallest kept activation that gives the
    inference threshold."""
    l1: float = 1e-3
    """L1: coefficient of the penalty sum_j f_j (||d_j base|| + ||d_j tuned||) (mean over rows)."""
    l1_warmup_frac: float = 0.05
    """L1: fraction of the steps over which the L1 coefficient rises linearly from 0."""
    aux_k: int | None = None
    """BatchTopK: latents used by the AuxK loss; None means the width of one model's
    activations, 0 turns AuxK off."""
    aux_coeff: float = 1 / 32
    """BatchTopK: weight of the AuxK loss."""
    dead_rows: int = 1_000_000
    """A latent is dead once it has not fired for this many training rows (AuxK, logs)."""
    steps: int | None = None
    """Optimiser steps; None means ``epochs`` passes over the stores."""
    epochs: float = 1.0
    """Passes over the stores when ``steps`` is not given."""
    batch_size: int = 4096
    """Rows per step (each row: one input seen by both models)."""
    lr: float | None = None
    """Adam learning rate; None means 1e-3 for l1, else 2e-4 / sqrt(d_sae / 16384)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    warmup_frac: float = 0.01
    """Fraction of the steps with a linear LR warm-up from 0."""
    decay_frac: float = 0.2
    """Fraction of the steps at the end with a linear LR decay to 0."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 turns clipping off)."""
    init_b_dec: Literal["mean", "zeros"] = "mean"
    """Initialise each model's decoder bias from its data mean or at zero."""
    seed: int = 0
    """Seeds the initial weights and the data order."""
    shuffle: bool = True
    """Read the stores' rows shuffled (the same order in both)."""
    checkpoint_every: int = 200
    """Steps between checkpoints (the last step is always checkpointed)."""
    log_every: int = 25
    """Steps between entries in the training history."""

    def validate(self, where: str = "CrosscoderConfig") -> None:
        """Refuse an impossible setting in one line ``WHERE: field: what is wrong``, before any
        work: the crosscoder's own fields here, the numbers through ``TrainConfig.validate``."""
        if self.arch not in CROSSCODER_ARCHS:
            raise RlsaeError(
                f"{where}: arch: expected one of {', '.join(CROSSCODER_ARCHS)}, "
                f"got {describe(self.arch)}"
            )
        self.train_config().validate(where)
        # an L1 crosscoder needs a penalty; above 1e6 it only learns dead latents
        check_range(where, "l1", self.l1, 0, 1e6, lo_open=True)

    def train_config(self) -> TrainConfig:
        """The SAE trainer's config of this crosscoder (on the concatenated activations):
        ``batchtopk`` as BatchTopK, ``l1`` as ReLU (its penalty is replaced by the sum of the
        two decoder norms in ``rlsae.sae.crosscoder_train``)."""
        return TrainConfig(
            arch="batchtopk" if self.arch == "batchtopk" else "relu",
            d_sae=self.d_sae,
            expansion=self.expansion,
            k=self.k,
            topk_threshold_lr=self.topk_threshold_lr,
            l1=self.l1,
            l1_warmup_frac=self.l1_warmup_frac,
            aux_k=self.aux_k,
            aux_coeff=self.aux_coeff,
            dead_rows=self.dead_rows,
            steps=self.steps,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            betas=self.betas,
            warmup_frac=self.warmup_frac,
            decay_frac=self.decay_frac,
            grad_clip=self.grad_clip,
            init_b_dec=self.init_b_dec,
            seed=self.seed,
            shuffle=self.shuffle,
            checkpoint_every=self.checkpoint_every,
            log_every=self.log_every,
            final_eval=False,
        )

    def resolve_d_sae(self, d_model: int, where: str = "CrosscoderConfig") -> int:
        """The number of latents for models of width ``d_model`` (validates first; k above it
        is refused here)."""
        self.validate(where)
        if self.d_sae is None and self.expansion * d_model > MAX_D_SAE:
            raise RlsaeError(
                f"{where}: expansion: {self.expansion:g} x d_in {d_model} is above the largest "
                f"d_sae, {MAX_D_SAE}"
            )
        d_sae = int(self.d_sae) if self.d_sae is not None else int(round(self.expansion * d_model))
        if self.arch == "batchtopk" and self.k > d_sae:
            raise RlsaeError(f"{where}: k must be between 1 and d_sae={d_sae}, got k={self.k}")
        return d_sae


@dataclass
class LatentConfig:
    """How ``rlsae diff latents`` classifies a crosscoder's latents (Minder et al. 2025)."""

    tuned_only_ratio: float = 0.9
    """A latent whose norm ratio (``rlsae.sae.latents``: 0 base only, 0.5 equal, 1 tuned only)
    is at least this is a tuned-only candidate."""
    base_only_ratio: float = 0.1
    """A latent whose norm ratio is at most this is a base-only candidate."""
    nu_error_max: float = 0.2
    """A candidate whose nu_error (how much of it the other model's reconstruction error holds,
    relative to its own model) is above this is an artefact (Complete Shrinkage)."""
    nu_reconstruction_max: float = 0.2
    """A candidate whose nu_reconstruction (how much of it the other model's reconstruction
    holds through other latents) is above this is an artefact (Latent Decoupling)."""
    batch_size: int = 4096
    """Rows per batch when reading the stores."""
    max_rows: int | None = None
    """Analyse only the first N rows (None: all)."""

    def validate(self, where: str = "LatentConfig") -> None:
        """Refuse an impossible setting in one line ``WHERE: field: what is wrong``."""
        check_range(where, "tuned_only_ratio", self.tuned_only_ratio, 0.5, 1, lo_open=True)
        check_range(where, "base_only_ratio", self.base_only_ratio, 0, 0.5, lo_open=True)
        if self.base_only_ratio >= 0.5:
            raise RlsaeError(f"{where}: base_only_ratio: must be below 0.5")
        # nu is a ratio of two fits: above 1e6 no latent could ever be an artefact
        check_range(where, "nu_error_max", self.nu_error_max, 0, 1e6, lo_open=True)
        check_range(
            where, "nu_reconstruction_max", self.nu_reconstruction_max, 0, 1e6, lo_open=True
        )
        for name in ("batch_size", "max_rows"):
            value = getattr(self, name)
            if value is None and name == "max_rows":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise RlsaeError(f"{where}: {name}: expected an integer, got {describe(value)}")
            check_range(where, name, value, 1)
