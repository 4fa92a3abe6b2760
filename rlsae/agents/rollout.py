"""Playing episodes with an agent: epsilon-greedy, seeded per episode, replayable.

Every episode gets its own seed (:func:`episode_seed`), the env is reset with it explicitly, and
the actions are chosen by a seeded generator, so the same seed gives the same episodes, and any
episode can be replayed from its seed and its action sequence (``rlsae.agents.replay``).
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from collections.abc import Iterator, Sequence

import numpy as np

from rlsae.agents.envs import AleVecEnv, EnvConfig
from rlsae.agents.results import RecordedEpisode
from rlsae.agents.rollout_overlap import (
    GroupPlay,
    Policy,
    RamDriver,
    StepBatch,
    concat_extra,
    epsilon_draws,
    group_sizes,
    step_outcome,
)

RANDOM_SCORE = 307.3
"""Ms. Pac-Man random-agent score (DQN-Zoo constants)."""
HUMAN_SCORE = 6951.6
"""Ms. Pac-Man human score (DQN-Zoo constants)."""
REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "ms_pacman": (RANDOM_SCORE, HUMAN_SCORE),
    "breakout": (1.7, 30.5),
    "pong": (-20.7, 14.6),
    "space_invaders": (148.0, 1668.7),
    "seaquest": (68.4, 42054.7),
    "qbert": (163.9, 13455.0),
    "beam_rider": (363.9, 16926.5),
    "enduro": (0.0, 860.5),
}
"""(random, human) scores per game (DQN-Zoo's ``atari_data.py``, from Mnih et al. 2015)."""


def human_normalized(score: float, game: str = "ms_pacman") -> float:
    """(score - random) / (human - random) for ``game``; NaN for a game without reference
    scores in :data:`REFERENCE_SCORES`."""
    if game not in REFERENCE_SCORES:
        return float("nan")
    random, human = REFERENCE_SCORES[game]
    return (score - random) / (human - random)


def episode_seed(seed: int, index: int) -> int:
    """The emulator seed of episode ``index`` of a run seeded ``seed`` (31-bit)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0] & 0x7FFFFFFF)


def play(
    cfg: EnvConfig,
    policy: Policy,
    *,
    seed: int,
    episodes: int | None = None,
    epsilon: float = 0.0,
    n_envs: int = 1,
    max_total_steps: int | None = None,
    max_episode_steps: int | None = None,
    ram: bool = False,
) -> Iterator[StepBatch]:
    """Play episodes 0, 1, 2, ... (seeds ``episode_seed(seed, i)``) on ``n_envs`` emulators.

    Stops after ``episodes`` episodes, or after ``max_total_steps`` steps in all (the last
    episodes then end early). Actions: greedy on the policy's Q, random with probability
    ``epsilon`` (a generator seeded by ``seed``). With ``ram`` every batch carries the
    emulators' RAM, read from lockstep emulators
    (:class:`rlsae.agents.ram_emulator.LockstepRams`).
    """
    if episodes is None and max_total_steps is None:
        raise ValueError("give episodes or max_total_steps")
    n_envs = max(1, min(n_envs, episodes or n_envs, max_total_steps or n_envs))
    rng = np.random.default_rng([int(seed), 7919])
    slots = _Slots(n_envs, seed, episodes)
    rams = None
    if ram:
        rams = RamDriver(
            n_envs, OVERLAP_RAM, game=cfg.game, frameskip=cfg.frameskip,
            repeat_action_probability=cfg.repeat_action_probability,
            max_episode_frames=cfg.max_episode_frames,
        )  # fmt: skip
    try:
        if OVERLAP_ENVS and n_envs >= 2:
            yield from _play_groups(
                cfg, policy, n_envs, slots, rng, epsilon, max_total_steps, max_episode_steps, rams
            )
        else:
            yield from _play_plain(
                cfg, policy, n_envs, slots, rng, epsilon, max_total_steps, max_episode_steps, rams
            )
    finally:
        if rams is not None:
            rams.close()


def _play_plain(
    cfg: EnvConfig,
    policy: Policy,
    n_envs: int,
    slots: _Slots,
    rng: np.random.Generator,
    epsilon: float,
    max_total_steps: int | None,
    max_episode_steps: int | None,
    rams: RamDriver | None,
) -> Iterator[StepBatch]:
    """All active envs step together: the forward pass, then the emulators, then the next."""
    env = _take_env(cfg, n_envs)
    try:
        obs = env.reset_with_seeds(slots.first_seeds())
        if rams is not None:
            on = np.flatnonzero(slots.active)
            rams.reset(on, slots.ep_seed[on], env.noops[on])
            rams.read_ahead(on)
        total = 0
        while slots.active.any():
            idx = np.flatnonzero(slots.active)
            batch, next_obs = _step(
                env, policy, obs, idx, slots, rng, epsilon, max_episode_steps, rams
            )
            total += len(idx)
            budget_left = None if max_total_steps is None else max_total_steps - total
            yield batch
            if budget_left is not None and budget_left <= 0:
                break
            restart, restart_seeds = slots.next_episodes(idx[batch.episode_end])
            if restart:
                next_obs = env.reset_envs(restart, restart_seeds)
                if rams is not None:
                    rams.reset(restart, restart_seeds, env.noops[restart])
            obs = next_obs
            if budget_left is not None and budget_left < slots.active.sum():
                slots.keep_earliest(budget_left)
            if rams is not None:
                rams.read_ahead(np.flatnonzero(slots.active))
        if rams is not None:
            rams.finish()
    except GeneratorExit:  # the consumer stopped between steps: the env is whole
        _give_back_env(env)
        raise
    except BaseException:  # failed mid-step: do not reuse it
        env.close()
        raise
    else:
        _give_back_env(env)


def _play_groups(
    cfg: EnvConfig,
    policy: Policy,
    n_envs: int,
    slots: _Slots,
    rng: np.random.Generator,
    epsilon: float,
    max_total_steps: int | None,
    max_episode_steps: int | None,
    rams: RamDriver | None,
) -> Iterator[StepBatch]:
    """:data:`OVERLAP_ENVS`: two groups of envs, double-buffered
    (:class:`rlsae.agents.rollout_overlap.GroupPlay`)."""
    gp = GroupPlay(
        lambda: _take_env(cfg, 1), n_envs, policy, slots, rng, epsilon, max_total_steps,
        max_episode_steps, rams, SPARE_ENVS,
    )  # fmt: skip
    try:
        gp.start()
        yield from gp.run()
        if rams is not None:
            rams.finish()
    except GeneratorExit:  # the consumer stopped between steps: receive the steps in flight
        gp.drain()
        gp.release(_give_back_env)
        raise
    except BaseException:  # failed mid-step: do not reuse them
        gp.release(AleVecEnv.close)
        raise
    else:
        gp.release(_give_back_env)


OVERLAP_RAM = True
"""Run the lockstep RAM emulators (``play(ram=True)``) in a helper process
(:class:`rlsae.agents.ram_emulator.RamProcess`, kept for the process's later plays) beside the
policy's forward pass and the consumer. It makes, in order, exactly the calls the plain path
makes (load the ROM with the episode's seed, play its no-ops, step with the actions taken, read
the RAM of the next step's active envs), so the RAM is the same; a reward mismatch is raised
at a later step. False: in the main thread (the plain path). (A thread does not overlap:
ale-py's ``loadROM`` and ``act`` hold the GIL, and the forward pass stalled behind them.)
"""

OVERLAP_ENVS = True
"""Play 2 or more envs as two groups, each env its own one-env vector env, double-buffered: one
group's emulators step (in ale-py's threads) while the policy runs on the other group's
observations (:mod:`rlsae.agents.rollout_overlap`, :mod:`rlsae.agents.env_row`). The same
episodes, actions and rows as the plain path; the policy sees each group's rows in its own call
(the plain path with :data:`SPLIT_FORWARD` makes the same calls). False: one vector env, all
envs stepped together (the plain path)."""

SPARE_ENVS = 2
"""With :data:`OVERLAP_ENVS`, emulators reset ahead of time with the seeds of the next episodes
(:class:`rlsae.agents.env_row.SparePool`, built at the first restart): a finished episode's env
continues on one at once, instead of the whole play waiting ~75 ms for its reset (ale-py
reloads the ROM at every seeded reset). 0: reset the finished emulator in place."""

SPLIT_FORWARD = False
"""The plain path calls the policy once per group of :data:`OVERLAP_ENVS` (the same forward
batches; a reference for the tests), not once on all active envs."""


REUSE_EMULATORS = True
"""Keep a finished :func:`play`'s emulators for the next play with the same env settings and
number of envs (in this process). Building ``AtariVectorEnv`` loads the ROM once per emulator
(~0.15 s each, mostly ale-py's phosphor palette), and :func:`play` resets every emulator with
its episode's seed before it plays (ale-py then reloads the ROM with that seed), so a reused
emulator plays exactly the episodes a new one would (``tests/agents/test_play_speed.py``).
False: a new vector env per play, closed at its end (the plain path)."""
_IDLE: dict[str, list[AleVecEnv]] = {}
"""Idle vector envs by settings (a grouped play's are one-env vector envs), oldest first."""
_IDLE_LOCK = threading.Lock()
_MAX_IDLE = 40
"""Idle emulators kept in all (a grouped play of 16 envs holds 18 one-env vector envs)."""


def _env_key(cfg: EnvConfig, n_envs: int) -> str:
    return json.dumps([n_envs, cfg.to_dict()], sort_keys=True, default=str)


def _take_env(cfg: EnvConfig, n_envs: int) -> AleVecEnv:
    """An idle vector env of these settings, or a new one."""
    if REUSE_EMULATORS:
        with _IDLE_LOCK:
            kept = _IDLE.get(_env_key(cfg, n_envs))
            env = kept.pop() if kept else None
        if env is not None:
            env.cfg = cfg
            return env
    return AleVecEnv(cfg, n_envs, seed=None, autoreset=False)


def _give_back_env(env: AleVecEnv) -> None:
    """Keep ``env`` idle for the next :func:`play` (:data:`REUSE_EMULATORS`), or close it."""
    if not REUSE_EMULATORS:
        env.close()
        return
    key = _env_key(env.cfg, env.num_envs)
    evicted: list[AleVecEnv] = []
    with _IDLE_LOCK:
        _IDLE.setdefault(key, []).append(env)
        _IDLE[key] = _IDLE.pop(key)  # the newest settings last
        while sum(len(v) for v in _IDLE.values()) > _MAX_IDLE:
            oldest = _IDLE[next(iter(_IDLE))]
            evicted.append(oldest.pop(0))
            if not oldest:
                del _IDLE[next(iter(_IDLE))]
    for e in evicted:
        e.close()


def close_idle_emulators() -> None:
    """Close the emulators :data:`REUSE_EMULATORS` keeps (also done at exit)."""
    with _IDLE_LOCK:
        envs = [e for kept in _IDLE.values() for e in kept]
        _IDLE.clear()
    for e in envs:
        e.close()


def _forget_in_child() -> None:
    """A forked child must not use (or close) the parent's emulators: their C++ threads stayed in
    the parent. They are kept referenced, never destroyed, in the child."""
    global _IDLE_LOCK
    _IDLE_LOCK = threading.Lock()
    _ORPHANS.extend(e for kept in _IDLE.values() for e in kept)
    _IDLE.clear()


_ORPHANS: list[AleVecEnv] = []
atexit.register(close_idle_emulators)
os.register_at_fork(after_in_child=_forget_in_child)


class _Slots:
    """Which episode each emulator plays (its index, seed and step); hands out 0, 1, 2, ..."""

    def __init__(self, n_envs: int, seed: int, episodes: int | None) -> None:
        self.seed, self.episodes, self.next_episode = seed, episodes, 0
        self.ep = np.full(n_envs, -1, dtype=np.int64)
        self.ep_seed = np.zeros(n_envs, dtype=np.int64)
        self.ep_step = np.zeros(n_envs, dtype=np.int64)
        self.active = np.zeros(n_envs, dtype=bool)

    def _more(self) -> bool:
        return self.episodes is None or self.next_episode < self.episodes

    def seed_of(self, episode: int) -> int | None:
        """The seed of episode ``episode`` (None past the episode limit)."""
        if self.episodes is not None and episode >= self.episodes:
            return None
        return episode_seed(self.seed, episode)

    def _start(self, i: int) -> None:
        self.ep[i], self.ep_seed[i] = self.next_episode, episode_seed(self.seed, self.next_episode)
        self.ep_step[i], self.active[i] = 0, True
        self.next_episode += 1

    def first_seeds(self) -> list[int]:
        """Start an episode on each emulator (while episodes are left); the reset seeds."""
        for i in range(len(self.ep)):
            if self._more():
                self._start(i)
        return [int(s) if a else 0 for s, a in zip(self.ep_seed, self.active, strict=True)]

    def next_episodes(self, finished: np.ndarray) -> tuple[list[int], list[int]]:
        """Start the next episode on each finished emulator, or retire it; (envs, seeds)."""
        restart, seeds = [], []
        for i in finished.tolist():
            if self._more():
                self._start(i)
                restart.append(i)
                seeds.append(int(self.ep_seed[i]))
            else:
                self.active[i] = False
        return restart, seeds

    def keep_earliest(self, n: int) -> None:
        """Fewer steps left than active envs: keep the ``n`` earliest-started episodes."""
        keep = np.flatnonzero(self.active)[np.argsort(self.ep[self.active])][:n]
        self.active[:] = False
        self.active[keep] = True


def _step(
    env: AleVecEnv,
    policy: Policy,
    obs: np.ndarray,
    idx: np.ndarray,
    slots: _Slots,
    rng: np.random.Generator,
    epsilon: float,
    max_episode_steps: int | None,
    rams: RamDriver | None = None,
) -> tuple[StepBatch, np.ndarray]:
    """One epsilon-greedy step of the active envs ``idx``: the batch and the next observations."""
    # every env step and reset returns new arrays, so all-active steps need no copy of the frames
    sel = obs if len(idx) == len(obs) else obs[idx]
    if SPLIT_FORWARD and env.num_envs >= 2:  # the forward batches of OVERLAP_ENVS' groups
        parts = np.split(np.arange(len(idx)), [int(np.sum(idx < group_sizes(env.num_envs)[0]))])
        calls = [policy(sel[p]) for p in parts if len(p)]
        q = np.concatenate([np.asarray(c[0]) for c in calls])
        extra = concat_extra([c[1] for c in calls])
    else:
        q, extra = policy(sel)
    q = np.asarray(q)
    greedy = q.argmax(axis=1)
    explore, random_actions = epsilon_draws(rng, len(idx), epsilon, q.shape[1])
    action = np.where(explore, random_actions, greedy)
    full = np.zeros(env.num_envs, dtype=np.int64)
    full[idx] = action
    ram = None if rams is None else rams.ram()
    noops = env.noops[idx]  # the episodes' resets', read before the step (a new array)
    next_obs, _, _, infos = env.step(full)
    raw, end = step_outcome(infos, idx, idx, slots, max_episode_steps)
    if rams is not None:
        rams.step(idx, action, raw)
    batch = StepBatch(
        env_index=idx,
        episode=slots.ep[idx].copy(),
        episode_seed=slots.ep_seed[idx].copy(),
        step=slots.ep_step[idx] - 1,
        obs=sel,
        action=action,
        greedy_action=greedy,
        q=q,
        extra=extra,
        reward=raw,
        episode_end=end,
        noops=noops,
        ram=ram,
    )
    return batch, np.asarray(next_obs)


def log_steps(episodes: dict[int, RecordedEpisode], b: StepBatch) -> None:
    """Add a step batch to the replayable episode log ``episodes`` (episode index -> its seed,
    no-ops, actions, score so far and whether it ended)."""
    for i, e in enumerate(b.episode.tolist()):
        ep = episodes.get(e)
        if ep is None:
            ep = episodes[e] = RecordedEpisode(
                episode=e, seed=int(b.episode_seed[i]), noops=int(b.noops[i])
            )
        ep.actions.append(int(b.action[i]))
        ep.score += float(b.reward[i])
        ep.complete = ep.complete or bool(b.episode_end[i])


def episode_returns(batches: Sequence[StepBatch] | Iterator[StepBatch]) -> dict[int, dict]:
    """Per episode: raw return and length, from a stream of step batches."""
    out: dict[int, dict] = {}
    for b in batches:
        for e, r in zip(b.episode.tolist(), b.reward.tolist(), strict=True):
            d = out.setdefault(e, {"return": 0.0, "length": 0})
            d["return"] += r
            d["length"] += 1
    return out
