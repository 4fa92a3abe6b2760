"""The implicit-reward-model study's config: models, the tiny model, RLHF, SAE pairs, tables.

``rlsae pipeline llm --preset demo --print-config`` prints a complete one; ``tiny`` and ``rlhf``
are the real :class:`~rlsae.llm.configs.TinyConfig` and :class:`~rlsae.llm.configs.RLHFConfig`
(with the PPO update under ``rlhf.ppo``), so a key they do not have is refused up front.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rlsae.configs import check_range
from rlsae.errors import RlsaeError
from rlsae.llm.causal_configs import StudySteerConfig
from rlsae.llm.configs import RLHFConfig, TinyConfig
from rlsae.sae.crosscoder_config import CrosscoderConfig

TINY = "tiny"

# The paper's Table 2 (large, small). Other models: 2 x d_model and d_model (Algorithm 1).
PAPER_DICT_SIZES = {
    "EleutherAI/pythia-70m": (1024, 512),
    "EleutherAI/pythia-160m": (1536, 768),
    "EleutherAI/pythia-410m": (2048, 1024),
    "EleutherAI/gpt-neo-125m": (768, 1536),
}


@dataclass
class SAEPairConfig:
    """How each SAE of a pair is trained (defaults: the paper's section 5.2)."""

    arch: Literal["relu", "topk"] = "relu"
    """``relu`` (ReLU + L1, the paper) or ``topk``."""
    tied: bool = True
    """Tied encoder/decoder weights (the paper)."""
    l1: float = 1e-3
    """L1 coefficient (the paper: 0.001)."""
    k: int = 32
    """Active latents for ``topk``."""
    lr: float = 1e-3
    """Adam learning rate (the paper: 1e-3)."""
    batch_size: int = 32
    """Rows per step (the paper: 32)."""
    epochs: float = 3.0
    """Passes over the activations (the paper: 3)."""
    large: int | None = None
    """Large dictionary size; None: the paper's Table 2 for its models, else 2 x d_model."""
    small: int | None = None
    """Small dictionary size; None: Table 2, else d_model."""
    seed: int = 0
    """Seed of the SAE initialisation and data order (the large SAE uses seed + 1)."""

    def validate(self, where: str = "config") -> None:
        check_range(where, "l1", self.l1, 0)
        check_range(where, "k", self.k, 1)
        check_range(where, "lr", self.lr, 0, lo_open=True)
        check_range(where, "batch_size", self.batch_size, 1)
        check_range(where, "epochs", self.epochs, 0, lo_open=True)
        for name in ("large", "small"):
            if getattr(self, name) is not None:
                check_range(where, name, getattr(self, name), 1)


def dict_sizes(model: str, d_model: int, cfg: SAEPairConfig) -> tuple[int, int]:
    """(large, small) dictionary sizes for ``model`` of width ``d_model``."""
    large, small = PAPER_DICT_SIZES.get(model, (2 * d_model, d_model))
    return int(cfg.large or large), int(cfg.small or small)


def model_label(model: str) -> str:
    """A model's directory name in a multi-model run (``tiny``, ``pythia-70m``)."""
    return TINY if model == TINY else Path(model.rstrip("/")).name


@dataclass
class LLMStudyConfig:
    """One implicit-reward-model study. Saved in the run directory's ``run.json``."""

    name: str = "llm"
    """Name of the study (a run directory belongs to exactly one study)."""
    models: list[str] = field(default_factory=lambda: [TINY])
    """Base models: hub names, model directories, or ``tiny`` (pretrained offline here)."""
    tiny: TinyConfig = field(default_factory=TinyConfig)
    """The ``tiny`` model's size and training (its ``seed`` seeds the corpus and the model)."""
    rlhf: RLHFConfig = field(default_factory=RLHFConfig)
    """The RLHF run of each model (its ``model`` is each of ``models`` in turn: leave it at the
    default; ``seed`` seeds the tuning)."""
    top_n_layers: int = 5
    """Layers (most divergent first) that get SAE pairs (the paper: 5)."""
    hook: str = "resid_post"
    """Hook recorded in each chosen block."""
    data: str | None = None
    """Documents for activations: None = the tiny model's test corpus or IMDb test."""
    prefixes: int = 1000
    """Documents recorded per model."""
    prefix_tokens: int = 50
    """Tokens per document (the paper explains on the first 50)."""
    sae: SAEPairConfig = field(default_factory=SAEPairConfig)
    """SAE pair training."""
    top_k: int = 10
    """Shared features listed per pair (the paper: 10)."""
    utility_k: int = 30
    """Shared features explained and scored for Table 3 (the paper: 30)."""
    explainer: str = "offline"
    """``offline`` (token lift) or ``llm`` (OpenAI-compatible endpoint from the environment)."""
    explainer_samples: int = 1
    """LLM explanations per feature; Table 3 uses their mean utility (the paper: 3)."""
    explainer_temperature: float = 0.0
    """LLM sampling temperature (above 0 when drawing several samples)."""
    explanation_scorer: str = "offline"
    """Scores every explanation on held-out contexts (detection, fuzzing, simulation;
    ``rlsae llm score-explanations``): ``offline`` (a token-set stand-in, not a language model,
    labelled so in every output), ``llm`` (an OpenAI-compatible endpoint from
    RLSAE_EXPLAINER_BASE_URL / RLSAE_EXPLAINER_MODEL / OPENAI_API_KEY) or ``none``."""
    score_threshold: float | None = 0.75
    """Table 3 is also reported over only the explanations whose detection score (balanced
    accuracy, 0.5 = chance) is at least this; None (or explanation_scorer none) reports only
    the unrestricted table."""
    score_prefixes: int = 100
    """Completions scored for Table 4 (the paper: 100)."""
    score_prefix_tokens: int = 30
    """Prefix length for Table 4 (the paper: 30)."""
    score_new_tokens: int = 30
    """Completion length for Table 4."""
    seed: int = 0
    """Seed of the recorded documents and of the scored completions."""
    device: str = "cpu"
    """Where models run."""
    threads: int | None = None
    """torch CPU threads while the study runs (None: torch's default; restored afterwards).
    1 is much faster on a shared, busy machine."""
    diff: CrosscoderConfig | None = None
    """The ``diff`` stage (``rlsae.study.llm_diff``): a crosscoder between base and tuned per
    chosen layer, trained with these settings; None turns the stage off."""
    steer: StudySteerConfig | None = None
    """The ``steer`` stage (``rlsae.study.llm_steer``): each model's top shared features pushed
    both ways in that model and scored with the reward; None turns the stage off."""

    def validate(self, where: str = "config") -> None:
        """Ranges and cross-field rules; the first problem is one line ``where: key: what``."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise RlsaeError(f"{where}: name {self.name!r} may hold only letters, digits, _ . -")
        if not self.models:
            raise RlsaeError(f"{where}: models: needs at least one model")
        labels = [model_label(m) for m in self.models]
        if len(set(labels)) != len(labels):
            raise RlsaeError(f"{where}: models: two models share the directory name; {labels}")
        for key in ("top_n_layers", "prefixes", "prefix_tokens", "top_k", "utility_k"):
            check_range(where, key, getattr(self, key), 1)
        for key in ("explainer_samples", "score_prefixes", "score_prefix_tokens"):
            check_range(where, key, getattr(self, key), 1)
        check_range(where, "score_new_tokens", self.score_new_tokens, 1)
        check_range(where, "explainer_temperature", self.explainer_temperature, 0)
        if self.utility_k < self.top_k:
            raise RlsaeError(f"{where}: utility_k: must be at least top_k ({self.top_k})")
        if self.explainer not in ("offline", "llm"):
            raise RlsaeError(f"{where}: explainer: expected offline or llm, got {self.explainer!r}")
        if self.explanation_scorer not in ("offline", "llm", "none"):
            raise RlsaeError(
                f"{where}: explanation_scorer: expected offline, llm or none, "
                f"got {self.explanation_scorer!r}"
            )
        if self.score_threshold is not None:
            check_range(where, "score_threshold", self.score_threshold, 0, 1)
        check_range(where, "seed", self.seed, 0, 2**32 - 1)
        if self.rlhf.model != RLHFConfig().model:
            raise RlsaeError(
                f"{where}: rlhf.model: the study tunes each of models; list the model there"
            )
        if self.threads is not None:
            check_range(where, "threads", self.threads, 1)
        if self.diff is not None:
            self.diff.validate(f"{where}: diff")
        if self.steer is not None:
            self.steer.validate(f"{where}: steer")
