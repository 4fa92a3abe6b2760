"""Playing episodes with an agent: epsilon-greedy, seeded per episode, replayable.

Every episode gets its own seed (:func:`episode_seed`), the env is reset with it explicitly, and
the actions are chosen by a seeded generator, so the same seed gives the same episodes, and any
episode can be replayed from its seed and its action sequence (``rlsae.agents.replay``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlsae.agents.envs import AleVecEnv, EnvConfig

RANDOM_SCORE = 307.3
"""Ms. Pac-Man random-agent score (DQN-Zoo constants)."""
HUMAN_SCORE = 6951.6
"""Ms. Pac-Man human score (DQN-Zoo constants)."""


def human_normalized(score: float) -> float:
    """(score - random) / (human - random)."""
    return (score - RANDOM_SCORE) / (HUMAN_SCORE - RANDOM_SCORE)


def episode_seed(seed: int, index: int) -> int:
    """The emulator seed of episode ``index`` of a run seeded ``seed`` (31-bit)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0] & 0x7FFFFFFF)


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


Policy = Callable[[np.ndarray], tuple[np.ndarray, Any]]
"""obs (n, C, H, W) uint8 -> (Q-values (n, 9), anything to pass along, e.g. activations)."""


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
) -> Iterator[StepBatch]:
    """Play episodes 0, 1, 2, ... (seeds ``episode_seed(seed, i)``) on ``n_envs`` emulators.

    Stops after ``episodes`` episodes, or after ``max_total_steps`` steps in all (the last
    episodes then end early). Actions: greedy on the policy's Q, random with probability
    ``epsilon`` (a generator seeded by ``seed``).
    """
    if episodes is None and max_total_steps is None:
        raise ValueError("give episodes or max_total_steps")
    n_envs = max(1, min(n_envs, episodes or n_envs, max_total_steps or n_envs))
    rng = np.random.default_rng([int(seed), 7919])
    env = AleVecEnv(cfg, n_envs, seed=None, autoreset=False)
    try:
        next_episode = 0
        ep = np.full(n_envs, -1, dtype=np.int64)
        ep_seed = np.zeros(n_envs, dtype=np.int64)
        ep_step = np.zeros(n_envs, dtype=np.int64)
        active = np.zeros(n_envs, dtype=bool)

        def more() -> bool:
            return episodes is None or next_episode < episodes

        seeds = []
        for i in range(n_envs):
            if more():
                ep[i], ep_seed[i], active[i] = next_episode, episode_seed(seed, next_episode), True
                next_episode += 1
            seeds.append(int(ep_seed[i]) if active[i] else 0)
        obs = env.reset_with_seeds(seeds)
        total = 0
        while active.any():
            idx = np.flatnonzero(active)
            q, extra = policy(obs[idx])
            q = np.asarray(q)
            greedy = q.argmax(axis=1)
            explore = rng.random(len(idx)) < epsilon
            random_actions = rng.integers(0, 9, len(idx))
            action = np.where(explore, random_actions, greedy)
            full = np.zeros(n_envs, dtype=np.int64)
            full[idx] = action
            next_obs, _, _, infos = env.step(full)
            raw = np.array([infos[i]["raw_reward"] for i in idx], dtype=np.float32)
            over = np.array([infos[i]["game_over"] for i in idx], dtype=bool)
            ep_step[idx] += 1
            total += len(idx)
            end = over.copy()
            if max_episode_steps is not None:
                end |= ep_step[idx] >= max_episode_steps
            budget_left = None if max_total_steps is None else max_total_steps - total
            yield StepBatch(
                env_index=idx,
                episode=ep[idx].copy(),
                episode_seed=ep_seed[idx].copy(),
                step=ep_step[idx] - 1,
                obs=obs[idx],
                action=action,
                greedy_action=greedy,
                q=q,
                extra=extra,
                reward=raw,
                episode_end=end,
            )
            if budget_left is not None and budget_left <= 0:
                break
            finished = idx[end]
            restart, restart_seeds = [], []
            for i in finished:
                if more():
                    ep[i], ep_seed[i], ep_step[i] = (
                        next_episode,
                        episode_seed(seed, next_episode),
                        0,
                    )
                    next_episode += 1
                    restart.append(i)
                    restart_seeds.append(int(ep_seed[i]))
                else:
                    active[i] = False
            if restart:
                next_obs = env.reset_envs(restart, restart_seeds)
            obs = next_obs
            if budget_left is not None and budget_left < active.sum():
                # fewer steps left than active envs: keep the earliest-started episodes
                keep = np.flatnonzero(active)[np.argsort(ep[active])][:budget_left]
                active[:] = False
                active[keep] = True
    finally:
        env.close()


def episode_returns(batches: Sequence[StepBatch] | Iterator[StepBatch]) -> dict[int, dict]:
    """Per episode: raw return and length, from a stream of step batches."""
    out: dict[int, dict] = {}
    for b in batches:
        for e, r in zip(b.episode.tolist(), b.reward.tolist(), strict=True):
            d = out.setdefault(e, {"return": 0.0, "length": 0})
            d["return"] += r
            d["length"] += 1
    return out
