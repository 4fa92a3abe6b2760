"""Regenerate recorded game states by replaying an episode's seed and actions in the emulator.

Nothing per step is stored but a hash: the emulator is deterministic given the episode seed
(which also seeds the sticky-action and no-op draws) and the action sequence, so any
(episode, step) of a recording can be drawn again. ``verify`` compares every replayed
observation with the recorded ``obs_hash``.

For ``poster`` recordings the observation is the RGB screen itself. For ``nature`` recordings
(84x84 gray stacks) a second emulator with the same seed and settings but full RGB output runs
in lockstep and provides the screen.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlsae.agents.envs import AleVecEnv, rgb_frame
from rlsae.agents.hashing import obs_hash
from rlsae.agents.results import EpisodeLog, read_episodes
from rlsae.errors import RlsaeError


def replay_episode(
    store_dir: str | os.PathLike | None = None,
    episode: int = 0,
    *,
    doc: EpisodeLog | None = None,
    until: int | None = None,
    rgb: bool = True,
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """Yield ``(step, observation, rgb_screen)`` for steps 0..``until`` of a recorded episode.

    Step ``t`` is the state the agent acted on at step ``t``; step ``len(actions)`` is the
    state after the last recorded action.

    ``observation`` is what the agent saw (poster: (3, 210, 160); nature: (4, 84, 84));
    ``rgb_screen`` the (210, 160, 3) screen (None with ``rgb=False``).
    """
    if doc is None:
        if store_dir is None:
            raise ValueError("give store_dir or doc")
        doc = read_episodes(store_dir)
    ep = doc.episode(episode)
    last = len(ep.actions) if until is None else min(int(until), len(ep.actions))
    cfg = doc.env
    env = _Emulator(AleVecEnv(cfg, 1, seed=None, autoreset=False), ep.seed)
    screen_env = None
    if rgb and cfg.mode != "poster":
        screen_env = _Emulator(
            AleVecEnv(cfg, 1, seed=None, autoreset=False, rgb_screen=True), ep.seed
        )
    try:
        for t in range(last + 1):
            frame = None
            if rgb:
                frame = rgb_frame(env.obs if screen_env is None else screen_env.obs)
            yield t, env.obs, frame
            if t == last:
                break
            env.step(ep.actions[t])
            if screen_env is not None:
                screen_env.step(ep.actions[t])
    finally:
        env.close()
        if screen_env is not None:
            screen_env.close()


@dataclass
class _Emulator:
    """One emulator reset with an episode's seed, stepped one action at a time."""

    env: AleVecEnv
    seed: int
    obs: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.obs = np.asarray(self.env.reset_with_seeds([int(self.seed)]))[0]

    def step(self, action: int) -> None:
        obs, _, _, _ = self.env.step(np.array([action], dtype=np.int64))
        self.obs = np.asarray(obs)[0]

    def close(self) -> None:
        self.env.close()


def replay_frames(store_dir: str | os.PathLike, episode: int, steps: list[int]) -> list[np.ndarray]:
    """RGB screens (210, 160, 3) uint8 of a recorded episode at the given steps, in that order."""
    return _replay(store_dir, episode, steps, observations=False)


def replay_observations(
    store_dir: str | os.PathLike, episode: int, steps: list[int]
) -> list[np.ndarray]:
    """The agent's observations (poster: (3, 210, 160); nature: (4, 84, 84)) at the given steps."""
    return _replay(store_dir, episode, steps, observations=True)


def _replay(
    store_dir: str | os.PathLike, episode: int, steps: list[int], observations: bool
) -> list[np.ndarray]:
    doc = read_episodes(store_dir)
    n = len(doc.episode(episode).actions)
    wanted = [int(s) for s in steps]
    bad = [s for s in wanted if not 0 <= s <= n]
    if bad:
        raise RlsaeError(f"episode {episode} has steps 0..{n}; cannot replay step {bad[0]}")
    if not wanted:
        return []
    got: dict[int, np.ndarray] = {}
    need = set(wanted)
    for t, obs, frame in replay_episode(
        doc=doc, episode=episode, until=max(wanted), rgb=not observations
    ):
        if t in need:
            shown = obs if observations else frame
            assert shown is not None  # rgb=True gives every frame
            got[t] = shown
    return [got[s] for s in wanted]


def replay_clip(
    store_dir: str | os.PathLike, episode: int, step: int, *, before: int = 8, after: int = 8
) -> tuple[list[int], list[np.ndarray]]:
    """The steps and RGB screens around ``step`` (clipped to the recorded episode)."""
    n = len(read_episodes(store_dir).episode(episode).actions)
    if not 0 <= step <= n:
        raise RlsaeError(f"episode {episode} has steps 0..{n}; cannot replay step {step}")
    steps = list(range(max(0, step - before), min(n, step + after) + 1))
    return steps, replay_frames(store_dir, episode, steps)


@dataclass
class ReplayCheck:
    """What :func:`verify_replay` found."""

    checked: int
    """Recorded steps replayed and compared."""
    mismatches: list[tuple[int, int]]
    """(episode, step) of every replayed observation whose hash differs from the recording's."""


def verify_replay(store_dir: str | os.PathLike, episode: int | None = None) -> ReplayCheck:
    """Replay recorded episodes and compare each observation's hash with ``context.parquet``."""
    import pandas as pd

    path = Path(store_dir) / "context.parquet"
    if not path.is_file():
        raise RlsaeError(f"{path} not found")
    ctx = pd.read_parquet(path, columns=["episode", "step", "obs_hash"])
    doc = read_episodes(store_dir)
    eps = sorted(ctx["episode"].unique()) if episode is None else [episode]
    checked = 0
    mismatches: list[tuple[int, int]] = []
    for e in eps:
        rec = ctx[ctx["episode"] == e].set_index("step")["obs_hash"]
        for t, obs, _ in replay_episode(doc=doc, episode=int(e), rgb=False):
            if t not in rec.index:  # the state after the last recorded action
                continue
            checked += 1
            if rec.get(t) != obs_hash(obs):
                mismatches.append((int(e), int(t)))
    return ReplayCheck(checked, mismatches)


__all__ = [
    "ReplayCheck",
    "read_episodes",
    "replay_clip",
    "replay_episode",
    "replay_frames",
    "replay_observations",
    "verify_replay",
]
