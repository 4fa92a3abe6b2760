"""The Atari part's configs: environment, DQN hyperparameters, training, evaluation, recording.

Each is a dataclass whose fields carry their docstrings (``rlsae.configs.field_docs`` turns them
into ``--help`` texts) and whose ``validate(where)`` is the one place its values are checked: the
CLI, the study configs and the Python API (:func:`rlsae.agents.dqn.train_dqn`,
:func:`~rlsae.agents.evaluate.evaluate_agent`, :func:`~rlsae.agents.record.record_activations`,
:func:`~rlsae.agents.splice.splice_metrics`) all call it before any work or any file is written.

This module imports nothing heavy (no torch, no emulator), so the CLI can build its options from
these fields and refuse a bad value before torch is loaded.

DQN hyperparameters (:class:`DQNConfig`, defaults per arch from :func:`default_config`):

- ``nature``: rl-zoo3's Atari DQN (``hyperparams/dqn.yml``, ``atari``): lr 1e-4, buffer 100k,
  learning starts 100k, batch 32, gamma 0.99, train every 4 steps, target sync every 1000 steps,
  epsilon 1.0 -> 0.01 over the first 10% of training.
- ``poster``: the poster's: Adam lr 5e-4, gamma 0.98, buffer 50k, batch 256, epsilon
  0.2 -> 0.05, rewards divided by 100 (env), smooth-L1 loss (SB3's DQN loss), hard target
  sync. The poster does not give the sync interval, learning start, train frequency or the
  epsilon decay length: we use 2000, 10k, 4 and 10% of training. A replay buffer of raw RGB
  frames is large (100,800 bytes per frame): ``optimize_memory_usage`` stores each frame once,
  so 50k transitions take about 5.0 GB (10 GB without it).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rlsae.configs import INT64_MAX, check_range, describe, from_mapping
from rlsae.errors import RlsaeError
from rlsae.sae.config import MAX_D_SAE

ARCHS = ("nature", "poster")
"""The two agent architectures (and observation modes)."""
MODES = ARCHS
REWARD_TRANSFORMS = ("sign", "scale", "none")
DTYPES = ("float32", "float16")


def check_int(
    where: str, name: str, value: Any, lo: int | None = None, hi: int | None = None
) -> None:
    """Refuse ``value`` unless it is an integer (not a bool) of at least ``lo`` (at most ``hi``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RlsaeError(f"{where}: {name}: expected an integer, got {describe(value)}")
    if hi is None and abs(value) > INT64_MAX:  # torch, numpy and the emulator count in 64 bits
        raise RlsaeError(f"{where}: {name}: must be at most {INT64_MAX}, got {value}")
    if hi is not None and lo is not None and not lo <= value <= hi:
        raise RlsaeError(f"{where}: {name}: must be between {lo} and {hi}, got {value}")
    if lo is not None and value < lo:
        raise RlsaeError(f"{where}: {name}: must be at least {lo}, got {value}")


def check_seed(where: str, seed: Any) -> None:
    """A seed is an integer in [0, :data:`SEED_MAX`]."""
    check_int(where, "seed", seed, 0)
    if seed > SEED_MAX:
        raise RlsaeError(f"{where}: seed: must be at most {SEED_MAX}, got {seed}")


MAX_ENVS = 1024
"""Most emulators one process steps side by side (each holds a full Atari state and frames)."""
SEED_MAX = 2**32 - 1
"""numpy's legacy seeding (which SB3 and gymnasium call) takes seeds below 2**32."""


def check_n_envs(where: str, value: Any) -> None:
    """Refuse an emulator count below 1 or above :data:`MAX_ENVS`."""
    if isinstance(value, int) and not isinstance(value, bool) and value < 1:
        raise RlsaeError(f"{where}: n_envs: must be at least 1, got {value}")
    check_int(where, "n_envs", value, 1, MAX_ENVS)


DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(where: str, device: Any) -> None:
    """Refuse a torch device name SB3 cannot use (``auto``, ``cpu``, ``mps``, ``cuda[:N]``)."""
    if not isinstance(device, str) or not DEVICE.fullmatch(device):
        raise RlsaeError(
            f"{where}: device: expected auto, cpu, mps, cuda or cuda:N, got {describe(device)}"
        )


def check_choice(where: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Refuse ``value`` unless it is one of ``choices``."""
    if value not in choices:
        raise RlsaeError(
            f"{where}: {name}: expected one of {', '.join(choices)}, got {describe(value)}"
        )


def _check_prob(where: str, name: str, value: Any) -> None:
    check_range(where, name, value, 0.0, 1.0)


DEFAULT_GAME = "ms_pacman"
"""The game rlsae plays unless told otherwise (the poster's)."""


@functools.lru_cache(maxsize=1)
def ale_games() -> tuple[str, ...]:
    """The games whose ROMs ship with ale-py (``ms_pacman``, ``breakout``, ``pong``, ...).

    Read from the ROM folder's file names, without importing ale-py (fast ``--help`` and fast
    refusals); ``ALE_ROMS_DIR`` overrides the folder as it does for ale-py."""
    folder = os.environ.get("ALE_ROMS_DIR")
    if not folder:
        spec = importlib.util.find_spec("ale_py")
        locations = list(spec.submodule_search_locations or []) if spec else []
        folder = str(Path(locations[0]) / "roms") if locations else ""
    return tuple(sorted(p.stem for p in Path(folder).glob("*.bin"))) if folder else ()


def check_game(where: str, game: Any) -> None:
    """Refuse a game without an ale-py ROM (one line naming a few that exist)."""
    games = ale_games()
    if not isinstance(game, str) or game not in games:
        close = difflib.get_close_matches(str(game).lower(), games, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else f"e.g. {', '.join(games[:6])}"
        raise RlsaeError(
            f"{where}: game: {describe(game)} is not one of ale-py's {len(games)} ROMs; {hint}"
        )


def env_id_of(game: str) -> str:
    """The gymnasium v5 id of an ale-py game (``ms_pacman`` -> ``ALE/MsPacman-v5``)."""
    return "ALE/" + "".join(part.capitalize() for part in game.split("_")) + "-v5"


@dataclass
class EnvConfig:
    """How an Atari environment is built. Saved in ``agent.json`` and ``episodes.json``."""

    mode: str = "poster"
    """Observation mode: ``nature`` (84x84 gray, 4 stacked) or ``poster`` (210x160 RGB)."""
    frameskip: int = 4
    """Emulator frames per agent step (``ALE/MsPacman-v5``: 4)."""
    repeat_action_probability: float = 0.25
    """Sticky actions (``ALE/MsPacman-v5``: 0.25)."""
    noop_max: int | None = None
    """Maximum random no-ops at reset; ``None``: 30 for nature (rl-zoo3), 0 for poster."""
    terminal_on_life_loss: bool | None = None
    """Signal episode end to the learner on a life loss; ``None``: True for nature, False for poster."""
    reward_transform: str | None = None
    """Training reward: ``sign`` (nature default), ``scale`` (divide by ``reward_scale``; poster
    default) or ``none``. Episode statistics always use the raw score."""
    reward_scale: float = 100.0
    """Divisor for ``reward_transform="scale"`` (the poster divides rewards by 100)."""
    max_episode_frames: int = 108_000
    """Truncate a game after this many emulator frames (ALE default, 27,000 agent steps)."""
    game: str = DEFAULT_GAME
    """The ALE game (an ale-py ROM name: ``ms_pacman``, ``breakout``, ``pong``, ...)."""
    fire_reset: bool | None = None
    """Press FIRE at reset in games that have it (Breakout; Ms. Pac-Man has none); ``None``: on
    for nature (rl-zoo3's ``AtariWrapper``), off for poster (plain ``ALE/<Game>-v5``)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise RlsaeError(
                f"unknown observation mode {self.mode!r}; use one of {', '.join(MODES)}"
            )
        if self.noop_max is None:
            self.noop_max = 30 if self.mode == "nature" else 0
        if self.terminal_on_life_loss is None:
            self.terminal_on_life_loss = self.mode == "nature"
        if self.reward_transform is None:
            self.reward_transform = "sign" if self.mode == "nature" else "scale"
        if self.fire_reset is None:
            self.fire_reset = self.mode == "nature"

    def validate(self, where: str = "env") -> None:
        """Refuse values the emulator cannot use (one-line :class:`RlsaeError`)."""
        check_choice(where, "mode", self.mode, MODES)
        check_game(where, self.game)
        check_int(where, "frameskip", self.frameskip, 1)
        _check_prob(where, "repeat_action_probability", self.repeat_action_probability)
        check_int(where, "noop_max", self.noop_max, 0)
        check_choice(where, "reward_transform", self.reward_transform, REWARD_TRANSFORMS)
        check_range(where, "reward_scale", self.reward_scale, 0.0, lo_open=True)
        check_int(where, "max_episode_frames", self.max_episode_frames, 1)
        if not isinstance(self.fire_reset, bool):
            raise RlsaeError(
                f"{where}: fire_reset: expected true or false, got {describe(self.fire_reset)}"
            )

    @property
    def env_id(self) -> str:
        """The gymnasium id whose settings this follows (``ALE/MsPacman-v5``)."""
        return env_id_of(self.game)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def ale_kwargs(self, *, rgb_screen: bool = False) -> dict[str, Any]:
        """Keyword arguments for ``ale_py.vector_env.AtariVectorEnv`` (without game/num_envs;
        the game is :attr:`game`).

        ``rgb_screen`` gives the full RGB screen (last frame, no max-pool) with the same emulator
        dynamics (same seeds, no-ops and sticky actions): replay uses it to draw nature episodes.
        """
        kw: dict[str, Any] = dict(
            frameskip=self.frameskip,
            repeat_action_probability=self.repeat_action_probability,
            noop_max=self.noop_max,
            max_num_frames_per_episode=self.max_episode_frames,
            reward_clipping=False,
            episodic_life=False,
            use_fire_reset=bool(self.fire_reset),
            full_action_space=False,
        )
        if self.mode == "poster" or rgb_screen:
            kw.update(img_height=210, img_width=160, grayscale=False, stack_num=1, maxpool=False)
        else:
            kw.update(img_height=84, img_width=84, grayscale=True, stack_num=4, maxpool=True)
        return kw

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return (3, 210, 160) if self.mode == "poster" else (4, 84, 84)


@dataclass
class DQNConfig:
    """SB3 ``DQN`` hyperparameters (defaults per arch from :func:`default_config`)."""

    learning_rate: float = 1e-4
    """Adam learning rate."""
    buffer_size: int = 100_000
    """Replay buffer capacity in transitions."""
    learning_starts: int = 100_000
    """Env steps of random play before the first gradient step."""
    batch_size: int = 32
    """Transitions per gradient step."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 1.0
    """Target update coefficient (1.0 = hard sync)."""
    train_freq: int = 4
    """Env steps (per env) between gradient updates."""
    gradient_steps: int = 1
    """Gradient steps per update."""
    target_update_interval: int = 1000
    """Env steps between target-network syncs."""
    exploration_fraction: float = 0.1
    """Fraction of training over which epsilon decays linearly."""
    exploration_initial_eps: float = 1.0
    """Epsilon at the start."""
    exploration_final_eps: float = 0.01
    """Epsilon after the decay."""
    max_grad_norm: float = 10.0
    """Gradient clipping (SB3 default)."""
    optimize_memory_usage: bool = False
    """Store each frame once in the replay buffer (halves its memory)."""
    save_replay_buffer: bool = True
    """Keep the latest replay buffer in ``resume/`` at each checkpoint, for an exact resume."""

    def validate(self, where: str = "hyperparameters") -> None:
        """Ranges SB3 needs (it fails late, with tracebacks, on most of these)."""
        check_range(where, "learning_rate", self.learning_rate, 0.0, lo_open=True)
        check_int(where, "buffer_size", self.buffer_size, 1)
        check_int(where, "learning_starts", self.learning_starts, 0)
        check_int(where, "batch_size", self.batch_size, 1)
        check_range(where, "gamma", self.gamma, 0.0, 1.0)
        check_range(where, "tau", self.tau, 0.0, 1.0, lo_open=True)
        check_int(where, "train_freq", self.train_freq, 1)
        check_int(where, "gradient_steps", self.gradient_steps, 1)
        check_int(where, "target_update_interval", self.target_update_interval, 1)
        _check_prob(where, "exploration_fraction", self.exploration_fraction)
        _check_prob(where, "exploration_initial_eps", self.exploration_initial_eps)
        _check_prob(where, "exploration_final_eps", self.exploration_final_eps)
        check_range(where, "max_grad_norm", self.max_grad_norm, 0.0, lo_open=True)
        for name in ("optimize_memory_usage", "save_replay_buffer"):
            if not isinstance(getattr(self, name), bool):
                raise RlsaeError(
                    f"{where}: {name}: expected true or false, got {describe(getattr(self, name))}"
                )


POSTER_HYPERPARAMETERS: dict[str, Any] = dict(
    learning_rate=5e-4,
    buffer_size=50_000,
    learning_starts=10_000,
    batch_size=256,
    gamma=0.98,
    target_update_interval=2000,
    exploration_fraction=0.1,
    exploration_initial_eps=0.2,
    exploration_final_eps=0.05,
    optimize_memory_usage=True,
)
"""The poster's settings where they differ from :class:`DQNConfig`'s (rl-zoo3) defaults."""


def default_config(arch: str) -> DQNConfig:
    """The documented defaults: rl-zoo3 Atari for ``nature``, the poster's for ``poster``."""
    if arch == "nature":
        return DQNConfig()
    if arch == "poster":
        return DQNConfig(**POSTER_HYPERPARAMETERS)
    raise RlsaeError(f"unknown architecture {arch!r}; use nature or poster")


DQN_FIELDS = tuple(f.name for f in fields(DQNConfig))
ENV_OVERRIDES = tuple(f.name for f in fields(EnvConfig) if f.name != "mode")


def build_configs(
    arch: str, overrides: dict[str, Any], where: str = "settings"
) -> tuple[DQNConfig, EnvConfig]:
    """Defaults for ``arch`` with ``overrides`` applied and checked (types and ranges).

    An unknown name raises an error listing the valid ones; a wrong type or value names the key:
    ``--set: learning_rate: expected a float, got 'abc'``.
    """
    if arch not in ARCHS:
        raise RlsaeError(f"unknown architecture {arch!r}; use nature or poster")
    dqn_kw: dict[str, Any] = {}
    env_kw: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in DQN_FIELDS:
            dqn_kw[key] = value
        elif key in ENV_OVERRIDES:
            env_kw[key] = value
        else:
            valid = ", ".join(sorted(DQN_FIELDS + ENV_OVERRIDES))
            raise RlsaeError(f"{where}: unknown DQN setting {key!r}; valid: {valid}")
    cfg = from_mapping(DQNConfig, {**asdict(default_config(arch)), **dqn_kw}, where)
    env = from_mapping(EnvConfig, {**env_kw, "mode": arch}, where)
    return cfg, env


@dataclass
class DQNTrainConfig:
    """One DQN training run: saved as ``train.json`` (the resume fingerprint)."""

    arch: str
    """Network and observation mode: ``nature`` (NatureCNN, 84x84x4) or ``poster`` (RGB CNN)."""
    steps: int
    """Environment steps to train for (in all)."""
    seed: int = 0
    """Seed for the network, exploration and envs."""
    n_envs: int = 1
    """Emulators stepped side by side."""
    checkpoint_every: int | None = None
    """Save a loadable agent to ``checkpoints/step_N`` every N env steps (None: no checkpoints)."""
    hyperparameters: DQNConfig = field(default_factory=DQNConfig)
    """SB3 ``DQN`` hyperparameters."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """Environment settings."""

    def validate(self, where: str = "dqn train") -> None:
        """The one check of a training run's settings, before anything is written."""
        check_choice(where, "arch", self.arch, ARCHS)
        check_int(where, "steps", self.steps, 1)
        check_seed(where, self.seed)
        check_n_envs(where, self.n_envs)
        if self.checkpoint_every is not None:
            check_int(where, "checkpoint_every", self.checkpoint_every, 1)
        self.hyperparameters.validate(where)
        self.env.validate(where)
        if self.env.mode != self.arch:
            raise RlsaeError(
                f"{where}: env.mode: must equal arch ({self.arch}), got {self.env.mode!r}"
            )

    def fingerprint(self) -> dict[str, Any]:
        """The settings a resume must match (the step budget and checkpoint interval may change)."""
        d = dataclasses.asdict(self)
        d.pop("steps")
        d.pop("checkpoint_every")
        return d


def train_config(
    arch: str,
    steps: int,
    *,
    seed: int = 0,
    checkpoint_every: int | None = None,
    n_envs: int = 1,
    where: str = "dqn train",
    **overrides: Any,
) -> DQNTrainConfig:
    """The validated :class:`DQNTrainConfig` of a run (``overrides`` as for
    :func:`rlsae.agents.dqn.train_dqn`: fields of :class:`DQNConfig` or :class:`EnvConfig`)."""
    hyper, env = build_configs(arch, overrides, where)
    cfg = DQNTrainConfig(
        arch=arch,
        steps=steps,
        seed=seed,
        n_envs=n_envs,
        checkpoint_every=checkpoint_every,
        hyperparameters=hyper,
        env=env,
    )
    cfg.validate(where)
    return cfg


@dataclass
class EvalConfig:
    """How an agent is evaluated: seeded episodes, epsilon-greedy."""

    episodes: int = 10
    """Episodes to play."""
    epsilon: float = 0.0
    """Probability of a random action."""
    seed: int = 0
    """Seed of the episodes and epsilon draws."""
    n_envs: int = 1
    """Emulators played side by side."""
    max_episode_steps: int | None = None
    """Cut episodes at this many steps (None: play until the game ends)."""

    def validate(self, where: str = "dqn eval") -> None:
        check_int(where, "episodes", self.episodes, 1)
        _check_prob(where, "epsilon", self.epsilon)
        check_seed(where, self.seed)
        check_n_envs(where, self.n_envs)
        if self.max_episode_steps is not None:
            check_int(where, "max_episode_steps", self.max_episode_steps, 1)


@dataclass
class SpliceConfig(EvalConfig):
    """How an SAE is spliced into an agent: the episodes each of the three variants plays."""

    episodes: int = 5
    """Episodes per variant (original, spliced, mean-ablated)."""
    layer: str | None = None
    """Layer the SAE replaces (None: the SAE's hook name)."""
    prefix: int | None = None
    """Splice the reconstruction from the SAE's first ``prefix`` latents only (a Matryoshka
    SAE's nested prefix; None: all latents). Not for TopK SAEs."""

    def validate(self, where: str = "dqn splice") -> None:
        super().validate(where)
        if self.layer is not None and (not isinstance(self.layer, str) or not self.layer):
            raise RlsaeError(f"{where}: layer: expected a layer name, got {describe(self.layer)}")
        if self.prefix is not None:
            check_int(where, "prefix", self.prefix, 1, MAX_D_SAE)


SCALE_MAX = 1e6
"""Largest steering scale (a feature set beyond a million times its maximum only overflows)."""


@dataclass
class SteerConfig(SpliceConfig):
    """Steering or ablating SAE features in play (``dqn steer``): what is set, and the episodes
    the spliced and the steered agent each play on the same seeds."""

    episodes: int = 5
    """Episodes per variant (spliced, steered)."""
    features: list[int] = field(default_factory=list)
    """The SAE features to set (several at once: ``3,17``)."""
    scale: float | None = None
    """Set each feature to ``scale`` x its maximum over the recorded store (None: ``ablate``)."""
    ablate: bool = False
    """Set the features to zero instead of scaling them."""
    relative: bool = False
    """Scale each feature's own activation in each state instead of its maximum (``scale`` 1:
    no change)."""
    bootstrap: int = 1000
    """Bootstrap resamples of the paired per-episode return differences (95% CI)."""

    def validate(self, where: str = "dqn steer") -> None:
        super().validate(where)
        if self.prefix is not None:
            raise RlsaeError(f"{where}: prefix: a splice setting; steer splices every latent")
        if not isinstance(self.features, list) or not self.features:
            raise RlsaeError(f"{where}: features: give at least one feature index")
        for f in self.features:
            check_int(where, "features", f, 0)
        if len(set(self.features)) != len(self.features):
            raise RlsaeError(f"{where}: features: each feature once, got {self.features}")
        check_int(where, "bootstrap", self.bootstrap, 1, 1_000_000)
        if self.scale is not None:
            check_range(where, "scale", self.scale, -SCALE_MAX, SCALE_MAX)
        if (self.scale is None) == (not self.ablate):
            raise RlsaeError(f"{where}: give either a scale or ablate, not both or neither")
        if self.relative and self.ablate:
            raise RlsaeError(f"{where}: relative scales a feature's own value; not with ablate")


SALIENCY_METHODS = ("ig", "gxi")
SALIENCY_BASELINES = ("black", "mean")


@dataclass
class SaliencyConfig:
    """How a feature's saliency on a recorded state is computed (``dqn saliency``)."""

    method: str = "ig"
    """``ig`` (integrated gradients) or ``gxi`` (gradient x input)."""
    baseline: str = "black"
    """Integrated gradients' starting frame: ``black`` or ``mean`` (the episode's mean frame)."""
    steps: int = 64
    """Integrated gradients' path points (midpoint rule)."""

    def validate(self, where: str = "dqn saliency") -> None:
        check_choice(where, "method", self.method, SALIENCY_METHODS)
        check_choice(where, "baseline", self.baseline, SALIENCY_BASELINES)
        check_int(where, "steps", self.steps, 1, 100_000)


@dataclass
class RecordConfig:
    """Settings of one recording (saved in ``meta.json`` ``extra`` and ``episodes.json``)."""

    layer: str = "fc1"
    """Hookable layer to record (``dqn layers`` lists them)."""
    steps: int = 10_000
    """Rows (agent steps) to record in all."""
    epsilon: float = 0.2
    """Probability of a random action (the poster surveyed at 0.2)."""
    seed: int = 0
    """Seeds the episodes (``episode_seed(seed, i)``) and the epsilon draws."""
    n_envs: int = 4
    """Emulators played side by side (batched forward passes)."""
    dtype: str = "float32"
    """Activation dtype in the store (float32 or float16)."""
    max_episode_steps: int | None = None
    """Cut episodes at this many steps (None: play until the game ends)."""

    def validate(self, where: str = "dqn record") -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise RlsaeError(f"{where}: layer: expected a layer name, got {describe(self.layer)}")
        check_int(where, "steps", self.steps, 1)
        _check_prob(where, "epsilon", self.epsilon)
        check_seed(where, self.seed)
        check_n_envs(where, self.n_envs)
        check_choice(where, "dtype", self.dtype, DTYPES)
        if self.max_episode_steps is not None:
            check_int(where, "max_episode_steps", self.max_episode_steps, 1)
