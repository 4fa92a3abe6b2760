"""Another agent's activations on a recording's game states: the aligned store a crosscoder
between two agents (or two checkpoints of one run) needs (issue 14).

Record once (``rlsae dqn record``), then run the second network on the very observations the
first one saw: ``record_on_recording(store, agent, out)`` replays each recorded episode in the
emulator (``rlsae.agents.replay``), checks every replayed observation against the recording's
``obs_hash``, and writes the second agent's activations of the same layer into a new store, row
for row in the recording's order, with the recording's context (episode, step, obs_hash, ...)
and ``episodes.json``, so the two stores are aligned (``rlsae.sae.paired.PairedStore`` checks
it) and the new one replays like the first. The context's ``q_*`` and ``greedy_action`` columns
are the second agent's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rlsae.agents.dqn import load_agent
from rlsae.agents.hashing import obs_hash
from rlsae.agents.layers import check_layer
from rlsae.agents.replay import replay_episode
from rlsae.agents.results import read_episodes
from rlsae.errors import RlsaeError
from rlsae.fsutil import dumps_json
from rlsae.sae.store import ActivationStore, ActivationWriter


def record_on_recording(
    store_dir: str | os.PathLike,
    agent_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    layer: str | None = None,
    source: str | None = None,
    progress: bool = False,
) -> Path:
    """Write ``agent_dir``'s activations of ``layer`` (default: the recording's) on the game
    states of the recording at ``store_dir`` into a new store at ``out_dir``; returns it."""
    import torch
    from tqdm import tqdm

    store = ActivationStore(store_dir)
    out = Path(out_dir)
    if out.exists():
        raise RlsaeError(f"{out} already exists; choose another --out or remove it")
    ctx = store.context()
    if ctx is None or not {"episode", "step", "obs_hash"} <= set(ctx.columns):
        raise RlsaeError(f"{store.path} is not an agent recording (no episode/step context)")
    log = read_episodes(store.path)
    agent = load_agent(agent_dir)
    layer = layer or store.hook
    _, width, _ = check_layer(agent.arch, layer)
    if agent.env_config.to_dict() != log.env.to_dict():
        raise RlsaeError(
            f"{agent.path} plays another environment set-up than the recording {store.path} "
            "(its observations would differ); record with an agent of the same mode"
        )
    acts = np.zeros((store.rows, width), dtype=np.float32)
    q = np.zeros((store.rows, 9), dtype=np.float32)
    episodes, steps, hashes = (ctx[c].to_numpy() for c in ("episode", "step", "obs_hash"))
    bar = tqdm(total=store.rows, desc="replay", unit="step", disable=not progress)
    try:
        for e in np.unique(episodes).tolist():
            rows = np.nonzero(episodes == e)[0]
            by_step = {int(steps[r]): int(r) for r in rows}
            obs: list[np.ndarray] = []
            order: list[int] = []
            for t, o, _ in replay_episode(doc=log, episode=int(e), until=max(by_step), rgb=False):
                if t in by_step:
                    r = by_step[t]
                    if obs_hash(o) != hashes[r]:
                        raise RlsaeError(
                            f"replaying episode {e} of {store.path} gives another observation "
                            f"at step {t} than was recorded; the recording cannot be replayed"
                        )
                    obs.append(o)
                    order.append(r)
            with torch.no_grad():
                for s in range(0, len(obs), 256):
                    qv, h = agent.forward(np.stack(obs[s : s + 256]), layer)
                    idx = order[s : s + 256]
                    acts[idx] = h.reshape(len(idx), -1).numpy()
                    q[idx] = qv.numpy()
            bar.update(len(order))
    finally:
        bar.close()
    context = ctx.copy()
    for a in range(q.shape[1]):
        if f"q_{a}" in context.columns:
            context[f"q_{a}"] = q[:, a]
    if "greedy_action" in context.columns:
        context["greedy_action"] = q.argmax(1).astype(np.int64)
    extra = {
        "agent_dir": str(agent.path),
        "arch": agent.arch,
        "layer": layer,
        "steps_trained": agent.info.steps_trained,
        "env": agent.env_config.to_dict(),
        "replayed_from": str(store.path),
    }
    with ActivationWriter(
        out,
        width,
        hook=layer,
        source=source if source is not None else agent.path.name,
        provider="atari",
        shard_rows=max(r for _, r in store._shards),
        extra=extra,
    ) as writer:
        writer.append(acts, context)
        writer.add_file("episodes.json", (dumps_json(log.to_json()) + "\n").encode())
    return out
