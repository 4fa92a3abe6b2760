"""Steering a language model along an SAE feature's decoder direction, scored by the reward.

``α · W_dec[F]`` -- what the SAE's reconstruction gains when feature ``F``'s activation rises by
``α`` (a unit vector for rlsae's SAEs, whose decoder rows have norm 1) -- is added to the
activation at the SAE's hook, at every position of the prefix and of the completion, while the
model samples completions of test prefixes (:func:`rlsae.llm.generate.sample_completions`, the
code RLHF and ``llm score`` use). The same prefixes are completed with the same seed without the
addition, both sets are scored with the study's reward (the utility table, the paper's equation
3, or a sentiment classifier), and the result is the mean reward of each with a paired bootstrap
interval of the change. ``α = 0`` adds an exact zero: every completion is the unsteered one.

Ablation (``ablate``) asks the other question, what the model does without the feature: at the
hook, ``encode(x)[F] · W_dec[F]`` (the feature's part of the SAE's reconstruction) is subtracted
from the activation, and everything else, the SAE's error included, is kept; where the feature
does not fire nothing changes.

The addition is made on the Hugging Face model by a forward hook on the module behind the
TransformerLens hook point (the SAE's ``hook_name``): ``hook_resid_post`` of block ``L`` is the
output of layer ``L``, ``hook_resid_pre`` its input, ``hook_mlp_out`` the output of its MLP and
``hook_attn_out`` that of its attention (checked against TransformerLens's ``run_with_hooks`` by
the tests). Other hooks are refused in one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from rlsae.analysis.bootstrap import bootstrap_ci
from rlsae.artifacts import Artifact
from rlsae.configs import from_mapping, to_mapping
from rlsae.errors import RlsaeError
from rlsae.llm.causal_configs import LMSteerConfig
from rlsae.llm.data import check_fits_context, load_texts, make_prefixes
from rlsae.llm.generate import decode_rollout, sample_completions
from rlsae.llm.models import load_model
from rlsae.llm.rewards import (
    ClassifierReward,
    ClassifierRewardConfig,
    RewardFn,
    UtilityReward,
    UtilityRewardConfig,
    UtilityTable,
)
from rlsae.sae.metrics import FEATURE_STATS, FeatureStats
from rlsae.sae.model import SAE, load_sae

__all__ = [
    "LMSteerConfig",
    "LMSteerResult",
    "SteeredCompletion",
    "check_feature",
    "steer_model",
    "steering",
]

STEERABLE = ("resid_post", "resid_pre", "mlp_out", "attn_out")
"""Hook points whose module in the Hugging Face model is known."""
_HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_(\w+)$")


@dataclass
class SteeredCompletion:
    """One prefix completed without and with steering."""

    prefix: str
    """The prefix text."""
    unsteered: str
    """Its completion by the unchanged model."""
    steered: str
    """Its completion with the feature direction added (same seed)."""
    reward_unsteered: float
    """Reward of prefix + unsteered completion."""
    reward_steered: float
    """Reward of prefix + steered completion."""


@dataclass
class LMSteerResult(Artifact):
    """Steering one feature of an SAE on a language model (``llm steer --json``)."""

    FORMAT: ClassVar[str] = "rlsae.lm_steer"
    VERSION: ClassVar[int] = 1

    feature: int
    """The steered feature."""
    alpha: float
    """Multiple of its decoder row added at the hook."""
    ablate: bool
    """The feature was removed (its part of the reconstruction subtracted) instead."""
    hook: str
    """The TransformerLens hook point steered."""
    n: int
    """Prefixes completed (each both ways)."""
    mean_reward_unsteered: float
    """Mean reward of the unsteered completions."""
    mean_reward_steered: float
    """Mean reward of the steered completions."""
    delta: float
    """mean_reward_steered - mean_reward_unsteered."""
    ci95: list[float]
    """95% paired bootstrap interval of delta."""
    utility_unsteered: float
    """Σ over the unsteered completions (alone) of the utility table's Σ U(word)."""
    utility_steered: float
    """The same for the steered completions."""
    changed: int
    """Completions that differ from the unsteered one."""
    decoder_norm: float
    """‖W_dec[F]‖ (the norm of the added vector is |alpha| times it)."""
    reward: str = "utility"
    """The reward: 'utility' (table) or 'sentiment' (classifier)."""
    model: str = ""
    """The model (hub name or directory)."""
    sae: str = ""
    """The SAE directory."""
    config: LMSteerConfig = field(default_factory=LMSteerConfig)
    """The sampling and scoring settings."""
    seconds: float = 0.0
    """Wall time."""
    completions: list[SteeredCompletion] = field(default_factory=list)
    """Every prefix with both completions and rewards."""

    def summary(self, show: int = 3) -> str:
        """The readable lines ``llm steer`` prints (the first ``show`` completions)."""
        lines = [
            f"feature {self.feature} at {self.hook}, "
            f"{'ablated' if self.ablate else f'alpha {self.alpha:g}'}, {self.n} prefixes",
            f"mean reward  unsteered {self.mean_reward_unsteered:.4f}  steered "
            f"{self.mean_reward_steered:.4f}  change {self.delta:+.4f} "
            f"[{self.ci95[0]:+.4f}, {self.ci95[1]:+.4f}]",
            f"completions changed: {self.changed} of {self.n}",
        ]
        for c in self.completions[:show]:
            lines += [f"  prefix:    {c.prefix}", f"  unsteered: {c.unsteered}"]
            lines.append(f"  steered:   {c.steered}")
        return "\n".join(lines)


def _layers(model: Any) -> Any:
    """The Hugging Face model's list of transformer blocks."""
    base = getattr(model, "base_model", model)
    for name in ("layers", "h", "blocks"):
        mods = getattr(base, name, None)
        if isinstance(mods, torch.nn.ModuleList):
            return mods
    raise RlsaeError(f"cannot find the transformer blocks of a {type(model).__name__}")


def _hook_module(model: Any, hook: str) -> tuple[Any, str]:
    """``(module, kind)`` behind TransformerLens hook point ``hook``: kind ``output`` (add to the
    module's output) or ``input`` (add to its first input)."""
    m = _HOOK_RE.match(hook)
    if m is None or m.group(2) not in STEERABLE:
        raise RlsaeError(
            f"cannot steer at hook {hook!r}; steering supports "
            f"{', '.join('blocks.L.hook_' + h for h in STEERABLE)}"
        )
    layers = _layers(model)
    layer, what = int(m.group(1)), m.group(2)
    if layer >= len(layers):
        raise RlsaeError(f"hook {hook!r}: the model has blocks 0..{len(layers) - 1}")
    block = layers[layer]
    if what == "resid_post":
        return block, "output"
    if what == "resid_pre":
        return block, "input"
    names = ("mlp",) if what == "mlp_out" else ("attention", "attn")
    for name in names:
        mod = getattr(block, name, None)
        if isinstance(mod, torch.nn.Module):
            return mod, "output"
    raise RlsaeError(f"cannot find the {what[:-4]} module of block {layer} to steer {hook!r}")


def _apply(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn(value)`` for a tensor, or for the first element of a tuple output."""
    if isinstance(value, tuple):
        return (fn(value[0]), *value[1:])
    return fn(value)


@contextlib.contextmanager
def intervening(
    model: Any, hook: str, fn: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Within the block, the activation ``x`` (..., d) at ``hook`` of the Hugging Face ``model``
    is replaced by ``fn(x)`` at every position of every forward pass (generation included)."""
    module, kind = _hook_module(model, hook)
    if kind == "output":
        handle = module.register_forward_hook(lambda mod, args, out: _apply(out, fn))
    else:

        def pre(mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args:
                return (_apply(args[0], fn), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": _apply(kwargs["hidden_states"], fn)}

        handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def steering(model: Any, hook: str, vector: torch.Tensor) -> AbstractContextManager[None]:
    """Within the block, ``vector`` (d,) is added at ``hook`` of the Hugging Face ``model``."""
    vec = vector.detach().to(next(model.parameters()).device)
    return intervening(model, hook, lambda x: x + vec.to(x.dtype))


def ablating(model: Any, hook: str, sae: SAE, feature: int) -> AbstractContextManager[None]:
    """Within the block, feature ``feature``'s part of the SAE's reconstruction,
    ``encode(x)[F] * W_dec[F]``, is subtracted from the activation at ``hook`` (the rest of the
    activation, the SAE's error included, is kept)."""
    row = sae.W_dec[feature].detach()

    def remove(x: torch.Tensor) -> torch.Tensor:
        f = sae.encode(x)[..., feature : feature + 1].detach()
        return x - (f * row).to(x.dtype)

    return intervening(model, hook, remove)


def check_feature(sae: SAE, feature: int, sae_dir: str | os.PathLike | None = None) -> None:
    """Refuse a feature out of range, or one the SAE's feature statistics show dead."""
    if not 0 <= feature < sae.cfg.d_sae:
        raise RlsaeError(
            f"--feature {feature} is out of range; the SAE has features 0..{sae.cfg.d_sae - 1}"
        )
    if sae_dir is not None and os.path.isfile(os.path.join(os.fspath(sae_dir), FEATURE_STATS)):
        stats = FeatureStats.read(sae_dir)  # a corrupt file: one line
        if int(stats.firing_counts[feature]) == 0:
            raise RlsaeError(
                f"--feature {feature} is dead: it never fired over the {stats.rows} rows of "
                f"{FEATURE_STATS}; steering along it says nothing about what the model learned"
            )


def _reward_fn(cfg: LMSteerConfig) -> RewardFn:
    if cfg.reward == "sentiment":
        return ClassifierReward(ClassifierRewardConfig(model=cfg.classifier))
    return UtilityReward(UtilityRewardConfig(table=cfg.table))


def steer_model(
    model: str | os.PathLike,
    sae: SAE | str | os.PathLike,
    feature: int,
    cfg: LMSteerConfig | None = None,
    *,
    hf_model: Any = None,
    tokenizer: Any = None,
) -> LMSteerResult:
    """Complete ``cfg.prefixes`` test prefixes with and without ``cfg.alpha · W_dec[feature]``
    added at the SAE's hook (with ``cfg.ablate``: the feature's part of the SAE's
    reconstruction removed), same seed, and score both (see the module doc). A feature out of
    range or dead, or an SAE for another layer or width than the model, is refused in one line
    before any sampling. ``hf_model``/``tokenizer``: the model already loaded."""
    cfg = cfg or LMSteerConfig()
    cfg.validate()
    t0 = time.time()
    sae_dir = None if isinstance(sae, SAE) else sae
    sae_obj = sae if isinstance(sae, SAE) else load_sae(sae)
    check_feature(sae_obj, feature, sae_dir)
    if hf_model is None or tokenizer is None:
        hf_model, tokenizer = load_model(model)
    hook = sae_obj.cfg.hook_name
    _check_width(hf_model, sae_obj, hook)
    row = sae_obj.W_dec[feature].detach().float()
    change = (
        ablating(hf_model, hook, sae_obj, feature)
        if cfg.ablate
        else steering(hf_model, hook, cfg.alpha * row)
    )
    res = _compare(model, hf_model, tokenizer, change, cfg)
    return dataclasses.replace(
        res,
        feature=feature,
        hook=hook,
        decoder_norm=float(row.norm()),
        sae=os.fspath(sae_dir) if sae_dir is not None else "",
        seconds=time.time() - t0,
    )


def steer_direction(
    model: str | os.PathLike,
    hook: str,
    direction: torch.Tensor,
    cfg: LMSteerConfig,
    *,
    label: int = -1,
    source: str = "",
    hf_model: Any = None,
    tokenizer: Any = None,
) -> LMSteerResult:
    """:func:`steer_model` for any direction (d,) — e.g. a crosscoder latent's decoder row in
    one model: ``cfg.alpha · direction`` is added at ``hook``. ``label`` is recorded as the
    result's ``feature`` and ``source`` as its ``sae``; ``cfg.ablate`` is refused (there is no
    encoder to say how much of the direction is present)."""
    cfg.validate()
    if cfg.ablate:
        raise RlsaeError("steering a bare direction cannot ablate it; give alpha instead")
    t0 = time.time()
    if hf_model is None or tokenizer is None:
        hf_model, tokenizer = load_model(model)
    d_model = _hook_width(hf_model, hook)
    vec = direction.detach().float().reshape(-1)
    if d_model and vec.numel() != d_model:
        raise RlsaeError(f"a direction of width {vec.numel()} for {hook} of width {d_model}")
    res = _compare(model, hf_model, tokenizer, steering(hf_model, hook, cfg.alpha * vec), cfg)
    return dataclasses.replace(
        res,
        feature=label,
        hook=hook,
        decoder_norm=float(vec.norm()),
        sae=source,
        seconds=time.time() - t0,
    )


def _compare(
    model: str | os.PathLike,
    hf_model: Any,
    tokenizer: Any,
    change: AbstractContextManager[None],
    cfg: LMSteerConfig,
) -> LMSteerResult:
    """Complete the test prefixes without and then with ``change`` (same prefixes and seed) and
    score both; the caller fills in what it steered (feature, hook, decoder norm, source)."""
    table = UtilityTable.load(cfg.table)
    check_fits_context(hf_model, cfg.prefix_tokens, cfg.max_new_tokens)
    reward = _reward_fn(cfg)
    texts = load_texts(cfg.data, "test", model=model)
    prefix_ids = make_prefixes(texts, tokenizer, cfg.prefixes, cfg.prefix_tokens, seed=cfg.seed)

    def sample() -> tuple[list[str], list[str]]:
        rollout = sample_completions(
            hf_model,
            tokenizer,
            prefix_ids,
            cfg.max_new_tokens,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
        )
        return decode_rollout(tokenizer, rollout)

    prefixes, plain = sample()
    with change:
        _, steered = sample()
    r_plain, r_steered = reward(prefixes, plain), reward(prefixes, steered)
    diffs = np.asarray(r_steered, dtype=np.float64) - np.asarray(r_plain, dtype=np.float64)
    return LMSteerResult(
        feature=-1,
        alpha=float(cfg.alpha),
        ablate=cfg.ablate,
        hook="",
        n=len(prefixes),
        mean_reward_unsteered=float(np.mean(r_plain)),
        mean_reward_steered=float(np.mean(r_steered)),
        delta=float(diffs.mean()),
        ci95=bootstrap_ci(diffs, cfg.bootstrap, cfg.seed),
        utility_unsteered=float(sum(table.utility(c) for c in plain)),
        utility_steered=float(sum(table.utility(c) for c in steered)),
        changed=sum(a != b for a, b in zip(plain, steered, strict=True)),
        decoder_norm=0.0,
        reward=cfg.reward,
        model=os.fspath(model),
        config=from_mapping(LMSteerConfig, to_mapping(cfg)),
        completions=[
            SteeredCompletion(p, a, b, ra, rb)
            for p, a, b, ra, rb in zip(prefixes, plain, steered, r_plain, r_steered, strict=True)
        ],
    )


def _check_width(hf_model: Any, sae: SAE, hook: str) -> None:
    """An SAE without a hook, for a block the model lacks, or of another width: one line."""
    if not hook:
        raise RlsaeError("the SAE records no hook_name; it was not trained on a model hook")
    d_model = _hook_width(hf_model, hook)
    if d_model and sae.cfg.d_in != d_model:
        raise RlsaeError(
            f"the SAE reads d_in={sae.cfg.d_in} but {hook} of this model is {d_model} wide; "
            "an SAE for another model"
        )


def _hook_width(hf_model: Any, hook: str) -> int:
    """The width of ``hook`` in ``hf_model`` (its hidden size; 0 when the config does not say),
    after refusing in one line a hook the model lacks or steering cannot reach."""
    _hook_module(hf_model, hook)
    return int(getattr(hf_model.config, "hidden_size", 0) or 0)
