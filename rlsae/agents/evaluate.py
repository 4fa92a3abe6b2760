"""Evaluation: mean game score over seeded episodes, human-normalised (DQN-Zoo constants)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rlsae import threads as _threads
from rlsae.agents.config import EvalConfig
from rlsae.agents.dqn import Agent, load_agent
from rlsae.agents.results import Evaluation
from rlsae.agents.rollout import Policy, episode_returns, human_normalized, play
from rlsae.agents.steer import bootstrap_ci

BOOTSTRAP = 2000
"""Resamples of the mean return's bootstrap interval (the episodes are resampled)."""


def agent_policy(agent: Agent) -> Policy:
    """Greedy-Q policy function for :func:`rlsae.agents.rollout.play`."""

    def policy(obs: np.ndarray) -> tuple[np.ndarray, None]:
        return agent.q_values(obs).numpy(), None

    return policy


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


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
) -> Evaluation:
    """Play ``episodes`` seeded episodes; the same seed gives the same numbers.

    The settings are those of :class:`~rlsae.agents.config.EvalConfig` (checked before the
    agent is loaded). Returns an :class:`~rlsae.agents.results.Evaluation` (mean, std, min, max
    and median return, the mean's 95% percentile bootstrap interval over the episodes
    (:data:`BOOTSTRAP` resamples, seeded by ``seed``), human-normalised mean, per-episode returns
    and lengths). Scores are raw
    game points (no clipping or scaling). ``save`` writes it to ``eval.json`` in the agent
    directory. Inference runs on ``torch_threads`` threads (1: fastest for the tiny batches of
    play on small CPUs; ``None`` leaves torch's setting).
    """
    cfg = EvalConfig(episodes, epsilon, seed, n_envs, max_episode_steps)
    cfg.validate("evaluate_agent")
    agent = agent_dir if isinstance(agent_dir, Agent) else load_agent(agent_dir)
    with _threads.torch_threads(torch_threads):
        stats = episode_returns(
            play(
                agent.env_config,
                agent_policy(agent),
                seed=cfg.seed,
                episodes=cfg.episodes,
                epsilon=cfg.epsilon,
                n_envs=cfg.n_envs,
                max_episode_steps=cfg.max_episode_steps,
            )
        )
    returns = np.array([stats[i]["return"] for i in range(episodes)], dtype=np.float64)
    ci = bootstrap_ci(returns, BOOTSTRAP, cfg.seed)
    lengths = [int(stats[i]["length"]) for i in range(episodes)]
    result = Evaluation(
        agent=str(agent.path),
        arch=agent.arch,
        steps_trained=agent.info.steps_trained,
        episodes=cfg.episodes,
        epsilon=cfg.epsilon,
        seed=cfg.seed,
        mean_return=float(returns.mean()),
        std_return=float(returns.std()),
        min_return=float(returns.min()),
        max_return=float(returns.max()),
        median_return=float(np.median(returns)),
        human_normalized=_finite(human_normalized(float(returns.mean()), agent.env_config.game)),
        mean_length=float(np.mean(lengths)),
        returns=returns.tolist(),
        lengths=lengths,
        return_ci_low=ci[0],
        return_ci_high=ci[1],
        bootstrap=BOOTSTRAP,
    )
    if save:
        result.write(Path(agent.path) / "eval.json")
    return result
