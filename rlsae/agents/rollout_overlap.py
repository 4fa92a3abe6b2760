"""Double-buffered play (``rollout.OVERLAP_ENVS``): one half of the emulators steps while the
network runs on the other half's observations.

The next observation of an env needs this step's action, so on the plain path the emulators
wait for the forward pass and the forward pass for the emulators. Here the envs are split into
two groups, each env its own one-env ``AtariVectorEnv`` (:mod:`rlsae.agents.env_row`; ale-py
steps it in its C++ thread, without the GIL, between ``send`` and ``recv``), and the main thread
alternates: the forward pass of group 0 while group 1's emulators step, then the forward pass of
group 1 while group 0's step. A restarted episode starts on a spare emulator reset ahead of time
with its seed (``rollout.SPARE_ENVS``), so the play does not wait for the ROM reload.

The play is the plain path's, step for step: every global step ``k`` still plays all active envs
once, in env order (group 0 holds the lower env indices, so its rows come first); the
epsilon-greedy draws are made once per step for all its active envs, in the plain path's order;
a finished episode's env gets the next episode in env order (group 0's finished envs before
group 1's, as on the plain path); the step budget (``max_total_steps``) keeps the same
earliest-started episodes (when it might cut the next step, that step is played without
overlap, so every row the policy sees is a row played). Each step is yielded as one
:class:`StepBatch` in env order, one step late: step ``k - 1`` is handed to the consumer once
group 0's emulators are stepping ``k`` (with ``ram``, later still while the lockstep emulators,
in their own process, catch up: up to :data:`MAX_LAG_STEPS` steps). What differs is only the
forward pass's batch (each group's active envs, not all of them): the plain path with
``rollout.SPLIT_FORWARD`` makes the same calls and gives bit-identical results
(``tests/agents/test_play_overlap.py``, ``tests/agents/test_play_speed.py``).

The policy is called once per group and step; what it passes along (``extra``) must be None or
one array row per observation (the two groups' rows are concatenated).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rlsae.agents.env_row import EnvRow, SparePool, reset_one
from rlsae.agents.envs import AleVecEnv
from rlsae.agents.ram_emulator import (
    LockstepRams,
    RamProcess,
    give_back_ram_process,
    take_ram_process,
)


@dataclass
class StepBatch:
    """One env step of the active envs (arrays are aligned, length = number of active envs)."""

    env_index: np.ndarray
    episode: np.ndarray
    episode_seed: np.ndarray
    step: np.ndarray
    obs: np.ndarray
    """The observations the actions were chosen on."""
    action: np.ndarray
    greedy_action: np.ndarray
    q: np.ndarray
    extra: Any
    reward: np.ndarray
    """Raw game score received for the action."""
    episode_end: np.ndarray
    """True where this step ended the episode (game over, truncation or the step cap)."""
    noops: np.ndarray
    """The one-frame no-ops the episode's reset played (``AleVecEnv.noops``; 0 unless the env
    draws them): with its seed and actions, what replays the episode in the emulator."""
    ram: np.ndarray | None = None
    """(n, 128) uint8 ALE RAM of the states the actions were chosen on (``play(ram=True)``)."""


Policy = Callable[[np.ndarray], tuple[np.ndarray, Any]]
"""obs (n, C, H, W) uint8 -> (Q-values (n, actions), anything to pass along, e.g. activations)."""


class Slots(Protocol):
    """Which episode each env plays (``rollout._Slots``)."""

    ep: np.ndarray
    ep_seed: np.ndarray
    ep_step: np.ndarray
    active: np.ndarray
    next_episode: int

    def seed_of(self, episode: int) -> int | None: ...
    def first_seeds(self) -> list[int]: ...
    def next_episodes(self, finished: np.ndarray) -> tuple[list[int], list[int]]: ...
    def keep_earliest(self, n: int) -> None: ...


def concat_extra(parts: list[Any]) -> Any:
    """The groups' ``extra`` as one: None, or their rows concatenated."""
    if all(p is None for p in parts):
        return None
    if all(isinstance(p, np.ndarray) for p in parts):
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
    raise TypeError(
        "a policy played in groups must pass along None or one array row per observation, got "
        + ", ".join(type(p).__name__ for p in parts)
    )


def epsilon_draws(
    rng: np.random.Generator, n: int, epsilon: float, n_actions: int
) -> tuple[np.ndarray, np.ndarray]:
    """One step's epsilon-greedy draws for ``n`` envs, in the one order both play paths use:
    (explore, random actions); an env plays its random action where ``explore``."""
    explore = rng.random(n) < epsilon
    return explore, rng.integers(0, n_actions, n)  # the game's actions (Ms. Pac-Man: 9)


def step_outcome(
    infos: Any, local: np.ndarray, idx: np.ndarray, slots: Slots, max_episode_steps: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(raw rewards, episode ends) of envs ``idx`` (``local``: their places in ``infos``) after
    a step, whose episodes' step counts it advances (``max_episode_steps`` ends them too)."""
    reward = np.array([infos[i]["raw_reward"] for i in local], dtype=np.float32)
    end = np.array([infos[i]["game_over"] for i in local], dtype=bool)
    slots.ep_step[idx] += 1
    if max_episode_steps is not None:
        end |= slots.ep_step[idx] >= max_episode_steps
    return reward, end


def group_sizes(n_envs: int) -> list[int]:
    """The two groups' sizes (``n_envs`` >= 2; group 0 takes the odd env)."""
    if n_envs < 2:
        raise ValueError("playing in groups needs at least 2 envs")
    return [n_envs - n_envs // 2, n_envs // 2]


class RamDriver:
    """The lockstep RAM emulators (:class:`LockstepRams`) of one play, in the order of the calls:
    in the calling thread (the plain path), or with ``process`` in a
    :class:`~rlsae.agents.ram_emulator.RamProcess` beside it (ale-py's ``loadROM`` and ``act``
    hold the GIL, so a thread would stall the forward pass). Each env's calls keep their order,
    so its RAM is the same either way; a reward mismatch is raised by the next :meth:`get`."""

    def __init__(self, n_envs: int, process: bool, **settings: Any) -> None:
        kw = {"n_envs": n_envs, **settings}
        self.proc: RamProcess | None = None
        self.rams: LockstepRams | None = None
        if process:
            self.proc = take_ram_process()
            self.proc.tell("new", kw)
        else:
            self.rams = LockstepRams(**kw)
        self.next_ram: int | np.ndarray | None = None

    def load(self, envs: Any, seeds: Any) -> None:
        """The ROM loads of a reset (before the vector env's reset says the no-ops)."""
        if self.proc is not None:
            self.proc.tell("load", _ints(envs), _ints(seeds))
        else:
            assert self.rams is not None
            self.rams.load(envs, seeds)

    def play_noops(self, envs: Any, noops: Any) -> None:
        if self.proc is not None:
            self.proc.tell("noops", _ints(envs), _ints(noops))
        else:
            assert self.rams is not None
            self.rams.play_noops(envs, noops)

    def reset(self, envs: Any, seeds: Any, noops: Any) -> None:
        self.load(envs, seeds)
        self.play_noops(envs, noops)

    def step(self, envs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        if self.proc is not None:
            self.proc.tell("step", _ints(envs), _ints(actions), np.asarray(rewards).tolist())
        else:
            assert self.rams is not None
            self.rams.step(envs, actions, rewards)

    def read(self, envs: np.ndarray) -> int | np.ndarray:
        """The RAM of ``envs`` once the calls before have run (a handle for :meth:`get`)."""
        if self.proc is not None:
            return self.proc.ask("ram", _ints(envs))
        assert self.rams is not None
        return self.rams.ram(envs)

    def ready(self, handle: int | np.ndarray) -> bool:
        """Whether :meth:`get` would not wait."""
        return isinstance(handle, np.ndarray) or self.proc is None or self.proc.ready(handle)

    def get(self, handle: int | np.ndarray) -> np.ndarray:
        """What :meth:`read` returned (waits for it; raises the errors of the calls before)."""
        if isinstance(handle, np.ndarray):
            return handle
        assert self.proc is not None
        return np.asarray(self.proc.get(handle))

    def read_ahead(self, envs: np.ndarray) -> None:
        """:meth:`read` kept for :meth:`ram` (the plain path)."""
        self.next_ram = self.read(envs) if len(envs) else None

    def ram(self) -> np.ndarray:
        """The RAM read by the last :meth:`read_ahead`."""
        assert self.next_ram is not None
        return self.get(self.next_ram)

    def finish(self) -> None:
        """Wait for every call so far; raises the first failure."""
        if self.proc is not None:
            self.proc.get(self.proc.ask("sync"))

    def close(self) -> None:
        """Give the process back for the next play (kept only if every reply was read)."""
        if self.proc is not None:
            give_back_ram_process(self.proc)
            self.proc = None


def _ints(a: Any) -> list[int]:
    return [int(x) for x in np.asarray(a).reshape(-1)]


@dataclass
class _Half:
    """One group's part of one step: decided (the rows, the actions), then completed (the
    rewards and episode ends, after the group's ``recv``)."""

    idx: np.ndarray
    episode: np.ndarray
    episode_seed: np.ndarray
    step: np.ndarray
    obs: np.ndarray
    action: np.ndarray
    greedy: np.ndarray
    q: np.ndarray
    extra: Any
    noops: np.ndarray
    reward: np.ndarray | None = None
    end: np.ndarray | None = None


class _Group:
    """One group's emulators (:class:`~rlsae.agents.env_row.EnvRow`), its envs' global indices
    ``lo .. lo + n - 1``, the observations its next step acts on, and the step in flight."""

    def __init__(self, row: EnvRow, lo: int) -> None:
        self.row, self.lo, self.n = row, lo, row.num_envs
        self.obs: np.ndarray = row.obs()
        self.sent: _Half | None = None

    def active(self, slots: Slots) -> np.ndarray:
        return self.lo + np.flatnonzero(slots.active[self.lo : self.lo + self.n])


@dataclass
class _Step:
    halves: list[_Half]
    ram: Any = None

    def batch(self, rams: RamDriver | None) -> StepBatch:
        h = self.halves

        def cat(name: str) -> np.ndarray:
            parts = [getattr(x, name) for x in h]
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

        return StepBatch(
            env_index=cat("idx"),
            episode=cat("episode"),
            episode_seed=cat("episode_seed"),
            step=cat("step"),
            obs=cat("obs"),
            action=cat("action"),
            greedy_action=cat("greedy"),
            q=cat("q"),
            extra=concat_extra([x.extra for x in h]),
            reward=cat("reward"),
            episode_end=cat("end"),
            noops=cat("noops"),
            ram=None if rams is None or self.ram is None else rams.get(self.ram),
        )


MAX_LAG_STEPS = 64
"""Played steps kept waiting for the lockstep emulators' RAM before the play waits for them."""


class GroupPlay:
    """The double-buffered loop over two groups (see the module docstring); :meth:`run`
    yields the step batches. ``take_env()`` gives an idle or new one-env vector env; ``spares``
    emulators are reset ahead for the next episodes (:class:`~rlsae.agents.env_row.SparePool`;
    0: a finished env is reset in place, and the play waits for it)."""

    def __init__(
        self,
        take_env: Callable[[], AleVecEnv],
        n_envs: int,
        policy: Policy,
        slots: Slots,
        rng: np.random.Generator,
        epsilon: float,
        max_total_steps: int | None,
        max_episode_steps: int | None,
        rams: RamDriver | None,
        spares: int = 0,
    ) -> None:
        self.take_env, self.n_envs, self.policy = take_env, n_envs, policy
        self.slots, self.rng, self.epsilon = slots, rng, epsilon
        self.max_total_steps, self.max_episode_steps, self.rams = (
            max_total_steps, max_episode_steps, rams,
        )  # fmt: skip
        self.groups: list[_Group] = []
        self.loose: list[AleVecEnv] = []
        """Emulators taken and not (yet) in a group (while :meth:`start` builds them)."""
        self.threads = ThreadPoolExecutor(2, thread_name_prefix="rlsae-reset")
        self.spares = None if spares <= 0 else SparePool(
            take_env, slots.seed_of, lambda: slots.next_episode, spares, self.threads
        )  # fmt: skip
        self.total = 0
        self.done: deque[_Step] = deque()
        """Played steps not yet yielded (waiting for their RAM)."""

    # -- the emulators ---------------------------------------------------------------------------
    def start(self) -> None:
        """Take the emulators and reset every env with its episode's seed: each reset runs in a
        thread (ale-py releases the GIL) while the next emulator is built, and the lockstep
        emulators load their ROMs in their process meanwhile."""
        slots = self.slots
        seeds = slots.first_seeds()
        on = np.flatnonzero(slots.active)
        if self.rams is not None:
            self.rams.load(on, slots.ep_seed[on])
        resets = []
        for s in seeds:
            self.loose.append(self.take_env())
            resets.append(self.threads.submit(reset_one, self.loose[-1], s))
        obs = [f.result() for f in resets]
        lo = 0
        for size in group_sizes(self.n_envs):
            self.groups.append(_Group(EnvRow(self.loose[lo : lo + size], obs[lo : lo + size]), lo))
            lo += size
        self.loose = []
        if self.rams is not None:
            self.rams.play_noops(on, self._noops(on))

    def _noops(self, envs: np.ndarray) -> np.ndarray:
        noops = np.concatenate([g.row.noops for g in self.groups])
        return noops[envs]

    def drain(self) -> None:
        """Receive every step in flight (the envs are then whole, to keep or close)."""
        for g in self.groups:
            g.row.drain()
            g.sent = None

    def release(self, give: Callable[[AleVecEnv], None]) -> None:
        """Hand every emulator of the play to ``give`` (to keep or close; a spare whose reset
        failed is closed), once the resets in flight have ended."""
        whole, broken = self.spares.envs() if self.spares is not None else ([], [])
        self.threads.shutdown(wait=True)
        for env in [e for g in self.groups for e in g.row.envs] + self.loose + whole:
            give(env)
        for env in broken:
            env.close()
        self.groups, self.loose = [], []

    # -- one group ---------------------------------------------------------------------------
    def _decide(self, g: _Group, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        """The policy on group ``g``'s envs ``idx``: (their observations, Q, extra)."""
        local = idx - g.lo
        # every env step and reset returns new arrays: all-active groups need no copy
        sel = g.obs if len(local) == g.n else g.obs[local]
        q, extra = self.policy(sel)
        return sel, np.asarray(q), extra

    def _send(self, g: _Group, half: _Half) -> None:
        g.row.send(half.idx - g.lo, half.action)
        g.sent = half

    def _complete(self, g: _Group, last: bool) -> None:
        """Receive group ``g``'s step in flight: its rewards and episode ends, the lockstep
        emulators' step, and (unless it was the last step) its finished envs' next episodes."""
        half, slots = g.sent, self.slots
        assert half is not None
        infos = g.row.recv()
        g.sent = None
        half.reward, end = step_outcome(
            infos, half.idx - g.lo, half.idx, slots, self.max_episode_steps
        )
        if self.rams is not None:
            self.rams.step(half.idx, half.action, half.reward)
        half.end = end
        if not last:
            restart, seeds = slots.next_episodes(half.idx[end])
            if restart:
                if self.rams is not None:
                    self.rams.load(restart, seeds)
                self._restart(g, restart, seeds)
                if self.rams is not None:
                    r = np.array(restart)
                    self.rams.play_noops(r, g.row.noops[r - g.lo])
        g.obs = g.row.obs()

    def _restart(self, g: _Group, restart: list[int], seeds: list[int]) -> None:
        """Start the episodes handed to envs ``restart`` of group ``g``: on the spares reset for
        them (the finished emulators become spares), or by resetting the finished emulators
        themselves (in parallel) where no spare holds the episode."""
        in_place = []
        for i, seed in zip(restart, seeds, strict=True):
            got = None if self.spares is None else self.spares.take(int(self.slots.ep[i]))
            if got is None:
                in_place.append(
                    (i - g.lo, self.threads.submit(reset_one, g.row.envs[i - g.lo], seed))
                )
            else:
                assert self.spares is not None
                self.spares.give(g.row.swap(i - g.lo, *got))
        for j, fut in in_place:
            g.row.latest[j] = fut.result()
        if self.spares is not None:
            self.spares.fill()

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> Iterator[StepBatch]:
        """Play until no env is active or the budget is spent (after :meth:`start`)."""
        slots = self.slots
        g0, g1 = self.groups
        prev: _Step | None = None
        while True:
            if self._might_cut(g0, g1):  # settle group 1 before group 0's forward pass
                self._complete(g1, last=False)
            if g1.sent is None:  # every env settled: the budget rule now, as the plain path
                self._cut()
            idx0 = g0.active(slots)
            dec0 = self._decide(g0, idx0) if len(idx0) else None
            if g1.sent is not None:
                self._complete(g1, last=False)
                self._cut()
                if len(g0.active(slots)) != len(idx0):  # cannot happen: _might_cut settled it
                    raise AssertionError("the step budget cut group 0 after its forward pass")
            idx = np.flatnonzero(slots.active)
            if not len(idx):
                if prev is not None:
                    self.done.append(prev)
                yield from self._flush(everything=True)
                return
            self.total += len(idx)
            last = self.max_total_steps is not None and self.total >= self.max_total_steps
            draws: tuple[np.ndarray, np.ndarray] | None = None
            ram = None if self.rams is None else self.rams.read(idx)
            halves: list[_Half] = []
            n0 = len(idx0)
            if dec0 is not None:
                draws = self._draw(len(idx), dec0[1].shape[1])
                h0 = self._half(g0, idx0, dec0, draws, 0)
                self._send(g0, h0)
                halves.append(h0)
            if prev is not None:  # handed over while group 0's emulators step
                self.done.append(prev)
                prev = None
                yield from self._flush()
            idx1 = idx[n0:]
            if len(idx1):
                dec1 = self._decide(g1, idx1)
                if draws is None:
                    draws = self._draw(len(idx), dec1[1].shape[1])
                h1 = self._half(g1, idx1, dec1, draws, n0)
                self._send(g1, h1)
                halves.append(h1)
            if g0.sent is not None:
                self._complete(g0, last)
            prev = _Step(halves, ram)
            if last:
                if g1.sent is not None:
                    self._complete(g1, last=True)
                self.done.append(prev)
                yield from self._flush(everything=True)
                return

    def _flush(self, everything: bool = False) -> Iterator[StepBatch]:
        """Yield the played steps whose RAM has come (all of them with ``everything``, and the
        oldest while more than :data:`MAX_LAG_STEPS` wait): the lockstep emulators may lag
        behind the play, e.g. while they load the ROMs of the first episodes."""
        while self.done:
            head = self.done[0]
            waiting = self.rams is not None and head.ram is not None
            if waiting and not everything and len(self.done) <= MAX_LAG_STEPS:
                assert self.rams is not None
                if not self.rams.ready(head.ram):
                    return
            self.done.popleft()
            yield head.batch(self.rams)

    def _might_cut(self, g0: _Group, g1: _Group) -> bool:
        """Whether the step budget might keep fewer envs than group 0's active envs plus those
        group 1 is stepping (each of which then restarts or retires)."""
        if self.max_total_steps is None or g1.sent is None:
            return False
        left = self.max_total_steps - self.total
        return left < len(g0.active(self.slots)) + len(g1.sent.idx)

    def _cut(self) -> None:
        """The plain path's budget rule: fewer steps left than active envs keeps the earliest."""
        if self.max_total_steps is None:
            return
        left = self.max_total_steps - self.total
        if left < self.slots.active.sum():
            self.slots.keep_earliest(left)

    def _draw(self, n: int, n_actions: int) -> tuple[np.ndarray, np.ndarray]:
        """The plain path's epsilon-greedy draws for a step of ``n`` envs (``epsilon_draws``)."""
        return epsilon_draws(self.rng, n, self.epsilon, n_actions)

    def _half(
        self, g: _Group, idx: np.ndarray, dec: tuple[np.ndarray, np.ndarray, Any],
        draws: tuple[np.ndarray, np.ndarray], at: int,
    ) -> _Half:  # fmt: skip
        sel, q, extra = dec
        greedy = q.argmax(axis=1)
        explore, random_actions = (d[at : at + len(idx)] for d in draws)
        slots = self.slots
        return _Half(
            idx=idx,
            episode=slots.ep[idx].copy(),
            episode_seed=slots.ep_seed[idx].copy(),
            step=slots.ep_step[idx].copy(),
            obs=sel,
            action=np.where(explore, random_actions, greedy),
            greedy=greedy,
            q=q,
            extra=extra,
            noops=g.row.noops[idx - g.lo],
        )
