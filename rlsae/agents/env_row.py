"""A group's emulators for the double-buffered play (``rollout_overlap.GroupPlay``), each its own
one-env ``AtariVectorEnv``, and spare emulators reset ahead of time (``rollout.SPARE_ENVS``).

Every episode starts with a reset seeded with the episode's seed, and ale-py reloads the ROM
for it: ~75 ms per emulator (mostly ale-py's phosphor palette), during which the plain path and
a group's vector env wait, and with them the whole lockstep play. Here a finished episode's
emulator is swapped for a spare that was already reset, in a background thread (ale-py's reset
releases the GIL), with the seed of the episode it is handed; the finished emulator becomes a
spare and is reset with the seed of a later episode. The episodes to come and their seeds are
known in advance (the hand-out is in order: ``rollout._Slots``), so the spares hold exactly
the states a reset of the finished emulator would give: the games are the plain path's
(``tests/agents/test_play_overlap.py``). Only the active envs are stepped (retired ones sit
idle; the plain path steps them with action 0 and ignores them).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from rlsae.agents.envs import AleVecEnv


def reset_one(env: AleVecEnv, seed: int) -> np.ndarray:
    """Reset a one-env vector env with ``seed``; its observation, shape (1, C, H, W)."""
    return np.asarray(env.reset_with_seeds([int(seed)]))


class EnvRow:
    """A group's envs, env ``i`` its own one-env vector env ``envs[i]``; the subset of
    :class:`~rlsae.agents.envs.AleVecEnv` the grouped play uses, for the whole row."""

    def __init__(self, envs: list[AleVecEnv], obs: list[np.ndarray]) -> None:
        self.envs = envs
        self.latest = obs
        """Each env's last observation, shape (1, C, H, W)."""
        self.sent: list[int] = []

    @property
    def num_envs(self) -> int:
        return len(self.envs)

    @property
    def noops(self) -> np.ndarray:
        """Per env, the one-frame no-ops of its last reset (``AleVecEnv.noops``)."""
        return np.concatenate([e.noops for e in self.envs])

    def obs(self) -> np.ndarray:
        """All envs' observations, a new array (a batch handed on keeps its own)."""
        return np.concatenate(self.latest)

    def send(self, local: np.ndarray, actions: np.ndarray) -> None:
        """Start stepping envs ``local`` (in ale-py's threads), ``local[j]`` with ``actions[j]``."""
        self.sent = [int(i) for i in local]
        for i, a in zip(self.sent, np.asarray(actions, dtype=np.int64).reshape(-1, 1), strict=True):
            self.envs[i].ale_env.send(a)

    def recv(self) -> list[dict[str, Any]]:
        """Finish the step sent: each env's info (``raw_reward``, ``game_over``...; ``{}`` for
        an env not stepped); the observations are kept for :meth:`obs`."""
        infos: list[dict[str, Any]] = [{} for _ in self.envs]
        for i in self.sent:
            env = self.envs[i]
            obs, _, _, info = env.finish_step(env.ale_env.recv())
            self.latest[i] = np.asarray(obs)
            infos[i] = info[0]
        self.sent = []
        return infos

    def drain(self) -> None:
        """Receive the step in flight, if any (the envs are then whole, to keep or close)."""
        for i in self.sent:
            self.envs[i].ale_env.recv()
        self.sent = []

    def swap(self, i: int, env: AleVecEnv, obs: np.ndarray) -> AleVecEnv:
        """Put ``env`` (already reset, observing ``obs``) in place ``i``; the env it replaces."""
        old, self.envs[i], self.latest[i] = self.envs[i], env, obs
        return old


class SparePool:
    """Emulators reset ahead of time with the seeds of the next episodes to be handed out.

    ``seed_of(e)`` is episode ``e``'s seed (None: no such episode), ``next_episode()`` the next
    episode to be handed out; ``take_env()`` gives an idle or new one-env vector env; the resets
    run in ``threads``. The pool keeps up to ``size`` spares, for episodes ``next_episode() ..
    next_episode() + size - 1``; it builds its own ``size`` emulators at its first :meth:`fill`.
    """

    def __init__(
        self,
        take_env: Callable[[], AleVecEnv],
        seed_of: Callable[[int], int | None],
        next_episode: Callable[[], int],
        size: int,
        threads: ThreadPoolExecutor,
    ) -> None:
        self.take_env, self.seed_of, self.next_episode = take_env, seed_of, next_episode
        self.size, self.threads = size, threads
        self.free: list[AleVecEnv] = []
        self.ready: dict[int, tuple[AleVecEnv, Future[np.ndarray]]] = {}
        self.built = 0
        self.served = 0
        """Episodes started on a spare (for the tests and the benchmark)."""

    def take(self, episode: int) -> tuple[AleVecEnv, np.ndarray] | None:
        """The spare reset for ``episode`` and its observation (waits for its reset), or None."""
        got = self.ready.pop(episode, None)
        if got is None:
            return None
        self.served += 1
        return got[0], got[1].result()

    def give(self, env: AleVecEnv) -> None:
        """A finished emulator, to be reset for a later episode."""
        self.free.append(env)

    def fill(self) -> None:
        """Start the resets of the spares for the next episodes."""
        nxt = self.next_episode()
        for e in [e for e in self.ready if e < nxt]:  # handed out elsewhere (not in a play)
            env, fut = self.ready.pop(e)
            fut.result()
            self.free.append(env)
        for e in range(nxt, nxt + self.size):
            seed = self.seed_of(e)
            if seed is None:
                break
            if e in self.ready:
                continue
            if not self.free and self.built < self.size:
                self.free.append(self.take_env())
                self.built += 1
            if not self.free:
                break
            env = self.free.pop()
            self.ready[e] = (env, self.threads.submit(reset_one, env, seed))

    def envs(self) -> tuple[list[AleVecEnv], list[AleVecEnv]]:
        """Every emulator the pool holds, once their resets have ended (the pool is then
        empty): (whole ones, those whose reset failed)."""
        whole, broken = list(self.free), []
        for env, fut in self.ready.values():
            try:
                fut.result()
            except BaseException:  # noqa: BLE001 - the emulator is closed, not kept
                broken.append(env)
            else:
                whole.append(env)
        self.free, self.ready = [], {}
        return whole, broken
