"""Recording an agent's activations while it plays (the activation provider ``atari``).

The agent plays epsilon-greedy (the poster surveyed at epsilon 0.2) on seeded episodes; every
step appends one activation row of the named layer and one context row: ``episode``,
``episode_seed``, ``step`` (within the episode), ``action`` (taken), ``greedy_action``,
``reward`` (raw game points for that action), ``q_0..q_{A-1}`` (Q-values on that observation,
one per action of the game: ``q_0..q_8`` for Ms. Pac-Man), ``obs_hash`` (of the
observation) and ``ram`` (the 128 bytes of the emulator's RAM in that state, read from a
lockstep emulator: :class:`rlsae.agents.ram_emulator.LockstepRams`). ``episodes.json`` holds
the env settings and each episode's seed and action sequence, enough to replay any step in the
emulator (``rlsae.agents.replay``).
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rlsae import threads as _threads
from rlsae.agents.config import RecordConfig
from rlsae.agents.dqn import Agent, load_agent
from rlsae.agents.envs import obs_hash
from rlsae.agents.layers import check_layer
from rlsae.agents.results import EpisodeLog, RecordedEpisode, read_episodes
from rlsae.agents.rollout import StepBatch, play
from rlsae.configs import differing_keys, to_mapping
from rlsae.errors import RlsaeError
from rlsae.fsutil import dumps_json
from rlsae.sae.store import ActivationStore, ActivationWriter

N_ACTIONS = 9
"""Ms. Pac-Man's actions (``q_0..q_8``); another game records one ``q_`` column per action."""


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
    resume: bool = False,
    progress: bool = True,
    torch_threads: int | None = 1,
) -> Path:
    """Record ``steps`` rows of ``layer`` into an activation store at ``out_dir``; returns it.

    The settings are those of :class:`~rlsae.agents.config.RecordConfig`, checked before
    anything is loaded or written. The store appears only when complete. With ``resume`` a
    finished store at ``out_dir`` recorded from the same agent with the same settings is kept
    as it is; one recorded otherwise is refused in one line naming the difference.
    """
    cfg = RecordConfig(layer, steps, epsilon, seed, n_envs, dtype, max_episode_steps)
    cfg.validate("record_activations")
    out = Path(out_dir)
    if resume and out.exists():
        agent_path = agent_dir.path if isinstance(agent_dir, Agent) else Path(agent_dir)
        check_same_recording(out, cfg, agent_path)
        return out
    if out.exists() and not overwrite:
        raise RlsaeError(f"{out} already exists; choose another --out or remove it")
    agent = agent_dir if isinstance(agent_dir, Agent) else load_agent(agent_dir)
    _, width, _ = check_layer(agent.arch, layer)
    extra = {
        "agent_dir": str(agent.path),
        "arch": agent.arch,
        "layer": layer,
        "epsilon": epsilon,
        "seed": seed,
        "steps_trained": agent.info.steps_trained,
        "env": agent.env_config.to_dict(),
    }
    bar = tqdm(
        total=steps, desc=f"dqn record {layer}", unit="step", leave=False, disable=not progress
    )
    try:
        with (
            ActivationWriter(
                out,
                width,
                dtype=dtype,
                hook=layer,
                source=source if source is not None else agent.path.name,
                provider="atari",
                extra=extra,
                overwrite=overwrite,
            ) as writer,
            _threads.torch_threads(torch_threads),
        ):
            log = _play_and_write(agent, cfg, writer, bar)
            writer.add_file("episodes.json", (dumps_json(log.to_json()) + "\n").encode())
    finally:
        bar.close()
    return out


def _play_and_write(
    agent: Agent, cfg: RecordConfig, writer: ActivationWriter, bar: Any
) -> EpisodeLog:
    """Play epsilon-greedy, append every step's activations and context; the episode log."""

    def policy(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, acts = agent.forward(obs, cfg.layer)
        return q.numpy(), acts.reshape(acts.shape[0], -1).numpy()

    episodes: dict[int, RecordedEpisode] = {}
    acts: list[np.ndarray] = []
    ctx: list[dict[str, Any]] = []
    # the observations' hashes in a thread (blake2b releases the GIL) beside the play
    with ThreadPoolExecutor(1, thread_name_prefix="rlsae-hash") as hasher:
        for b in play(
            agent.env_config,
            policy,
            seed=cfg.seed,
            epsilon=cfg.epsilon,
            n_envs=cfg.n_envs,
            max_total_steps=cfg.steps,
            max_episode_steps=cfg.max_episode_steps,
            ram=True,
        ):
            acts.append(b.extra)
            ctx.append(_context(b, hasher))
            if len(acts) >= APPEND_STEPS:
                _append(writer, acts, ctx)
            for i, e in enumerate(b.episode.tolist()):
                ep = episodes.setdefault(e, RecordedEpisode(episode=e, seed=int(b.episode_seed[i])))
                ep.actions.append(int(b.action[i]))
                ep.score += float(b.reward[i])
                ep.complete = bool(b.episode_end[i])
            bar.update(len(b.episode))
        _append(writer, acts, ctx)
    return EpisodeLog(
        env=agent.env_config,
        # the exact ale_py.vector_env.AtariVectorEnv(game, 1, **ale) settings
        ale={"game": agent.env_config.game, **agent.env_config.ale_kwargs()},
        config=cfg,
        episodes=[episodes[e] for e in sorted(episodes)],
    )


APPEND_STEPS = 64
"""Steps gathered into one ``ActivationWriter.append`` (each append builds a DataFrame of the
context, ~6 ms; the rows, shards and context table are the same whatever the grouping)."""


def _append(writer: ActivationWriter, acts: list[np.ndarray], ctx: list[dict[str, Any]]) -> None:
    """Append the gathered steps' rows in one block, then empty the lists."""
    if not acts:
        return
    for c in ctx:
        if isinstance(c.get("obs_hash"), Future):
            c["obs_hash"] = c["obs_hash"].result()
    block = {
        k: np.concatenate([c[k] for c in ctx]) if isinstance(ctx[0][k], np.ndarray)
        else [v for c in ctx for v in c[k]]
        for k in ctx[0]
    }  # fmt: skip
    writer.append(np.concatenate(acts), block)
    acts.clear()
    ctx.clear()


def _hashes(obs: np.ndarray) -> list[str]:
    return [obs_hash(o) for o in obs]


def _context(b: StepBatch, hasher: ThreadPoolExecutor | None = None) -> dict[str, Any]:
    """The context rows of one step batch (with ``hasher``, ``obs_hash`` is a future of them,
    resolved by :func:`_append`)."""
    ctx: dict[str, Any] = {
        "episode": b.episode.astype(np.int64),
        "episode_seed": b.episode_seed.astype(np.int64),
        "step": b.step.astype(np.int64),
        "action": b.action.astype(np.int64),
        "greedy_action": b.greedy_action.astype(np.int64),
        "reward": b.reward.astype(np.float32),
    }
    for a in range(b.q.shape[1]):
        ctx[f"q_{a}"] = b.q[:, a].astype(np.float32)
    ctx["obs_hash"] = _hashes(b.obs) if hasher is None else hasher.submit(_hashes, b.obs)
    if b.ram is not None:
        ctx["ram"] = [r.tobytes() for r in b.ram]
    return ctx


def check_same_recording(store_dir: Path, cfg: RecordConfig, agent_dir: Path) -> None:
    """Refuse (one line naming the difference) a store not recorded from ``agent_dir`` with
    ``cfg``: the resume fingerprint of a recording."""
    store = ActivationStore(store_dir)
    log = read_episodes(store_dir)
    old = {"agent_dir": str(store.extra.get("agent_dir")), **to_mapping(log.config)}
    new = {"agent_dir": str(agent_dir), **to_mapping(cfg)}
    keys = differing_keys(old, new)
    if keys:
        shown = ", ".join(f"{k} {old.get(k)!r} (now {new.get(k)!r})" for k in keys)
        raise RlsaeError(
            f"{store_dir} was recorded with other settings: {shown}; record into another --out "
            "or remove it"
        )
