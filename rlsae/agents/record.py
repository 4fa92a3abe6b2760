"""Recording an agent's activations while it plays (the activation provider ``atari``).

The agent plays epsilon-greedy (the poster surveyed at epsilon 0.2) on seeded episodes; every
step appends one activation row of the named layer and one context row: ``episode``,
``episode_seed``, ``step`` (within the episode), ``action`` (taken), ``greedy_action``,
``reward`` (raw game points for that action), ``q_0..q_8`` (Q-values on that observation) and
``obs_hash`` (of the observation). ``episodes.json`` holds the env settings and each episode's
seed and action sequence, enough to replay any step in the emulator (``rlsae.agents.replay``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlsae import threads as _threads
from rlsae.agents.dqn import Agent, load_agent
from rlsae.agents.envs import obs_hash
from rlsae.agents.networks import check_layer
from rlsae.agents.rollout import play
from rlsae.errors import RlsaeError

N_ACTIONS = 9


@dataclass
class RecordConfig:
    """Settings of one recording (saved in ``meta.json`` ``extra`` and ``episodes.json``)."""

    layer: str = "fc1"
    """Hookable layer to record (``dqn layers`` lists them)."""
    steps: int = 10_000
    """Rows (agent steps) to record in all."""
    epsilon: float = 0.2
    """Probability of a random action (the poster surveyed at 0.2)."""
    seed: int = 0
    """Seeds the episodes (``episode_seed(seed, i)``) and the epsilon draws."""
    n_envs: int = 4
    """Emulators played side by side (batched forward passes)."""
    dtype: str = "float32"
    """Activation dtype in the store (float32 or float16)."""
    max_episode_steps: int | None = None
    """Cut episodes at this many steps (None: play until the game ends)."""


def record_activations(
    agent_dir: str | os.PathLike | Agent,
    layer: str,
    steps: int,
    out_dir: str | os.PathLike,
    *,
    epsilon: float = 0.2,
    seed: int = 0,
    n_envs: int = 4,
    dtype: str = "float32",
    max_episode_steps: int | None = None,
    source: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    torch_threads: int | None = 1,
) -> Path:
    """Record ``steps`` rows of ``layer`` into an activation store at ``out_dir``; returns it."""
    from rlsae.sae.store import ActivationWriter

    if steps < 1:
        raise RlsaeError(f"steps must be at least 1 to record anything, got {steps}")
    if not 0.0 <= epsilon <= 1.0:
        raise RlsaeError(f"epsilon must be in [0, 1], got {epsilon}")
    agent = agent_dir if isinstance(agent_dir, Agent) else load_agent(agent_dir)
    _, width, _ = check_layer(agent.arch, layer)
    cfg = RecordConfig(layer, steps, epsilon, seed, n_envs, dtype, max_episode_steps)
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise RlsaeError(f"{out} already exists; choose another --out or remove it")
    env_dict = agent.env_config.to_dict()
    extra = {
        "agent_dir": str(agent.path),
        "arch": agent.arch,
        "layer": layer,
        "epsilon": epsilon,
        "seed": seed,
        "steps_trained": agent.info.get("steps_trained"),
        "env": env_dict,
    }

    def policy(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, acts = agent.forward(obs, layer)
        return q.numpy(), acts.reshape(acts.shape[0], -1).numpy()

    episodes: dict[int, dict[str, Any]] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"dqn record {layer}", unit="step", leave=False)
    writer = ActivationWriter(
        out,
        width,
        dtype=dtype,
        hook=layer,
        source=source if source is not None else agent.path.name,
        provider="atari",
        extra=extra,
        overwrite=overwrite,
    )
    try:
        with _threads.torch_threads(torch_threads):
            for b in play(
                agent.env_config,
                policy,
                seed=seed,
                epsilon=epsilon,
                n_envs=n_envs,
                max_total_steps=steps,
                max_episode_steps=max_episode_steps,
            ):
                ctx: dict[str, Any] = {
                    "episode": b.episode.astype(np.int64),
                    "episode_seed": b.episode_seed.astype(np.int64),
                    "step": b.step.astype(np.int64),
                    "action": b.action.astype(np.int64),
                    "greedy_action": b.greedy_action.astype(np.int64),
                    "reward": b.reward.astype(np.float32),
                }
                for a in range(N_ACTIONS):
                    ctx[f"q_{a}"] = b.q[:, a].astype(np.float32)
                ctx["obs_hash"] = [obs_hash(o) for o in b.obs]
                writer.append(b.extra, ctx)
                for i, e in enumerate(b.episode.tolist()):
                    d = episodes.setdefault(
                        e,
                        {
                            "episode": e,
                            "seed": int(b.episode_seed[i]),
                            "actions": [],
                            "return": 0.0,
                        },
                    )
                    d["actions"].append(int(b.action[i]))
                    d["return"] += float(b.reward[i])
                    d["complete"] = bool(b.episode_end[i])
                if bar is not None:
                    bar.update(len(b.episode))
        doc = {
            "env": env_dict,
            # the exact ale_py.vector_env.AtariVectorEnv("ms_pacman", 1, **ale) settings
            "ale": {"game": "ms_pacman", **agent.env_config.ale_kwargs()},
            "config": cfg.__dict__,
            "episodes": [episodes[e] for e in sorted(episodes)],
        }
        writer.add_file("episodes.json", json.dumps(doc).encode())
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    return out
