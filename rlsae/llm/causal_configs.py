"""Configs of the causal language-model tools, in one torch-free module (issue 16, 14).

- :class:`SpliceEvalConfig`: splice faithfulness of an SAE (``sae eval --model``);
- :class:`LMSteerConfig`: steering generation along a feature's decoder direction
  (``llm steer``);
- :class:`KLConfig`: per-token KL between a base and a tuned model (``llm kl``);
- :class:`AmplifyConfig`: sampling from amplified tuned-minus-base logits (``llm amplify``).

Like :mod:`rlsae.llm.configs`, each field's docstring is its CLI help text and ``validate``
refuses a bad value in one line before torch is imported or anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlsae.configs import check_range
from rlsae.errors import RlsaeError
from rlsae.llm.configs import DEFAULT_CLASSIFIER, REWARDS, check_choice

MAX_ALPHA = 1e6
"""Largest |alpha| accepted: beyond it a float32 residual stream overflows."""


@dataclass
class SpliceEvalConfig:
    """How an SAE's splice faithfulness is measured on a language model (``sae eval --model``)."""

    prefixes: int = 100
    """Test documents run through the model."""
    prefix_tokens: int = 64
    """Tokens kept from the start of each document."""
    data: str | None = None
    """Text file (one document per line), JSONL (text field) or 'imdb'; default: a tiny model's
    corpus_test.txt, else the IMDb test split."""
    batch_size: int = 16
    """Documents per forward pass."""
    seed: int = 0
    """Shuffles IMDb before taking the documents (files are read in order)."""

    def validate(self, where: str = "splice eval") -> None:
        """Ranges."""
        check_range(where, "prefixes", self.prefixes, 1)
        check_range(where, "prefix_tokens", self.prefix_tokens, 2)
        check_range(where, "batch_size", self.batch_size, 1)
        check_range(where, "seed", self.seed, 0, 2**32 - 1)
        if self.data is not None and not self.data:
            raise RlsaeError(f"{where}: data: must not be empty")


@dataclass
class LMSteerConfig:
    """How completions are steered along a feature and scored (``llm steer``)."""

    alpha: float = 0.0
    """Multiple of the feature's decoder row W_dec[F] added at the hook (0: no change;
    negative pushes the other way)."""
    ablate: bool = False
    """Instead of adding: remove the feature (subtract its part of the SAE's reconstruction)."""
    prefixes: int = 50
    """Test prefixes, one completion each, steered and unsteered."""
    prefix_tokens: int = 30
    """Prefix length in tokens."""
    max_new_tokens: int = 30
    """Completion length in tokens (shorter if the model writes EOS)."""
    seed: int = 0
    """Seed for the prefix draw and the sampling (the same for both runs)."""
    data: str = "auto"
    """Prefix source: 'auto' (tiny model's corpus, else IMDb), 'imdb', or a .txt/.jsonl file."""
    reward: str = "utility"
    """'utility' (the utility table, the paper's equation 3) or 'sentiment' (a classifier)."""
    table: str = "vader"
    """Utility table: 'vader' or a TSV file."""
    classifier: str = DEFAULT_CLASSIFIER
    """Sentiment classifier (hub name or directory) for reward 'sentiment'."""
    bootstrap: int = 1000
    """Bootstrap resamples for the confidence interval of the mean reward change."""
    batch_size: int = 50
    """Completions sampled per generate() call."""

    def validate(self, where: str = "steer config") -> None:
        """Ranges and choices."""
        check_range(where, "alpha", self.alpha, -MAX_ALPHA, MAX_ALPHA)
        if self.ablate and self.alpha != 0:
            raise RlsaeError(f"{where}: alpha: not used with ablate (leave it 0)")
        check_range(where, "prefixes", self.prefixes, 1)
        check_range(where, "prefix_tokens", self.prefix_tokens, 1)
        check_range(where, "max_new_tokens", self.max_new_tokens, 1)
        check_range(where, "seed", self.seed, 0, 2**32 - 1)
        check_range(where, "bootstrap", self.bootstrap, 1, 1_000_000)
        check_range(where, "batch_size", self.batch_size, 1)
        check_choice(where, "reward", self.reward, REWARDS)
        for name in ("data", "table", "classifier"):
            if not getattr(self, name):
                raise RlsaeError(f"{where}: {name}: must not be empty")


@dataclass
class KLConfig:
    """How the base and tuned next-token distributions are compared (``llm kl``)."""

    prefixes: int = 100
    """Test documents run through both models."""
    prefix_tokens: int = 64
    """Tokens kept from the start of each document."""
    data: str | None = None
    """Text file (one document per line), JSONL (text field) or 'imdb'; default: a tiny model's
    corpus_test.txt, else the IMDb test split."""
    top: int = 20
    """Positions listed where the two distributions differ most."""
    batch_size: int = 16
    """Documents per forward pass."""
    seed: int = 0
    """Shuffles IMDb before taking the documents (files are read in order)."""

    def validate(self, where: str = "kl config") -> None:
        """Ranges."""
        check_range(where, "prefixes", self.prefixes, 1)
        check_range(where, "prefix_tokens", self.prefix_tokens, 1)
        check_range(where, "top", self.top, 1, 100_000)
        check_range(where, "batch_size", self.batch_size, 1)
        check_range(where, "seed", self.seed, 0, 2**32 - 1)
        if self.data is not None and not self.data:
            raise RlsaeError(f"{where}: data: must not be empty")


@dataclass
class AmplifyConfig:
    """How completions are sampled from amplified logits (``llm amplify``)."""

    alpha: float = 1.0
    """Amplification: sample from logits_tuned + alpha (logits_tuned - logits_base); 0 samples
    the tuned model, -1 the base model."""
    prefixes: int = 50
    """Test prefixes, one completion each."""
    prefix_tokens: int = 30
    """Prefix length in tokens."""
    max_new_tokens: int = 30
    """Completion length in tokens (shorter if the model writes EOS)."""
    seed: int = 0
    """Seed for the prefix draw and the sampling."""
    data: str = "auto"
    """Prefix source: 'auto' (tiny model's corpus, else IMDb), 'imdb', or a .txt/.jsonl file."""
    table: str = "vader"
    """Utility table: 'vader' or a TSV file."""

    def validate(self, where: str = "amplify config") -> None:
        """Ranges."""
        check_range(where, "alpha", self.alpha, -1_000.0, 1_000.0)
        check_range(where, "prefixes", self.prefixes, 1)
        check_range(where, "prefix_tokens", self.prefix_tokens, 1)
        check_range(where, "max_new_tokens", self.max_new_tokens, 1)
        check_range(where, "seed", self.seed, 0, 2**32 - 1)
        for name in ("data", "table"):
            if not getattr(self, name):
                raise RlsaeError(f"{where}: {name}: must not be empty")


@dataclass
class StudySteerConfig:
    """The IRM study's ``steer`` stage (``rlsae.study.llm_steer``): each model's top shared
    features pushed both ways in that model, scored with the study's reward."""

    features: int = 3
    """Top shared features steered per model and layer (the MMCS ranking of the small SAE)."""
    scale: float = 1.0
    """alpha = +/- scale x the mean norm of the hook's recorded activations."""
    prefixes: int = 50
    """Test prefixes completed per feature and sign (and unsteered)."""
    max_new_tokens: int = 20
    """Completion length in tokens."""

    def validate(self, where: str = "steer") -> None:
        """Ranges."""
        check_range(where, "features", self.features, 1, 10_000)
        check_range(where, "scale", self.scale, 0, 1_000, lo_open=True)
        check_range(where, "prefixes", self.prefixes, 1)
        check_range(where, "max_new_tokens", self.max_new_tokens, 1)
