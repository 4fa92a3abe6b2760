"""The language-model part's configs, in one torch-free module.

Each config is a dataclass whose fields carry their docstrings (:mod:`rlsae.configs`), so the
CLI (``rlsae llm ...``) takes its option defaults and help texts from here without importing
torch, and each config checks its own fields in one ``validate(where)`` that the CLI, the study
and the Python API all go through before any work starts or any file is written.

- :class:`PPOConfig`: one PPO update (the paper's Table 1; TRL's PPO defaults elsewhere);
- :class:`RLHFConfig`: a tuning run (PPO or RLOO), holding its :class:`PPOConfig` as ``ppo``;
- :class:`TinyConfig`: the tiny offline Pythia (``llm pretrain-tiny``);
- :class:`ScoreConfig`: the completions score of the paper's Table 4 (``llm score``);
- :class:`LMRecordConfig`: recording a hook of some layers (``llm record``);
- :class:`ExplainConfig`: explaining SAE features (``llm explain``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rlsae.configs import check_range
from rlsae.errors import RlsaeError

DEFAULT_MODEL = "EleutherAI/pythia-70m"
"""The paper's smallest model; the default base model of every ``llm`` command."""
DEFAULT_CLASSIFIER = "lvwerra/distilbert-imdb"
"""The sentiment classifier of ``reward='sentiment'``."""

REWARDS = ("utility", "sentiment")
ALGOS = ("ppo", "rloo")


def check_choice(where: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    """Refuse ``value`` not among ``choices`` (one line naming the field)."""
    if value not in choices:
        raise RlsaeError(f"{where}: {name}: expected one of {', '.join(choices)}, got {value!r}")


def parse_layers(text: str | Sequence[int], what: str = "--layers") -> list[int]:
    """``"1,3"`` or ``[1, 3]`` -> ``[1, 3]`` (order kept, duplicates dropped); no negatives."""
    if isinstance(text, str):
        try:
            items = [int(t) for t in text.replace(" ", "").split(",") if t]
        except ValueError:
            raise RlsaeError(f"{what} must be comma-separated integers, got {text!r}") from None
    else:
        items = [int(t) for t in text]
    if not items:
        raise RlsaeError(f"{what}: give at least one index")
    if min(items) < 0:
        raise RlsaeError(f"{what}: indices must not be negative, got {min(items)}")
    return list(dict.fromkeys(items))


MAX_TIMEOUT = 86_400.0
"""The longest wait for one explainer request, in seconds (a day)."""


@dataclass
class PPOConfig:
    """PPO hyperparameters. Defaults: the paper's Table 1 and, elsewhere, TRL's PPO defaults."""

    batch_size: int = 64
    """Completions per update (paper: 64)."""
    mini_batch_size: int = 16
    """Completions per gradient step (paper: 16); must divide batch_size."""
    ppo_epochs: int = 4
    """PPO: passes over each batch."""
    learning_rate: float = 1e-6
    """Learning rate (paper: 1e-6 for Pythia; the tiny model needs about 1e-4)."""
    init_kl_coef: float = 0.5
    """Initial KL coefficient (PPO, adaptive) or beta (RLOO, fixed); paper: 0.5."""
    adaptive_kl: bool = True
    """PPO: adapt the KL coefficient towards target_kl (Ziegler et al.); False keeps it fixed."""
    target_kl: float = 6.0
    """PPO: target KL (nats per completion) of the adaptive controller."""
    kl_horizon: int = 10000
    """PPO: horizon of the adaptive controller, in samples."""
    gamma: float = 1.0
    """PPO: discount in GAE."""
    lam: float = 0.95
    """PPO: GAE lambda."""
    cliprange: float = 0.2
    """PPO: policy ratio clip epsilon."""
    cliprange_value: float = 0.2
    """PPO: value prediction clip around the old values."""
    vf_coef: float = 0.1
    """PPO: weight of the value loss."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip (paper: 1)."""
    whiten_advantages: bool = True
    """PPO: normalise advantages to mean 0, variance 1 over the batch's completion tokens."""
    max_new_tokens: int = 24
    """Completion length in tokens (shorter if EOS is sampled)."""
    top_k: int = 0
    """PPO sampling top-k; 0 disables it (paper)."""
    top_p: float = 1.0
    """PPO sampling nucleus; 1 disables it (paper)."""
    temperature: float = 1.0
    """PPO sampling temperature."""

    def validate(self, where: str = "PPO config", prefix: str = "") -> None:
        """Ranges and the batch / mini-batch rule; one-line :class:`RlsaeError`."""
        p = prefix
        check_range(where, p + "batch_size", self.batch_size, 1)
        check_range(where, p + "mini_batch_size", self.mini_batch_size, 1)
        if self.mini_batch_size > self.batch_size:
            raise RlsaeError(
                f"{where}: {p}mini_batch_size: {self.mini_batch_size} exceeds the batch size "
                f"{self.batch_size}"
            )
        if self.batch_size % self.mini_batch_size:
            raise RlsaeError(
                f"{where}: batch size {self.batch_size} is not divisible by mini-batch size "
                f"{self.mini_batch_size}; choose sizes such as 64 and 16"
            )
        check_range(where, p + "ppo_epochs", self.ppo_epochs, 1)
        check_range(where, p + "learning_rate", self.learning_rate, 0, lo_open=True)
        if self.learning_rate > 1:  # an Adam step above 1 diverges at once; the paper's is 1e-6
            check_range(where, p + "learning_rate", self.learning_rate, hi=1)
        # the paper uses 0.5; beyond 1e6 the penalty alone overflows float32 rewards
        check_range(where, p + "init_kl_coef", self.init_kl_coef, 0, 1e6)
        check_range(where, p + "target_kl", self.target_kl, 0, lo_open=True)
        check_range(where, p + "kl_horizon", self.kl_horizon, 1)
        check_range(where, p + "gamma", self.gamma, 0, 1)
        check_range(where, p + "lam", self.lam, 0, 1)
        check_range(where, p + "cliprange", self.cliprange, 0, lo_open=True)
        check_range(where, p + "cliprange_value", self.cliprange_value, 0, lo_open=True)
        check_range(where, p + "vf_coef", self.vf_coef, 0)
        check_range(where, p + "max_grad_norm", self.max_grad_norm, 0, lo_open=True)
        check_range(where, p + "max_new_tokens", self.max_new_tokens, 1)
        check_range(where, p + "top_k", self.top_k, 0)
        check_range(where, p + "top_p", self.top_p, 0, 1, lo_open=True)
        check_range(where, p + "temperature", self.temperature, 0, lo_open=True)


@dataclass
class RLHFConfig:
    """A tuning run: PPO (ours) or RLOO (TRL's RLOOTrainer) on a reward."""

    model: str = DEFAULT_MODEL
    """Base model: hub name or local directory."""
    reward: str = "utility"
    """'utility' (VADER utility table, paper eq. 3) or 'sentiment' (classifier's positive logit)."""
    algo: str = "ppo"
    """'ppo' (ours) or 'rloo' (TRL's RLOOTrainer)."""
    steps: int = 100
    """Updates; each consumes ppo.batch_size completions."""
    seed: int = 0
    """Seed for prefixes, sampling and shuffling."""
    data: str = "auto"
    """Prefix source: 'auto' (tiny model's corpus, else IMDb), 'imdb', or a .txt/.jsonl file."""
    prefix_tokens: int = 8
    """Prefix length in tokens for tuning."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """The update: batch sizes, learning rate, KL coefficient, completion length (RLOO uses
    batch_size, mini_batch_size, learning_rate, init_kl_coef as beta, max_grad_norm and
    max_new_tokens; the PPO-only fields are ignored there)."""
    rloo_k: int = 4
    """RLOO: completions per prefix (the leave-one-out group)."""
    table: str = "vader"
    """Utility table: 'vader' or a TSV file."""
    reward_scale: float = 0.2
    """Utility reward scale (paper: 1/5)."""
    reward_clip: float = 10.0
    """Utility reward clamp (paper: 10)."""
    completion_only: bool = False
    """Score the completion alone instead of prefix + completion."""
    classifier: str = DEFAULT_CLASSIFIER
    """Sentiment classifier (hub name or directory) for reward='sentiment'."""
    checkpoint_every: int = 10
    """Steps between checkpoints."""

    def validate(self, where: str = "RLHF config") -> None:
        """Every field and the cross-field rules (RLOO groups); one-line :class:`RlsaeError`."""
        if not self.model:
            raise RlsaeError(f"{where}: model: must not be empty")
        check_choice(where, "reward", self.reward, REWARDS)
        check_choice(where, "algo", self.algo, ALGOS)
        check_range(where, "steps", self.steps, 1)
        check_range(where, "seed", self.seed, 0, 2**32 - 1)
        check_range(where, "prefix_tokens", self.prefix_tokens, 1)
        check_range(where, "reward_scale", self.reward_scale)
        check_range(where, "reward_clip", self.reward_clip, 0, lo_open=True)
        check_range(where, "checkpoint_every", self.checkpoint_every, 1)
        if not self.data:
            raise RlsaeError(f"{where}: data: must not be empty")
        if not isinstance(self.ppo, PPOConfig):
            raise RlsaeError(f"{where}: ppo: expected a PPOConfig, got {type(self.ppo).__name__}")
        self.ppo.validate(where, "ppo.")
        check_range(where, "rloo_k", self.rloo_k, 2)
        if self.algo == "rloo":
            if self.ppo.batch_size % self.rloo_k:
                raise RlsaeError(
                    f"{where}: RLOO needs rloo_k >= 2 dividing the batch size "
                    f"{self.ppo.batch_size} (got {self.rloo_k})"
                )


@dataclass
class TinyConfig:
    """Size and training of the tiny GPT-NeoX. Defaults train in a few minutes on 2 CPU cores."""

    steps: int = 800
    """Optimiser steps."""
    n_layers: int = 4
    """Transformer blocks."""
    d_model: int = 128
    """Residual stream width."""
    n_heads: int = 4
    """Attention heads."""
    d_mlp: int = 512
    """MLP hidden width."""
    context: int = 128
    """Maximum sequence length (max_position_embeddings)."""
    vocab_size: int = 1024
    """BPE vocabulary size (upper bound)."""
    seq_len: int = 64
    """Training window length in tokens."""
    batch_size: int = 32
    """Windows per step."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warm-up over 5% of steps, cosine decay to 10%)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    n_train_reviews: int = 8000
    """Reviews in corpus_train.txt."""
    n_test_reviews: int = 1000
    """Reviews in corpus_test.txt (for scoring and activations)."""
    seed: int = 0
    """Seed for the corpus, the initialisation and the batches."""

    def validate(self, where: str = "tiny config") -> None:
        """Ranges, heads dividing the width, the window within the context."""
        for name in ("steps", "n_layers", "n_heads", "batch_size", "seq_len"):
            check_range(where, name, getattr(self, name), 1)
        for name in ("n_train_reviews", "n_test_reviews"):
            check_range(where, name, getattr(self, name), 1)
        check_range(where, "d_model", self.d_model, 1)
        check_range(where, "d_mlp", self.d_mlp, 1)
        check_range(where, "vocab_size", self.vocab_size, 64)
        check_range(where, "lr", self.lr, 0, lo_open=True)
        check_range(where, "weight_decay", self.weight_decay, 0)
        check_range(where, "seed", self.seed, 0, 2**32 - 1)
        if self.d_model % self.n_heads:
            raise RlsaeError(
                f"{where}: d_model: {self.d_model} is not divisible by n_heads {self.n_heads}"
            )
        if self.seq_len + 1 > self.context:
            raise RlsaeError(
                f"{where}: seq_len: {self.seq_len} + 1 exceeds the context {self.context}"
            )


@dataclass
class ScoreConfig:
    """How completions are sampled and scored (the paper's Table 4)."""

    prefixes: int = 100
    """Test prefixes, one completion each (paper: 100)."""
    prefix_tokens: int = 30
    """Prefix length in tokens (paper: 30)."""
    max_new_tokens: int = 30
    """Completion length in tokens (shorter if the model writes EOS)."""
    seed: int = 0
    """Seed for the prefix draw and the sampling."""
    data: str = "auto"
    """Prefix source: 'auto' (tiny model's corpus, else IMDb), 'imdb', or a .txt/.jsonl file."""
    split: str = "test"
    """Split the prefixes come from: 'test' or 'train'."""
    table: str = "vader"
    """Utility table: 'vader' or a TSV file."""
    batch_size: int = 50
    """Completions sampled per generate() call."""

    def validate(self, where: str = "score config") -> None:
        """Ranges and the split."""
        check_range(where, "prefixes", self.prefixes, 1)
        check_range(where, "prefix_tokens", self.prefix_tokens, 1)
        check_range(where, "max_new_tokens", self.max_new_tokens, 1)
        check_range(where, "seed", self.seed, 0, 2**32 - 1)
        check_range(where, "batch_size", self.batch_size, 1)
        check_choice(where, "split", self.split, ("test", "train"))
        if not self.data:
            raise RlsaeError(f"{where}: data: must not be empty")


@dataclass
class LMRecordConfig:
    """How a language model's activations are recorded (saved in each store's
    ``meta.extra.record``)."""

    hook: str = "resid_post"
    """Hook inside each block: resid_post, resid_pre, mlp_out, attn_out, ... or any
    TransformerLens name below blocks.L. (mlp.hook_post)."""
    prefixes: int = 1000
    """Documents run through the model."""
    prefix_tokens: int = 64
    """Tokens kept from the start of each document (the paper explains on the first 50)."""
    data: str | None = None
    """Text file (one document per line), JSONL (text field) or 'imdb'; default: a tiny model's
    corpus_test.txt, else the IMDb test split."""
    batch_size: int = 32
    """Documents per forward pass."""
    dtype: str = "float32"
    """Store dtype: float32 or float16."""
    seed: int = 0
    """Shuffles IMDb before taking the documents (files are read in order)."""

    def validate(self, where: str = "record config") -> None:
        """Ranges and the dtype."""
        if not self.hook.strip():
            raise RlsaeError(f"{where}: hook: must not be empty")
        check_range(where, "prefixes", self.prefixes, 1)
        check_range(where, "prefix_tokens", self.prefix_tokens, 1)
        check_range(where, "batch_size", self.batch_size, 1)
        check_range(where, "seed", self.seed, 0, 2**32 - 1)
        check_choice(where, "dtype", self.dtype, ("float32", "float16"))
        if self.data is not None and not self.data:
            raise RlsaeError(f"{where}: data: must not be empty")


EXPLAIN_METHODS = ("offline", "llm")


@dataclass
class ExplainConfig:
    """How features are explained (saved in explanations.json under ``config``)."""

    method: str = "offline"
    """offline (token lift against the base rate) or llm (OpenAI-compatible endpoint)."""
    n_top: int = 50
    """Top activations whose tokens the offline explainer counts."""
    n_records: int = 5
    """Top documents shown (to the LLM, and kept as contexts); the paper used 5."""
    max_tokens_shown: int = 3
    """Tokens named by an offline explanation."""
    min_count: int = 2
    """A token must occur this often among the top activations to be named."""
    base_url: str | None = None
    """LLM endpoint base URL, e.g. https://api.openai.com/v1 (env RLSAE_EXPLAINER_BASE_URL)."""
    model: str | None = None
    """LLM model name (env RLSAE_EXPLAINER_MODEL)."""
    timeout: float = 60.0
    """Seconds to wait for one LLM answer."""
    temperature: float = 0.0
    """LLM sampling temperature."""
    samples: int = 1
    """LLM explanations drawn per feature (the paper averaged 3); the utility is their mean and
    the explanation is the first. Use a temperature above 0 with more than one."""

    def validate(self, where: str = "explain config") -> None:
        """Ranges and the method."""
        check_choice(where, "method", self.method, EXPLAIN_METHODS)
        for name in ("n_top", "n_records", "max_tokens_shown", "min_count", "samples"):
            check_range(where, name, getattr(self, name), 1)
        check_range(where, "timeout", self.timeout, 0, lo_open=True)
        if self.timeout > MAX_TIMEOUT:  # a larger one overflows the socket layer's timeval
            check_range(where, "timeout", self.timeout, hi=MAX_TIMEOUT)
        check_range(where, "temperature", self.temperature, 0, 2)


SCORERS = ("offline", "llm")
SCORE_METHODS = ("detection", "fuzzing", "simulation")


@dataclass
class ExplanationScoreConfig:
    """How explanations are scored on held-out contexts (saved beside the scores)."""

    scorer: str = "offline"
    """offline (a token-set detector built from the explanation's words; a stand-in for tests
    and the demo, not a language model) or llm (an OpenAI-compatible endpoint)."""
    methods: str = "detection,fuzzing,simulation"
    """Comma-separated scorers to run: detection (which contexts activate; balanced accuracy),
    fuzzing (which highlighted tokens are the activating ones; balanced accuracy), simulation
    (per-token activations 0-10; Pearson correlation with the true ones, Bills et al. 2023)."""
    n_activating: int = 10
    """Held-out activating contexts per feature (documents not shown to the explainer)."""
    n_non_activating: int = 10
    """Held-out contexts on which the feature never fires, drawn at random."""
    window: int = 32
    """Tokens shown per context (a window around the strongest activation)."""
    seed: int = 0
    """Seed for drawing contexts and fuzzing's random highlights."""
    base_url: str | None = None
    """Scorer endpoint base URL (env RLSAE_EXPLAINER_BASE_URL); the key comes from
    OPENAI_API_KEY and is never written to disk."""
    model: str | None = None
    """Scorer model name (env RLSAE_EXPLAINER_MODEL)."""
    timeout: float = 60.0
    """Seconds to wait for one scorer answer (at most an hour)."""

    def method_list(self) -> list[str]:
        """The scorers to run, in the order given."""
        return [m for m in dict.fromkeys(self.methods.replace(" ", "").split(",")) if m]

    def validate(self, where: str = "score config") -> None:
        """Scorer, methods and ranges."""
        check_choice(where, "scorer", self.scorer, SCORERS)
        methods = self.method_list()
        if not methods:
            raise RlsaeError(f"{where}: methods: name at least one of {', '.join(SCORE_METHODS)}")
        for m in methods:
            check_choice(where, "methods", m, SCORE_METHODS)
        for name in ("n_activating", "n_non_activating", "window"):
            check_range(where, name, getattr(self, name), 1)
        check_range(where, "seed", self.seed, 0, 2**32 - 1)
        check_range(where, "timeout", self.timeout, 0, 3600, lo_open=True)
        if self.timeout > MAX_TIMEOUT:  # a larger one overflows the socket layer's timeval
            check_range(where, "timeout", self.timeout, hi=MAX_TIMEOUT)
