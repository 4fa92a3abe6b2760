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
from pathlib import Path
from typing import Any

import numpy as np

from rlsae.agents.envs import AleVecEnv, EnvConfig, obs_hash, rgb_frame
from rlsae.errors import RlsaeError
from rlsae.fsutil import read_json


def read_episodes(store_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``episodes.json`` of an atari activation store."""
    path = Path(store_dir) / "episodes.json"
    if not path.is_file():
        raise RlsaeError(f"{path} not found; replay needs a store written by `rlsae dqn record`")
    doc = read_json(path)
    if not isinstance(doc, dict) or "env" not in doc or "episodes" not in doc:
        raise RlsaeError(f"{path} is not an episodes file (needs 'env' and 'episodes')")
    return doc


def _episode(doc: dict[str, Any], episode: int) -> dict[str, Any]:
    for e in doc["episodes"]:
        if int(e["episode"]) == int(episode):
            return e
    ids = [int(e["episode"]) for e in doc["episodes"]]
    raise RlsaeError(f"episode {episode} not in the recording (episodes {min(ids)}..{max(ids)})")


def replay_episode(
    store_dir: str | os.PathLike | None = None,
    episode: int = 0,
    *,
    doc: dict[str, Any] | None = None,
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
    ep = _episode(doc, episode)
    actions = [int(a) for a in ep["actions"]]
    last = len(actions) if until is None else min(int(until), len(actions))
    cfg = EnvConfig.from_dict(doc["env"])
    env = AleVecEnv(cfg, 1, seed=None, autoreset=False)
    screen_env = None
    if rgb and cfg.mode != "poster":
        screen_env = AleVecEnv(cfg, 1, seed=None, autoreset=False, rgb_screen=True)
    try:
        obs = env.reset_with_seeds([int(ep["seed"])])
        screen = None
        if screen_env is not None:
            screen = screen_env.reset_with_seeds([int(ep["seed"])])
        for t in range(last + 1):
            o = obs[0]
            frame = None
            if rgb:
                frame = rgb_frame(o) if screen_env is None else rgb_frame(screen[0])
            yield t, o, frame
            if t == last:
                break
            a = np.array([actions[t]], dtype=np.int64)
            obs, _, _, _ = env.step(a)
            if screen_env is not None:
                screen, _, _, _ = screen_env.step(a)
    finally:
        env.close()
        if screen_env is not None:
            screen_env.close()


def replay_frames(store_dir: str | os.PathLike, episode: int, steps: list[int]) -> list[np.ndarray]:
    """RGB screens (210, 160, 3) uint8 of a recorded episode at the given steps, in that order."""
    return _replay(store_dir, episode, steps, observations=False)


def replay_observations(
    store_dir: str | os.PathLike, episode: int, steps: list[int]
) -> list[np.ndarray]:
    """The agent's observations (poster: (3, 210, 160); nature: (4, 84, 84)) at the given steps."""
    return _replay(store_dir, episode, steps, observations=True)


def _replay(store_dir, episode: int, steps: list[int], observations: bool) -> list[np.ndarray]:
    doc = read_episodes(store_dir)
    n = len(_episode(doc, episode)["actions"])
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
            got[t] = obs if observations else frame
    return [got[s] for s in wanted]


def replay_clip(
    store_dir: str | os.PathLike, episode: int, step: int, *, before: int = 8, after: int = 8
) -> tuple[list[int], list[np.ndarray]]:
    """The steps and RGB screens around ``step`` (clipped to the recorded episode)."""
    doc = read_episodes(store_dir)
    n = len(_episode(doc, episode)["actions"])
    if not 0 <= step <= n:
        raise RlsaeError(f"episode {episode} has steps 0..{n}; cannot replay step {step}")
    steps = list(range(max(0, step - before), min(n, step + after) + 1))
    return steps, replay_frames(store_dir, episode, steps)


def verify_replay(store_dir: str | os.PathLike, episode: int | None = None) -> dict[str, Any]:
    """Replay recorded episodes and compare each observation's hash with ``context.parquet``.

    Returns ``{"checked": n_steps, "mismatches": [(episode, step), ...]}``.
    """
    import pandas as pd

    path = Path(store_dir) / "context.parquet"
    if not path.is_file():
        raise RlsaeError(f"{path} not found")
    ctx = pd.read_parquet(path, columns=["episode", "step", "obs_hash"])
    doc = read_episodes(store_dir)
    eps = sorted(ctx["episode"].unique()) if episode is None else [episode]
    checked, mismatches = 0, []
    for e in eps:
        rec = ctx[ctx["episode"] == e].set_index("step")["obs_hash"]
        for t, obs, _ in replay_episode(doc=doc, episode=int(e), rgb=False):
            if t not in rec.index:  # the state after the last recorded action
                continue
            checked += 1
            if rec.get(t) != obs_hash(obs):
                mismatches.append((int(e), int(t)))
    return {"checked": checked, "mismatches": mismatches}
