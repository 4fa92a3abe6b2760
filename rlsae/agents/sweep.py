"""Ablation sweep: every live feature set to zero in turn, ranked by |Δreturn|.

The spliced agent plays its episodes once; on its states the greedy action of every
single-feature ablation is computed in one batched pass (the reconstruction minus
``f_j d_j``); then each ablated agent plays the same seeded episodes. Each feature's row is what
:func:`rlsae.agents.steer.steer_features` with ``ablate=True`` reports for it (a test checks
that they agree).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from rlsae import threads as _threads
from rlsae.agents.config import SpliceConfig, check_int
from rlsae.agents.dqn import Agent, load_agent
from rlsae.agents.effects import check_sae
from rlsae.agents.results import AblationRow, AblationSweep
from rlsae.agents.steer import (
    action_shift,
    bootstrap_ci,
    check_sae_origin,
    feature_range,
    play_episodes,
    steered_features,
)
from rlsae.errors import RlsaeError
from rlsae.sae import load_sae


def ablation_sweep(
    agent_dir: str | os.PathLike | Agent,
    sae_dir: str | os.PathLike,
    acts: str | os.PathLike | None = None,
    features: list[int] | None = None,
    *,
    episodes: int = 3,
    seed: int = 0,
    layer: str | None = None,
    epsilon: float = 0.0,
    n_envs: int = 1,
    max_episode_steps: int | None = None,
    bootstrap: int = 1000,
    torch_threads: int | None = 1,
) -> AblationSweep:
    """Ablate each of ``features`` (default: every feature live over ``acts`` or the SAE's
    feature statistics) in turn; rows ranked by |Δreturn| (largest first)."""
    cfg = SpliceConfig(
        episodes=episodes, epsilon=epsilon, seed=seed, n_envs=n_envs,
        max_episode_steps=max_episode_steps, layer=layer,
    )  # fmt: skip
    cfg.validate("ablation_sweep")
    check_int("ablation_sweep", "bootstrap", bootstrap, 1, 1_000_000)
    t0 = time.perf_counter()
    agent = agent_dir if isinstance(agent_dir, Agent) else load_agent(agent_dir)
    sae: Any = load_sae(sae_dir)
    layer = cfg.layer or str(sae.cfg.hook_name or "")
    if not layer:
        raise RlsaeError("the SAE names no layer (hook_name); pass layer=")
    check_sae(agent, sae, layer, 0)
    check_sae_origin(agent, sae_dir, layer)
    sae.eval()
    rng = feature_range(sae, acts, sae_dir, arch=agent.arch)
    if features is None:
        if rng is None:
            raise RlsaeError("which features are live needs acts= (or the SAE's feature stats)")
        features = [int(j) for j in np.flatnonzero(rng.firing_counts > 0)]
    for j in features:
        check_sae(agent, sae, layer, j)
    with _threads.torch_threads(torch_threads):
        base, greedy, fires = _spliced_pass(agent, sae, layer, features, cfg)
        r_base = np.array([e.score for e in base], dtype=np.float64)
        a = np.concatenate(greedy[0]) if greedy[0] else np.zeros(0, dtype=np.int64)
        rows = []
        for i, j in enumerate(features):
            r = np.array([e.score for e in _ablated(agent, sae, layer, j, cfg)])
            b = np.concatenate([g[:, i] for g in greedy[1]]) if greedy[1] else a
            fire = np.concatenate([m[:, i] for m in fires]) if fires else a.astype(bool)
            changed = a != b
            rows.append(
                AblationRow(
                    feature=j, delta_return=float((r - r_base).mean()),
                    delta_return_ci=bootstrap_ci(r - r_base, bootstrap, cfg.seed),
                    greedy_changed=float(changed.mean()) if len(a) else 0.0,
                    greedy_changed_firing=float(changed[fire].mean()) if fire.any() else None,
                    action_tv=action_shift(a, b)[0], states_firing=int(fire.sum()),
                    returns=r.tolist(),
                )
            )  # fmt: skip
    rows.sort(key=lambda row: (-abs(row.delta_return), row.feature))
    seconds = time.perf_counter() - t0
    return AblationSweep(
        agent=str(agent.path), sae=str(sae_dir), layer=layer, episodes=cfg.episodes,
        seed=cfg.seed, epsilon=cfg.epsilon, return_spliced=float(r_base.mean()), states=len(a),
        seconds=seconds, features_per_minute=60.0 * len(features) / seconds if seconds else 0.0,
        returns_spliced=r_base.tolist(), rows=rows,
    )  # fmt: skip


def _spliced_pass(
    agent: Agent, sae: Any, layer: str, features: list[int], cfg: SpliceConfig
) -> tuple[list[Any], tuple[list[np.ndarray], list[np.ndarray]], list[np.ndarray]]:
    """Play the spliced agent; per step its greedy actions, every ablation's greedy actions
    (n, len(features)) and the firing masks (n, len(features))."""
    base_greedy: list[np.ndarray] = []
    abl_greedy: list[np.ndarray] = []
    fires: list[np.ndarray] = []
    idx = torch.as_tensor(features, dtype=torch.long)
    w = sae.W_dec.detach().float()[idx]  # (L, d)

    @torch.no_grad()
    def policy(obs: np.ndarray) -> tuple[np.ndarray, None]:
        _, h = agent.forward(obs, layer)
        f = sae.encode(h.float())
        rec = sae.decode(f).float()
        q = agent.forward_from(layer, rec)
        fj = f[:, idx].float()  # (n, L)
        ablated = rec[None] - fj.t()[:, :, None] * w[:, None, :]  # (L, n, d)
        q_abl = agent.forward_from(layer, ablated.reshape(-1, rec.shape[1]))
        base_greedy.append(q.argmax(1).numpy())
        abl_greedy.append(q_abl.argmax(1).reshape(len(features), -1).t().numpy())
        fires.append((fj > 0).numpy())
        return q.numpy(), None

    eps = play_episodes(agent, policy, cfg)
    return eps, (base_greedy, abl_greedy), fires


def _ablated(agent: Agent, sae: Any, layer: str, feature: int, cfg: SpliceConfig) -> list[Any]:
    """The agent with ``feature`` set to zero plays the same seeded episodes."""

    @torch.no_grad()
    def policy(obs: np.ndarray) -> tuple[np.ndarray, None]:
        _, h = agent.forward(obs, layer)
        f = steered_features(sae.encode(h.float()), [feature], None, None)
        return agent.forward_from(layer, sae.decode(f).float()).numpy(), None

    return play_episodes(agent, policy, cfg)
