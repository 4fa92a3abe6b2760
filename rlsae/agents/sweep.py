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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rlsae import threads as _threads
from rlsae.agents.config import SpliceConfig, check_int
from rlsae.agents.dqn import Agent, load_agent
from rlsae.agents.effects import check_sae
from rlsae.agents.results import AblationRow, AblationSweep, ChangedState, RecordedEpisode
from rlsae.agents.rollout import StepBatch
from rlsae.agents.steer import (
    action_shift,
    bootstrap_ci,
    check_features,
    check_sae_origin,
    feature_range,
    play_episodes,
    steered_features,
)
from rlsae.errors import RlsaeError
from rlsae.sae import load_sae

ABLATION_FILE = "ablation_sweep.json"
"""Where ``rlsae dqn sweep`` and the study's ``sweep`` stage write the sweep: in the SAE's
folder (the viewer reads it from there)."""


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
    max_features: int | None = None,
    torch_threads: int | None = 1,
) -> AblationSweep:
    """Ablate each of ``features`` (default: every feature live over ``acts`` or the SAE's
    feature statistics; ``max_features``: only that many of them, those firing most often) in
    turn; rows ranked by |Δreturn| (largest first). A dead feature named in ``features``, an
    SAE of another layer, width or agent architecture is refused in one line."""
    cfg = SpliceConfig(
        episodes=episodes, epsilon=epsilon, seed=seed, n_envs=n_envs,
        max_episode_steps=max_episode_steps, layer=layer,
    )  # fmt: skip
    cfg.validate("ablation_sweep")
    check_int("ablation_sweep", "bootstrap", bootstrap, 1, 1_000_000)
    if max_features is not None:
        check_int("ablation_sweep", "max_features", max_features, 1)
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
        features = live_features(rng.firing_counts, max_features)
    for j in features:
        check_sae(agent, sae, layer, j)
    check_features(features, rng)
    with _threads.torch_threads(torch_threads):
        base, sp = _spliced_pass(agent, sae, layer, features, cfg)
        r_base = np.array([e.score for e in base], dtype=np.float64)
        a, abl, fires, gap, where = sp.arrays(len(features))
        rows = []
        for i, j in enumerate(features):
            r = np.array([e.score for e in _ablated(agent, sae, layer, j, cfg)])
            b, fire = abl[:, i], fires[:, i]
            changed = a != b
            rows.append(
                AblationRow(
                    feature=j, delta_return=float((r - r_base).mean()),
                    delta_return_ci=bootstrap_ci(r - r_base, bootstrap, cfg.seed),
                    greedy_changed=float(changed.mean()) if len(a) else 0.0,
                    greedy_changed_firing=float(changed[fire].mean()) if fire.any() else None,
                    action_tv=action_shift(a, b, agent.head.out_features)[0], states_firing=int(fire.sum()),
                    returns=r.tolist(), most_changed=_most_changed(a, b, gap[:, i], where),
                )
            )  # fmt: skip
    rows.sort(key=lambda row: (-abs(row.delta_return), row.feature))
    seconds = time.perf_counter() - t0
    return AblationSweep(
        agent=str(agent.path), sae=str(sae_dir), layer=layer, episodes=cfg.episodes,
        seed=cfg.seed, epsilon=cfg.epsilon, return_spliced=float(r_base.mean()), states=len(a),
        seconds=seconds, features_per_minute=60.0 * len(features) / seconds if seconds else 0.0,
        returns_spliced=r_base.tolist(), rows=rows, episodes_spliced=base,
    )  # fmt: skip


def live_features(firing_counts: np.ndarray, limit: int | None = None) -> list[int]:
    """The features that fired (in index order); with ``limit``, only the ``limit`` that fired
    most often (ties: lower index first)."""
    live = np.flatnonzero(np.asarray(firing_counts) > 0)
    if limit is not None and len(live) > limit:
        order = np.lexsort((live, -np.asarray(firing_counts)[live]))
        live = np.sort(live[order[:limit]])
    return [int(j) for j in live]


@dataclass
class _Pass:
    """Per step of the spliced agent (in play order): its greedy action, every ablation's
    greedy action, firing mask and preference shift (n, len(features)), and (episode, step)."""

    base: list[np.ndarray] = field(default_factory=list)
    ablated: list[np.ndarray] = field(default_factory=list)
    fires: list[np.ndarray] = field(default_factory=list)
    gap: list[np.ndarray] = field(default_factory=list)
    where: list[np.ndarray] = field(default_factory=list)

    def arrays(self, n_features: int) -> tuple[np.ndarray, ...]:
        def cat(xs: list[np.ndarray], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            return np.concatenate(xs) if xs else np.zeros(shape, dtype=dtype)

        return (
            cat(self.base, (0,), np.int64),
            cat(self.ablated, (0, n_features), np.int64),
            cat(self.fires, (0, n_features), bool),
            cat(self.gap, (0, n_features), np.float64),
            cat(self.where, (0, 2), np.int64),
        )


def _spliced_pass(
    agent: Agent, sae: Any, layer: str, features: list[int], cfg: SpliceConfig
) -> tuple[list[RecordedEpisode], _Pass]:
    """Play the spliced agent; on each of its states, every single-feature ablation's greedy
    action in one batched pass (the reconstruction minus ``f_j d_j``)."""
    sp = _Pass()
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
        q_abl = q_abl.reshape(len(features), rec.shape[0], -1)  # (L, n, actions)
        a, b = q.argmax(1), q_abl.argmax(-1)  # (n,), (L, n)
        sp.base.append(a.numpy())
        sp.ablated.append(b.t().numpy())
        sp.fires.append((fj > 0).numpy())
        sp.gap.append(_preference_shift(q, q_abl, a, b).t().double().numpy())
        return q.numpy(), None

    def on_batch(b: StepBatch) -> None:
        sp.where.append(np.stack([b.episode, b.step], 1).astype(np.int64))

    return play_episodes(agent, policy, cfg, on_batch), sp


def _preference_shift(
    q: torch.Tensor, q_abl: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """(L, n): how far each ablation moved the preference between the spliced greedy action
    ``a`` and the ablated one ``b``: ``(Q[a] - Q[b]) + (Q'[b] - Q'[a])`` (0 where they agree)."""
    n_feat = q_abl.shape[0]
    qa = q.gather(1, a[:, None])[:, 0]  # (n,)
    qb = q[None].expand(n_feat, -1, -1).gather(-1, b[..., None])[..., 0]  # (L, n)
    qa_abl = q_abl.gather(-1, a.expand(n_feat, -1)[..., None])[..., 0]
    qb_abl = q_abl.gather(-1, b[..., None])[..., 0]
    return (qa[None] - qb) + (qb_abl - qa_abl)


def _most_changed(
    a: np.ndarray, b: np.ndarray, gap: np.ndarray, where: np.ndarray
) -> ChangedState | None:
    """The state where the ablated greedy action ``b`` differs from ``a`` with the largest
    preference shift (the first of equals), or None where it never differs."""
    changed = np.flatnonzero(a != b)
    if not len(changed):
        return None
    i = int(changed[np.argmax(gap[changed])])
    return ChangedState(
        episode=int(where[i, 0]), step=int(where[i, 1]), action_spliced=int(a[i]),
        action_ablated=int(b[i]), q_gap=float(gap[i]),
    )  # fmt: skip


def _ablated(agent: Agent, sae: Any, layer: str, feature: int, cfg: SpliceConfig) -> list[Any]:
    """The agent with ``feature`` set to zero plays the same seeded episodes."""

    @torch.no_grad()
    def policy(obs: np.ndarray) -> tuple[np.ndarray, None]:
        _, h = agent.forward(obs, layer)
        f = steered_features(sae.encode(h.float()), [feature], None, None)
        return agent.forward_from(layer, sae.decode(f).float()).numpy(), None

    return play_episodes(agent, policy, cfg)
