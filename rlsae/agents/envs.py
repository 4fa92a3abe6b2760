"""Atari environments (Ms. Pac-Man unless ``EnvConfig.game`` names another ale-py game): ale-py's
C++ ``AtariVectorEnv`` behind SB3's ``VecEnv`` interface.

Two observation modes:

- ``nature``: 84x84 grayscale, 4 stacked frames, max-pool over the last two frames, up to 30
  no-op starts, rewards clipped to their sign for training, a life loss ends the training
  episode (the rl-zoo3 ``AtariWrapper`` semantics). Observations are ``(4, 84, 84)`` uint8.
- ``poster``: the raw RGB screen, 210x160, no stacking, no max-pool, no no-op starts, rewards
  divided by 100 for training (the poster's set-up). Observations are ``(3, 210, 160)`` uint8.

Both follow ``ALE/MsPacman-v5`` (the game's ``-v5`` id): frameskip 4, sticky actions with
probability 0.25, the game's minimal action set (9 actions for Ms. Pac-Man). Observations are
channel-first so SB3 uses them without a transpose wrapper.

Episode statistics (``info["episode"] = {"r", "l", "t"}``) always count the raw game score of a
whole game (all lives), whatever the training reward transform, as SB3's ``Monitor`` would.

``make_reference_env`` builds SB3's own ``make_atari_env`` + ``VecFrameStack`` path with the
same settings; tests and benchmarks compare against it.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Literal

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from rlsae.agents.config import EnvConfig
from rlsae.errors import RlsaeError

Mode = Literal["nature", "poster"]
GAME = "ms_pacman"
ENV_ID = "ALE/MsPacman-v5"


@functools.lru_cache(maxsize=16)
def action_meanings(game: str = GAME) -> list[str]:
    """``game``'s minimal action set in ale-py's order (index = action id), e.g. ``NOOP``,
    ``UP``, ..., ``DOWNLEFT`` for Ms. Pac-Man."""
    import ale_py
    from ale_py import roms

    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.loadROM(str(roms.get_rom_path(game)))
    return [a.name for a in ale.getMinimalActionSet()]


def _to_channel_first(obs: np.ndarray, mode: str) -> np.ndarray:
    """ALE gives (n, stack, H, W) gray or (n, 1, H, W, 3) RGB; return (n, C, H, W)."""
    if mode == "poster":
        return np.ascontiguousarray(obs[:, 0].transpose(0, 3, 1, 2))
    return obs


def rgb_frame(obs: np.ndarray) -> np.ndarray:
    """A poster-mode observation (3, 210, 160) as an RGB image (210, 160, 3)."""
    return np.ascontiguousarray(np.asarray(obs).transpose(1, 2, 0))


def training_reward(raw: np.ndarray, cfg: EnvConfig) -> np.ndarray:
    raw = raw.astype(np.float32)
    if cfg.reward_transform == "sign":
        return np.sign(raw)
    if cfg.reward_transform == "scale":
        return raw / np.float32(cfg.reward_scale)
    return raw


class AleVecEnv(VecEnv):
    """SB3 ``VecEnv`` over ale-py's C++ ``AtariVectorEnv`` (all emulators stepped in C++ threads).

    With ``autoreset=True`` (training) finished games restart inside the same ``step`` call, the
    final observation in ``info["terminal_observation"]``, like SB3's ``DummyVecEnv``. With
    ``autoreset=False`` (evaluation, recording) the caller resets finished envs with
    :meth:`reset_envs` and chooses each episode's seed, which makes episodes replayable.
    """

    def __init__(
        self,
        cfg: EnvConfig,
        n_envs: int = 1,
        *,
        seed: int | None = 0,
        autoreset: bool = True,
        num_threads: int = 0,
        rgb_screen: bool = False,
    ) -> None:
        from ale_py.vector_env import AtariVectorEnv

        self.cfg = cfg
        self.rgb_screen = rgb_screen
        self._mode = "poster" if rgb_screen else cfg.mode
        self.ale_env = AtariVectorEnv(
            cfg.game,
            n_envs,
            autoreset_mode="SameStep" if autoreset else "NextStep",
            num_threads=num_threads,
            **cfg.ale_kwargs(rgb_screen=rgb_screen),
        )
        shape = (3, 210, 160) if self._mode == "poster" else cfg.obs_shape
        obs_space = spaces.Box(low=0, high=255, shape=shape, dtype=np.uint8)
        self.render_mode = None
        actions = self.ale_env.single_action_space  # the game's minimal action set
        assert isinstance(actions, spaces.Discrete)
        super().__init__(n_envs, obs_space, spaces.Discrete(int(actions.n)))
        self.autoreset = autoreset
        self._base_seed = seed
        self._actions: np.ndarray | None = None
        self._lives = np.zeros(n_envs, dtype=np.int64)
        self.noops = np.zeros(n_envs, dtype=np.int64)
        """Per env, the one-frame no-ops its last reset played (the reset's episode frame
        number): with the reset seed, what a lockstep emulator needs (``ram_emulator.LockstepAle``)."""
        self._ep_return = np.zeros(n_envs, dtype=np.float64)
        self._ep_len = np.zeros(n_envs, dtype=np.int64)
        self._t0 = time.time()
        self.metadata = {"render_modes": []}

    # -- resets ------------------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        if seeds is None and self._base_seed is not None:
            seeds = [self._base_seed + i for i in range(self.num_envs)]
            self._base_seed = None  # later resets continue the emulators' own RNG streams
        seed_arr = None if seeds is None else np.array([int(s or 0) for s in seeds])
        obs, info = self.ale_env.reset(seed=seed_arr)
        self._reset_seeds()
        self.noops[:] = info["episode_frame_number"]
        self._lives[:] = info["lives"]
        self._ep_return[:] = 0
        self._ep_len[:] = 0
        return _to_channel_first(obs, self._mode)

    def reset_with_seeds(self, seeds: list[int]) -> np.ndarray:
        """Reset every env, env ``i`` with ``seeds[i]`` (an episode that can be replayed)."""
        self._seeds = [int(x) for x in seeds]
        return self.reset()

    def reset_envs(self, idx: np.ndarray | list[int], seeds: np.ndarray | list[int]) -> np.ndarray:
        """Reset only the envs ``idx`` with one seed each; returns all envs' observations."""
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[np.asarray(idx, dtype=np.int64)] = True
        order = np.argsort(np.asarray(idx))
        seed_arr = np.asarray(seeds, dtype=np.int64)[order]
        obs, info = self.ale_env.reset(seed=seed_arr, options={"reset_mask": mask})
        self.noops[mask] = info["episode_frame_number"][mask]
        self._lives[mask] = info["lives"][mask]
        self._ep_return[mask] = 0
        self._ep_len[mask] = 0
        return _to_channel_first(obs, self._mode)

    # -- stepping ----------------------------------------------------------------------------
    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async must be called first"
        return self.finish_step(self.ale_env.step(self._actions))

    def finish_step(self, result: tuple) -> VecEnvStepReturn:
        """:meth:`step_wait`'s return from what ``ale_env.step`` (or ``ale_env.send`` then
        ``ale_env.recv``, to step in ale-py's threads meanwhile) returned."""
        obs, raw, terminated, truncated, info = result
        obs = _to_channel_first(obs, self._mode)
        raw = np.asarray(raw)
        self._ep_return += raw
        self._ep_len += 1
        lives = np.asarray(info["lives"])
        game_over = np.logical_or(terminated, truncated)
        dones = game_over.copy()
        life_lost = np.zeros(self.num_envs, dtype=bool)
        if self.cfg.terminal_on_life_loss:
            life_lost = (lives < self._lives) & ~game_over
            dones |= life_lost
        self._lives = lives.astype(np.int64)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        final = info.get("final_obs") if self.autoreset else None
        if final is not None:
            final = _to_channel_first(np.asarray(final), self._mode)
        for i in np.flatnonzero(dones).tolist():
            d = infos[i]
            d["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            if game_over[i]:
                d["terminal_observation"] = final[i] if final is not None else obs[i]
                d["episode"] = {
                    "r": float(self._ep_return[i]),
                    "l": int(self._ep_len[i]),
                    "t": round(time.time() - self._t0, 6),
                }
                self._ep_return[i] = 0
                self._ep_len[i] = 0
                if self.autoreset:
                    self._lives[i] = int(info["lives"][i])
            else:  # life lost: the learner sees an episode end, the game goes on
                d["terminal_observation"] = obs[i]
        for i in range(self.num_envs):
            infos[i]["raw_reward"] = float(raw[i])
            infos[i]["game_over"] = bool(game_over[i])
            infos[i]["life_lost"] = bool(life_lost[i])
        return obs, training_reward(raw, self.cfg), dones, infos

    def close(self) -> None:
        self.ale_env.close()

    # -- the rest of the VecEnv interface ------------------------------------------------------
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: VecEnvIndices = None, **kw: Any):
        return [getattr(self, method_name)(*args, **kw) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> list[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]


def make_vec_env(
    cfg: EnvConfig | str, n_envs: int = 1, *, seed: int | None = 0, autoreset: bool = True
) -> AleVecEnv:
    """Our fast path: ``AtariVectorEnv`` in C++ behind SB3's ``VecEnv``."""
    if isinstance(cfg, str):
        cfg = EnvConfig(mode=cfg)
    cfg.validate("env")
    if n_envs < 1:
        raise RlsaeError(f"n_envs must be at least 1, got {n_envs}")
    return AleVecEnv(cfg, n_envs, seed=seed, autoreset=autoreset)


def make_reference_env(cfg: EnvConfig | str, n_envs: int = 1, *, seed: int = 0) -> VecEnv:
    """SB3's own path (``make_atari_env`` + ``VecFrameStack``) with the same settings, for
    comparisons: gymnasium ``ALE/<Game>-v5`` environments stepped one by one in Python."""
    import ale_py
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    if isinstance(cfg, str):
        cfg = EnvConfig(mode=cfg)
    if cfg.mode == "nature":
        env = make_atari_env(
            cfg.env_id,
            n_envs=n_envs,
            seed=seed,
            env_kwargs=dict(
                frameskip=1,
                repeat_action_probability=cfg.repeat_action_probability,
                max_num_frames_per_episode=cfg.max_episode_frames,
            ),
            wrapper_kwargs=dict(
                noop_max=cfg.noop_max,
                frame_skip=cfg.frameskip,
                terminal_on_life_loss=bool(cfg.terminal_on_life_loss),
                clip_reward=cfg.reward_transform == "sign",
            ),
        )
        return VecFrameStack(env, n_stack=4)
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env

    return sb3_make_vec_env(
        cfg.env_id,
        n_envs=n_envs,
        seed=seed,
        env_kwargs=dict(
            frameskip=cfg.frameskip,
            repeat_action_probability=cfg.repeat_action_probability,
            max_num_frames_per_episode=cfg.max_episode_frames,
        ),
    )
