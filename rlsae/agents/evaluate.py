"""Evaluation: mean game score over seeded episodes, human-normalised (DQN-Zoo constants)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from rlsae import threads as _threads
from rlsae.agents.dqn import Agent, load_agent
from rlsae.agents.rollout import episode_returns, human_normalized, play
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_json


def agent_policy(agent: Agent):
    """Greedy-Q policy function for :func:`rlsae.agents.rollout.play`."""

    def policy(obs: np.ndarray) -> tuple[np.ndarray, None]:
        return agent.q_values(obs).numpy(), None

    return policy


def _play_stats(agent, seed, episodes, epsilon, n_envs, max_episode_steps) -> dict[int, dict]:
    return episode_returns(
        play(
            agent.env_config,
            agent_policy(agent),
            seed=seed,
            episodes=episodes,
            epsilon=epsilon,
            n_envs=n_envs,
            max_episode_steps=max_episode_steps,
        )
    )


def evaluate_agent(
    agent_dir: str | os.PathLike | Agent,
    episodes: int = 10,
    epsilon: float = 0.0,
    seed: int = 0,
    *,
    n_envs: int = 1,
    max_episode_steps: int | None = None,
    save: bool = False,
    torch_threads: int | None = 1,
) -> dict[str, Any]:
    """Play ``episodes`` seeded episodes; the same seed gives the same numbers.

    Returns ``mean_return``, ``std_return``, ``min_return``, ``max_return``, ``episodes``,
    ``human_normalized`` (of the mean; random 307.3, human 6951.6), ``returns``, ``lengths``.
    Scores are raw game points (no clipping or scaling). ``save`` writes ``eval.json`` into
    the agent directory. Inference runs on ``torch_threads`` threads (1: fastest for the
    tiny batches of play on small CPUs; ``None`` leaves torch's setting).
    """
    if episodes < 1:
        raise RlsaeError(f"episodes must be at least 1, got {episodes}")
    if not 0.0 <= epsilon <= 1.0:
        raise RlsaeError(f"epsilon must be in [0, 1], got {epsilon}")
    agent = agent_dir if isinstance(agent_dir, Agent) else load_agent(agent_dir)
    with _threads.torch_threads(torch_threads):
        stats = _play_stats(agent, seed, episodes, epsilon, n_envs, max_episode_steps)

    returns = np.array([stats[i]["return"] for i in range(episodes)], dtype=np.float64)
    lengths = [int(stats[i]["length"]) for i in range(episodes)]
    result = {
        "agent": str(agent.path),
        "arch": agent.arch,
        "steps_trained": agent.info.get("steps_trained"),
        "episodes": episodes,
        "epsilon": epsilon,
        "seed": seed,
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "min_return": float(returns.min()),
        "max_return": float(returns.max()),
        "median_return": float(np.median(returns)),
        "human_normalized": float(human_normalized(float(returns.mean()))),
        "mean_length": float(np.mean(lengths)),
        "returns": returns.tolist(),
        "lengths": lengths,
    }
    if save:
        atomic_write_json(Path(agent.path) / "eval.json", result)
    return result
