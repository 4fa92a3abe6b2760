"""The SAE core's two configs: ``SAEConfig`` (what an SAE is) and ``TrainConfig`` (how one is
trained). Plain dataclasses whose field docstrings are the documentation (and the ``sae train``
help texts); each validates its own fields in ``validate(where)``. Importing this module is
cheap (no torch), so the CLI can build and check a config before any heavy import.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from rlsae.configs import check_range, describe, field_default
from rlsae.errors import RlsaeError

DTYPES = ("float32", "float16", "bfloat16", "float64")
"""Parameter dtypes an SAE may have (names of torch dtypes)."""
SAE_ARCHS = ("topk", "relu", "batchtopk", "jumprelu", "matryoshka")
"""Kinds of SAE (``SAEConfig.arch``)."""
TRAIN_ARCHS = ("topk", "relu", "batchtopk", "jumprelu", "matryoshka")
"""Kinds ``train_sae`` trains (``TrainConfig.arch``)."""


@dataclass
class SAEConfig:
    """Shape and kind of a sparse autoencoder. Saved (with SAELens's own keys) in cfg.json."""

    d_in: int
    """Width of the activations it reads."""
    d_sae: int
    """Number of latents (dictionary size)."""
    arch: Literal["topk", "relu", "batchtopk", "jumprelu", "matryoshka"] = "topk"
    """``topk``: keep the k largest pre-activations (then ReLU). ``relu``: ReLU, trained with L1.
    ``jumprelu``: ReLU of the pre-activations above a per-latent ``threshold``. ``batchtopk``:
    trained keeping the k x rows largest over the batch; at inference a JumpReLU with the global
    threshold estimated during training (saved as SAELens saves it: ``jumprelu``).
    ``matryoshka``: a BatchTopK SAE trained with nested prefixes (``matryoshka_groups``)."""
    k: int | float = 32
    """Active latents per row for ``topk`` (an integer), on average over a batch for
    ``batchtopk`` and ``matryoshka`` (may be fractional: int(k x rows) kept, as SAELens)."""
    matryoshka_groups: list[int] | None = None
    """``matryoshka``: sizes of the nested groups of latents, in order (they add up to d_sae);
    prefix i is the first i groups."""
    tied: bool = False
    """Encoder is the decoder's transpose (one weight matrix)."""
    hook_name: str = ""
    """Where the activations came from (e.g. ``blocks.3.hook_resid_post`` or an agent layer)."""
    source: str = ""
    """Which model produced them (agent name, ``base``/``tuned``, a model path)."""
    dtype: str = "float32"
    """Parameter dtype."""
    apply_b_dec_to_input: bool = True
    """Subtract b_dec before encoding (SAELens's default; some SAELens SAEs turn it off)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, where: str = "") -> None:
        """Raise RlsaeError for impossible settings (prefixed with ``where`` when given)."""
        pre = f"{where}: " if where else ""
        if self.arch not in SAE_ARCHS:
            raise RlsaeError(f"{pre}arch must be one of {', '.join(SAE_ARCHS)}, not {self.arch!r}")
        if not _is_int(self.d_in) or not _is_int(self.d_sae) or self.d_in < 1 or self.d_sae < 1:
            raise RlsaeError(
                f"{pre}d_in and d_sae must be positive (got {self.d_in}, {self.d_sae})"
            )
        if self.arch == "topk" and not (_is_int(self.k) and 1 <= self.k <= self.d_sae):
            raise RlsaeError(f"{pre}k must be between 1 and d_sae={self.d_sae}, got k={self.k}")
        if self.arch in ("batchtopk", "matryoshka") and not (
            _is_number(self.k) and 0 < self.k <= self.d_sae
        ):
            raise RlsaeError(
                f"{pre}k must be above 0 and at most d_sae={self.d_sae}, got k={self.k}"
            )
        if self.arch == "matryoshka":
            check_groups(where or "SAEConfig", self.matryoshka_groups, self.d_sae)
        elif self.matryoshka_groups is not None:
            raise RlsaeError(f"{pre}matryoshka_groups: a matryoshka setting, given to {self.arch}")
        if self.dtype not in DTYPES:
            raise RlsaeError(f"{pre}dtype must be one of {sorted(DTYPES)}, not {self.dtype!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainConfig:
    """Everything that decides an SAE training run. Saved in training.json beside the SAE."""

    arch: Literal["topk", "relu", "batchtopk", "jumprelu", "matryoshka"] = "topk"
    """``topk`` (TopK + AuxK), ``matryoshka`` (Matryoshka BatchTopK: the sum of the nested
    prefixes' reconstruction losses), ``batchtopk`` (BatchTopK + AuxK, saved for inference as a
    JumpReLU with the threshold estimated in training), ``jumprelu`` (per-latent thresholds
    trained by straight-through estimators, L0 penalty) or ``relu`` (ReLU with an L1 penalty)."""
    d_sae: int | None = None
    """Number of latents; None means ``expansion * d_in``."""
    expansion: float = 4.0
    """Latents per input dimension when ``d_sae`` is not given."""
    k: int | float = 32
    """TopK: active latents per row (an integer); BatchTopK and Matryoshka: per row on average,
    fractional allowed (int(k x rows) kept per batch, as SAELens's float k)."""
    matryoshka_groups: list[int] | None = None
    """Matryoshka: sizes of the nested groups of latents, in order, adding up to d_sae (prefix
    i = the first i groups); None means d_sae/16, d_sae/16, d_sae/8, d_sae/4 and the rest."""
    matryoshka_aux: bool = False
    """Matryoshka: AuxK per level (SAELens's ``use_matryoshka_aux_loss``): each group's dead
    latents reconstruct the residual of the prefix that ends with their group, instead of the
    whole SAE's residual; the levels' terms (each weighed down when the group has fewer dead
    latents than ``aux_k``) are added."""
    topk_threshold_lr: float = 0.01
    """BatchTopK and Matryoshka: rate of the moving average of the smallest kept activation that gives the
    inference threshold (SAELens's ``topk_threshold_lr``)."""
    l1: float = 1e-3
    """ReLU: coefficient of the penalty sum_i f_i * ||W_dec[i]|| (mean over rows)."""
    l1_warmup_frac: float = 0.05
    """ReLU: fraction of the steps over which the L1 coefficient rises linearly from 0."""
    l0: float = 1.0
    """JumpReLU: coefficient of the L0 penalty (mean over rows of the latents above threshold,
    or of the tanh surrogate with ``sparsity_loss=tanh``)."""
    l0_warmup_frac: float = 0.0
    """JumpReLU: fraction of the steps over which the L0 coefficient rises linearly from 0."""
    bandwidth: float = 0.05
    """JumpReLU: width of the rectangle kernel of the straight-through estimators."""
    init_threshold: float = 0.01
    """JumpReLU: every latent's threshold at the start."""
    sparsity_loss: Literal["step", "tanh"] = "step"
    """JumpReLU: ``step`` (the paper's L0 through the step's straight-through estimator) or
    ``tanh`` (sum_i tanh(tanh_scale * f_i * ||W_dec[i]||), Anthropic's variant)."""
    tanh_scale: float = 4.0
    """JumpReLU with ``sparsity_loss=tanh``: scale inside the tanh."""
    decoder_init_norm: float | None = 0.1
    """JumpReLU: decoder rows start at this norm (the encoder at the decoder's transpose) and
    are left free in training, as SAELens initialises and trains JumpReLU (its
    ``decoder_init_norm``); None: unit-norm rows kept at unit norm, as TopK."""
    pre_act_loss: float | None = None
    """JumpReLU: coefficient of Anthropic's pre-activation loss (SAELens's
    ``pre_act_loss_coefficient``; 3e-6 is Anthropic's): mean over rows of
    sum_i relu(threshold_i - pre_i) * ||W_dec[i]|| over the dead latents; None turns it off."""
    tied: bool = False
    """Tie the encoder to the decoder's transpose."""
    aux_k: int | None = None
    """TopK and BatchTopK: latents used by the AuxK loss; None means d_in // 2, 0 turns AuxK off."""
    aux_coeff: float = 1 / 32
    """TopK and BatchTopK: weight of the AuxK loss."""
    dead_rows: int = 1_000_000
    """A latent is dead once it has not fired for this many training rows (AuxK, logs)."""
    steps: int | None = None
    """Optimiser steps; None means ``epochs`` passes over the store."""
    epochs: float = 1.0
    """Passes over the store when ``steps`` is not given."""
    batch_size: int = 4096
    """Rows per step."""
    lr: float | None = None
    """Adam learning rate; None means 1e-3 for relu, else 2e-4 / sqrt(d_sae / 16384)."""
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
    shuffle: bool = True
    """Read the store's rows shuffled; False reads them in the order they were written (for an
    agent's recording: play order, as the poster trained its SAEs, one pass with epochs 1)."""
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

    def validate(self, where: str = "TrainConfig") -> None:
        """Refuse an impossible setting in one line ``WHERE: field: what is wrong``: the one
        check used by ``sae train``, the studies and ``train_sae`` alike, before any work."""
        if self.arch not in TRAIN_ARCHS:
            raise RlsaeError(
                f"{where}: arch: expected one of {', '.join(TRAIN_ARCHS)}, got {describe(self.arch)}"
            )
        if self.init_b_dec not in ("mean", "zeros"):
            raise RlsaeError(
                f"{where}: init_b_dec: expected mean or zeros, got {describe(self.init_b_dec)}"
            )
        for name in ("tied", "final_eval", "shuffle", "matryoshka_aux"):
            if not isinstance(getattr(self, name), bool):
                raise RlsaeError(f"{where}: {name}: expected true or false")
        for name in ("hook_name", "source"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise RlsaeError(f"{where}: {name}: expected a string, got {describe(value)}")
        _int(where, "d_sae", self.d_sae, 1, optional=True)
        if self.arch in ("batchtopk", "matryoshka"):
            check_range(where, "k", self.k, 0, MAX_D_SAE, lo_open=True)
        else:
            _int(where, "k", self.k, 1)
        _int(where, "aux_k", self.aux_k, 0, optional=True)
        _int(where, "dead_rows", self.dead_rows, 1)
        _int(where, "steps", self.steps, 1, optional=True)
        _int(where, "batch_size", self.batch_size, 1)
        _int(where, "seed", self.seed, 0, 2**32 - 1)
        _int(where, "checkpoint_every", self.checkpoint_every, 1)
        _int(where, "log_every", self.log_every, 1)
        check_range(where, "expansion", self.expansion, 0, lo_open=True)
        check_range(where, "l1", self.l1, 0)
        check_range(where, "topk_threshold_lr", self.topk_threshold_lr, 0, 1, lo_open=True)
        check_range(where, "aux_coeff", self.aux_coeff, 0)
        check_range(where, "epochs", self.epochs, 0, lo_open=True)
        if self.lr is not None:
            check_range(where, "lr", self.lr, 0, lo_open=True)
        # Upper ends: beyond them a run overflows (d_sae from expansion) or never ends.
        for name, hi in (("d_sae", MAX_D_SAE), ("expansion", MAX_D_SAE), ("epochs", MAX_EPOCHS),
                         ("lr", 1.0)):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value > hi:
                check_range(where, name, value, hi=hi)
        for name in ("l1_warmup_frac", "warmup_frac", "decay_frac"):
            check_range(where, name, getattr(self, name), 0, 1)
        check_range(where, "grad_clip", self.grad_clip, 0)
        if not isinstance(self.betas, tuple | list) or len(self.betas) != 2:
            raise RlsaeError(f"{where}: betas: expected two numbers, got {describe(self.betas)}")
        for i, beta in enumerate(self.betas):
            check_range(where, f"betas[{i}]", beta, 0, 1)
            if beta >= 1:
                raise RlsaeError(f"{where}: betas[{i}]: must be below 1, got {beta!r}")
        if self.sparsity_loss not in ("step", "tanh"):
            raise RlsaeError(
                f"{where}: sparsity_loss: expected step or tanh, got {describe(self.sparsity_loss)}"
            )
        check_range(where, "l0", self.l0, 0)
        check_range(where, "l0_warmup_frac", self.l0_warmup_frac, 0, 1)
        check_range(where, "bandwidth", self.bandwidth, 0, lo_open=True)
        check_range(where, "init_threshold", self.init_threshold, 0)
        check_range(where, "tanh_scale", self.tanh_scale, 0, lo_open=True)
        if self.decoder_init_norm is not None:
            check_range(where, "decoder_init_norm", self.decoder_init_norm, 0, 1e6, lo_open=True)
        if self.pre_act_loss is not None:
            check_range(where, "pre_act_loss", self.pre_act_loss, 0, 1e6, lo_open=True)
        for name, kinds in KIND_OPTIONS.items():
            if self.arch not in kinds and getattr(self, name) != field_default(TrainConfig, name):
                raise RlsaeError(
                    f"{where}: {name}: a {' or '.join(kinds)} setting, given to arch {self.arch}"
                )
        if self.matryoshka_groups is not None and self.d_sae is not None:
            check_groups(where, self.matryoshka_groups, self.d_sae)
        if self.d_sae is not None and self.arch not in ("relu", "jumprelu") and self.k > self.d_sae:
            raise RlsaeError(f"{where}: k must be between 1 and d_sae={self.d_sae}, got k={self.k}")

    def resolve(self, d_in: int, where: str = "TrainConfig") -> tuple[SAEConfig, float]:
        """The SAE's config and the learning rate for activations of width ``d_in`` (validates
        first; k above the resolved d_sae, or groups not adding up to it, are refused here)."""
        self.validate(where)
        if self.d_sae is None and self.expansion * d_in > MAX_D_SAE:
            raise RlsaeError(
                f"{where}: expansion: {self.expansion:g} x d_in {d_in} is above the largest "
                f"d_sae, {MAX_D_SAE}"
            )
        d_sae = int(self.d_sae) if self.d_sae is not None else int(round(self.expansion * d_in))
        groups = None
        if self.arch == "matryoshka":
            groups = list(self.matryoshka_groups or default_groups(d_sae))
            check_groups(where, groups, d_sae)
        cfg = SAEConfig(
            d_in=d_in,
            d_sae=d_sae,
            arch=self.arch,
            k=self.k,
            tied=self.tied,
            matryoshka_groups=groups,
        )
        if self.lr is not None:
            return cfg, float(self.lr)
        return cfg, (2e-4 / math.sqrt(d_sae / 16384) if self.arch != "relu" else 1e-3)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "topk_threshold_lr": ("batchtopk", "matryoshka"),
    "matryoshka_groups": ("matryoshka",),
    "matryoshka_aux": ("matryoshka",),
    "l0": ("jumprelu",),
    "l0_warmup_frac": ("jumprelu",),
    "bandwidth": ("jumprelu",),
    "init_threshold": ("jumprelu",),
    "sparsity_loss": ("jumprelu",),
    "tanh_scale": ("jumprelu",),
    "decoder_init_norm": ("jumprelu",),
    "pre_act_loss": ("jumprelu",),
}
"""TrainConfig fields that only one kind reads: a value other than the default given to another
kind is refused (it would be silently ignored)."""


def default_groups(d_sae: int) -> list[int]:
    """Matryoshka's default groups: d_sae/16, d_sae/16, d_sae/8, d_sae/4 and the rest (prefixes
    of 1/16, 1/8, 1/4, 1/2 and all of the latents); one group when d_sae < 16."""
    w = d_sae // 16
    return [w, w, 2 * w, 4 * w, d_sae - 8 * w] if w else [d_sae]


def check_groups(where: str, groups: Any, d_sae: int) -> None:
    """RlsaeError unless ``groups`` is a non-empty list of positive integers adding up to d_sae."""
    if not isinstance(groups, list | tuple) or not groups:
        raise RlsaeError(f"{where}: matryoshka_groups: expected a list of group sizes")
    if not all(_is_int(g) and g >= 1 for g in groups):
        raise RlsaeError(
            f"{where}: matryoshka_groups: sizes must be positive integers, got {list(groups)}"
        )
    if sum(groups) != d_sae:
        raise RlsaeError(
            f"{where}: matryoshka_groups: {list(groups)} add up to {sum(groups)}, not d_sae={d_sae}"
        )


def check_eval_args(batch_size: Any, max_rows: Any = None, where: str = "") -> None:
    """RlsaeError unless ``batch_size`` is an integer >= 1 and ``max_rows`` is None or >= 1
    (``evaluate_sae``'s arguments; here, without torch, so a command refuses them at once)."""
    pre = f"{where}: " if where else ""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise RlsaeError(f"{pre}batch size must be a positive integer, got {batch_size!r}")
    if max_rows is not None and (
        isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1
    ):
        raise RlsaeError(f"{pre}max rows must be a positive integer, got {max_rows!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


MAX_D_SAE = 2**26
"""The most latents an SAE may have (64 Mi; the largest published SAEs have 16 Mi)."""
MAX_EPOCHS = 1e6
"""The most passes over a store one run may ask for."""


def _int(
    where: str, name: str, value: Any, lo: int, hi: int | None = None, *, optional: bool = False
) -> None:
    """An integer field in [lo, hi] (None allowed with ``optional``)."""
    if value is None and optional:
        return
    if not _is_int(value):
        raise RlsaeError(f"{where}: {name}: expected an integer, got {describe(value)}")
    check_range(where, name, value, lo, hi)
