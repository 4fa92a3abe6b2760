"""The language-model part's configs, in one torch-free module.

Each config is a dataclass whose fields carry their docstrings (:mod:`rlsae.configs`), so the
CLI (``rlsae llm ...``) takes its option defaults and help texts from here without importing
torch, and each config checks its own fields in one ``validate(where)`` that the CLI, the study
and the Python API all go through before any work starts or any file is written.

- :class:`PPOConfig`: one PPO update (the paper's Table 1; TRL's PPO defaults elsewhere);
- :class:`RLHFConfig`: a tuning run (PPO or RLOO), holding its :class:`PPOConfig` as ``ppo``.
"""

from __future__ import annotations

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
        check_range(where, p + "init_kl_coef", self.init_kl_coef, 0)
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
        if self.algo == "rloo":
            check_range(where, "rloo_k", self.rloo_k, 2)
            if self.ppo.batch_size % self.rloo_k:
                raise RlsaeError(
                    f"{where}: RLOO needs rloo_k >= 2 dividing the batch size "
                    f"{self.ppo.batch_size} (got {self.rloo_k})"
                )
