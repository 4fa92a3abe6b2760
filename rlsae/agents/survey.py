"""The poster's live-feature survey: a recording made to count live features, not to train on.

The poster surveyed each agent separately from its SAE's training data: epsilon 0.2, sticky
actions **off**, the first 66 steps of every episode skipped (the start-of-game music, during
which Ms. Pac-Man cannot move), over a number of whole episodes (the poster: 2,500). A feature is
live if it fires (> 0) on any surveyed step.

:func:`survey_activations` writes an ordinary activation store (``dqn record``'s layout: the
activations, ``context.parquet`` with the true ``step`` of each row within its episode, and
``episodes.json`` with the sticky-off environment and every episode's full action sequence, so
any surveyed row replays and verifies like a recorded one). The protocol is visible in the store
itself: no row has ``step`` below the skip, ``episodes.json`` says ``repeat_action_probability``
0.0, and ``action != greedy_action`` on about epsilon x 8/9 of the rows.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rlsae import threads as _threads
from rlsae.agents.config import RecordConfig
from rlsae.agents.dqn import Agent, load_agent
from rlsae.agents.layers import check_layer
from rlsae.agents.record import _context
from rlsae.agents.results import EpisodeLog, RecordedEpisode
from rlsae.agents.rollout import log_steps, play
from rlsae.agents.survey_config import POSTER_SKIP_STEPS, SurveyConfig
from rlsae.errors import RlsaeError
from rlsae.fsutil import dumps_json
from rlsae.sae.store import ActivationWriter


def survey_activations(
    agent_dir: str | os.PathLike | Agent,
    out_dir: str | os.PathLike,
    cfg: SurveyConfig | None = None,
    *,
    torch_threads: int | None = 1,
) -> Path:
    """Survey ``cfg.episodes`` whole episodes into a new activation store ``out_dir``."""
    cfg = cfg or SurveyConfig()
    cfg.validate("survey")
    out = Path(out_dir)
    if out.exists():
        raise RlsaeError(f"{out} already exists; choose another --out or remove it")
    agent = agent_dir if isinstance(agent_dir, Agent) else load_agent(agent_dir)
    _, width, _ = check_layer(agent.arch, cfg.layer)
    env = replace(agent.env_config, repeat_action_probability=cfg.sticky_actions)
    extra = {
        "agent_dir": str(agent.path),
        "arch": agent.arch,
        "layer": cfg.layer,
        "survey": dict(vars(cfg)),
        "env": env.to_dict(),
    }
    with (
        ActivationWriter(
            out, width, dtype=cfg.dtype, hook=cfg.layer, source=agent.path.name,
            provider="atari", extra=extra,
        ) as writer,
        _threads.torch_threads(torch_threads),
    ):  # fmt: skip
        log = _survey(agent, env, cfg, writer)
        writer.add_file("episodes.json", (dumps_json(log.to_json()) + "\n").encode())
    return out


def _survey(agent: Agent, env: Any, cfg: SurveyConfig, writer: ActivationWriter) -> EpisodeLog:
    def policy(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, acts = agent.forward(obs, cfg.layer)
        return q.numpy(), acts.reshape(acts.shape[0], -1).numpy()

    episodes: dict[int, RecordedEpisode] = {}
    played = 0
    for b in play(
        env, policy, seed=cfg.seed, episodes=cfg.episodes, epsilon=cfg.epsilon,
        n_envs=cfg.n_envs, max_episode_steps=cfg.max_episode_steps,
    ):  # fmt: skip
        keep = b.step >= cfg.skip_first_steps
        if keep.any():
            rows = np.flatnonzero(keep)
            writer.append(b.extra[rows], _context(_select(b, rows)))
        log_steps(episodes, b)
        played += len(b.episode)
    record = RecordConfig(
        layer=cfg.layer, steps=max(played, 1), epsilon=cfg.epsilon, seed=cfg.seed,
        n_envs=cfg.n_envs, dtype=cfg.dtype, max_episode_steps=cfg.max_episode_steps,
    )  # fmt: skip
    return EpisodeLog(
        env=env,
        ale={"game": env.game, **env.ale_kwargs()},
        config=record,
        episodes=[episodes[e] for e in sorted(episodes)],
    )


def _select(b: Any, rows: np.ndarray) -> Any:
    """The step batch restricted to ``rows`` (for the context of the kept rows)."""
    return replace(
        b,
        env_index=b.env_index[rows], episode=b.episode[rows], episode_seed=b.episode_seed[rows],
        step=b.step[rows], obs=b.obs[rows], action=b.action[rows],
        greedy_action=b.greedy_action[rows], q=b.q[rows], extra=None, reward=b.reward[rows],
        episode_end=b.episode_end[rows],
    )  # fmt: skip


__all__ = ["POSTER_SKIP_STEPS", "SurveyConfig", "survey_activations"]
