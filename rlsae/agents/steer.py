"""Steering and ablating SAE features in play.

Two agents play the same seeded episodes, both with the hooked layer replaced by the SAE's
reconstruction (as in :mod:`rlsae.agents.splice`):

- the *spliced* agent: ``decode(encode(h))``;
- the *steered* agent: ``decode(f')`` where ``f' = encode(h)`` with each chosen feature set to
  ``scale x`` its maximum over the recorded store (``relative``: ``scale x`` its own value in
  that state), or to zero (``ablate``).

Reported (:class:`~rlsae.agents.results.SteerResult`): the change in mean return with a 95%
bootstrap interval (paired by episode seed), how often the greedy action changes, and the total
variation and KL between the two networks' greedy-action histograms on the spliced agent's
states (all of them, and those where a feature fires), plus both variants' episodes (seeds and
actions) for replay.

Known answers (tests): ``relative`` scale 1 is the spliced agent exactly; ablating every feature
is the agent with the layer set to the SAE's decoder bias.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlsae import threads as _threads
from rlsae.agents.config import EvalConfig, SteerConfig
from rlsae.agents.dqn import Agent, load_agent
from rlsae.agents.effects import check_sae
from rlsae.agents.results import RecordedEpisode, SteerResult
from rlsae.agents.rollout import StepBatch, log_steps, play
from rlsae.analysis.bootstrap import bootstrap_ci
from rlsae.errors import RlsaeError
from rlsae.fsutil import read_json
from rlsae.sae import load_sae
from rlsae.sae.metrics import FeatureStats, check_compatible
from rlsae.sae.store import ActivationStore
from rlsae.sae.train import TrainingRecord


@dataclass
class FeatureRange:
    """Each feature's maximum activation and firing count over a set of rows."""

    max_activation: np.ndarray
    """(d_sae,) largest activation."""
    firing_counts: np.ndarray
    """(d_sae,) rows on which it fired."""
    rows: int
    """Rows seen."""
    where: str
    """Where the figures come from (a store, or the SAE's feature_stats)."""


@torch.no_grad()
def feature_range(
    sae: Any, acts_dir: str | os.PathLike | None = None, sae_dir: str | os.PathLike | None = None,
    *, batch_size: int = 4096, arch: str | None = None,
) -> FeatureRange | None:  # fmt: skip
    """Feature maxima over the store ``acts_dir`` (encoded with the SAE), else from the SAE
    directory's ``feature_stats.safetensors``; None when neither is there.

    With ``arch``, a store recorded from an agent of another architecture is refused.
    """
    if acts_dir is not None:
        store = ActivationStore(acts_dir)
        check_compatible(sae, store, check_hook=True)
        rec_arch = store.extra.get("arch")
        if arch is not None and rec_arch is not None and rec_arch != arch:
            raise RlsaeError(
                f"the store {acts_dir} was recorded from a {rec_arch} agent; this agent is {arch}"
            )
        top = torch.zeros(int(sae.cfg.d_sae))
        fires = torch.zeros(int(sae.cfg.d_sae), dtype=torch.int64)
        for x in store.iter_sequential(batch_size):
            f = sae.encode(x).float()
            top = torch.maximum(top, f.max(0).values)
            fires += (f > 0).sum(0)
        return FeatureRange(top.numpy(), fires.numpy(), len(store), f"the store {acts_dir}")
    if sae_dir is not None and (os.path.isfile(os.path.join(sae_dir, "feature_stats.safetensors"))):
        st = FeatureStats.read(sae_dir)
        return FeatureRange(
            st.max_activation.float().numpy(),
            st.firing_counts.numpy(),
            st.rows,
            f"{sae_dir}/feature_stats.safetensors",
        )
    return None


def sae_origin(sae_dir: str | os.PathLike) -> dict[str, str]:
    """What the SAE's training store was recorded from (``arch``, ``layer``, ``provider``): from
    its ``training.json``, or, for SAEs trained before that was recorded, from the meta of the
    store it names when that store is still there; empty when neither says."""
    path = Path(sae_dir) / "training.json"
    if not path.is_file():
        return {}
    rec = TrainingRecord.read(path)
    if rec.origin:
        return dict(rec.origin)
    meta = Path(rec.store_path) / "meta.json"
    if not meta.is_file():
        return {}
    raw = read_json(meta)
    extra = raw.get("extra") if isinstance(raw, dict) else None
    if not isinstance(extra, dict):
        return {}
    return {k: str(extra[k]) for k in ("arch", "layer") if extra.get(k)}


def check_sae_origin(agent: Agent, sae_dir: str | os.PathLike | None, layer: str) -> None:
    """Refuse, in one line, an SAE whose training store was recorded from an agent of another
    architecture or at another layer than ``agent``'s ``layer`` (nothing to check for an SAE
    that does not record its origin)."""
    if sae_dir is None:
        return
    origin = sae_origin(sae_dir)
    arch, rec_layer = origin.get("arch"), origin.get("layer")
    if arch is not None and arch != agent.arch:
        raise RlsaeError(
            f"the SAE {sae_dir} was trained on activations of a {arch} agent; "
            f"this agent is {agent.arch}"
        )
    if rec_layer is not None and rec_layer != layer:
        raise RlsaeError(
            f"the SAE {sae_dir} was trained on activations of layer {rec_layer!r}, not {layer!r}"
        )


def check_features(features: list[int], rng: FeatureRange | None) -> None:
    """Refuse a feature that never fired over the rows of ``rng`` (one line, naming it dead)."""
    if rng is None:
        return
    dead = [f for f in features if int(rng.firing_counts[f]) == 0]
    if dead:
        raise RlsaeError(
            f"feature {dead[0]} is dead: it never fired over the {rng.rows} rows of {rng.where}"
        )


def steered_features(
    f: torch.Tensor, features: list[int], values: list[float] | None, scale: float | None
) -> torch.Tensor:
    """``f`` with each of ``features`` set to its value (``values``), or multiplied by ``scale``
    (``values`` None), or zeroed (both None)."""
    out = f.clone()
    idx = torch.as_tensor(features, dtype=torch.long)
    if values is not None:
        out[:, idx] = torch.as_tensor(values, dtype=out.dtype)
    elif scale is not None:
        out[:, idx] = out[:, idx] * scale
    else:
        out[:, idx] = 0.0
    return out


@dataclass
class _Tally:
    """Greedy actions of both networks on the spliced agent's states, and the firing mask."""

    base: list[np.ndarray] = field(default_factory=list)
    steered: list[np.ndarray] = field(default_factory=list)
    firing: list[np.ndarray] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        def cat(xs: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(xs) if xs else np.zeros(0, dtype=dtype)

        return cat(self.base, np.int64), cat(self.steered, np.int64), cat(self.firing, bool)


def action_shift(a: np.ndarray, b: np.ndarray, n_actions: int) -> tuple[float, float]:
    """(total variation, KL(P_a || P_b)) of two greedy-action samples' histograms over the game's
    ``n_actions`` actions; half a count is added to each action for the KL (finite when an action
    is missing)."""
    ca = np.bincount(a, minlength=n_actions).astype(np.float64)
    cb = np.bincount(b, minlength=n_actions).astype(np.float64)
    tv = 0.5 * float(np.abs(ca / ca.sum() - cb / cb.sum()).sum())
    half = 0.5 * n_actions
    pa, pb = (ca + 0.5) / (ca.sum() + half), (cb + 0.5) / (cb.sum() + half)
    return tv, float((pa * np.log(pa / pb)).sum())


def steer_features(
    agent_dir: str | os.PathLike | Agent,
    sae_dir: str | os.PathLike | Any,
    features: list[int],
    scale: float | None = None,
    *,
    ablate: bool = False,
    relative: bool = False,
    acts: str | os.PathLike | None = None,
    episodes: int = 5,
    seed: int = 0,
    layer: str | None = None,
    epsilon: float = 0.0,
    n_envs: int = 1,
    max_episode_steps: int | None = None,
    bootstrap: int = 1000,
    torch_threads: int | None = 1,
) -> SteerResult:
    """Play the spliced agent and the agent with ``features`` steered (or ablated) on the same
    seeds, and compare them (see the module docstring). The settings are those of
    :class:`~rlsae.agents.config.SteerConfig`, checked first; a feature out of range, a dead
    feature (over ``acts`` or the SAE's feature statistics), an SAE of another layer or width,
    or a store recorded from an agent of another architecture is refused in one line."""
    cfg = SteerConfig(
        episodes=episodes, epsilon=epsilon, seed=seed, n_envs=n_envs,
        max_episode_steps=max_episode_steps, layer=layer, features=[int(f) for f in features]
        if isinstance(features, list | tuple) else features, scale=scale, ablate=ablate,
        relative=relative, bootstrap=bootstrap,
    )  # fmt: skip
    cfg.validate("steer_features")
    agent = agent_dir if isinstance(agent_dir, Agent) else load_agent(agent_dir)
    is_dir = isinstance(sae_dir, str | os.PathLike)
    sae: Any = load_sae(sae_dir) if is_dir else sae_dir
    layer = cfg.layer or str(getattr(sae.cfg, "hook_name", "") or "")
    if not layer:
        raise RlsaeError("the SAE names no layer (hook_name); pass layer=/--layer")
    for f in cfg.features:
        check_sae(agent, sae, layer, f)
    check_sae_origin(agent, sae_dir if is_dir else None, layer)
    sae.eval()
    rng = feature_range(sae, acts, sae_dir if is_dir else None, arch=agent.arch)
    check_features(cfg.features, rng)
    values: list[float] | None = None
    if cfg.scale is not None and not cfg.relative:
        if rng is None:
            raise RlsaeError(
                "steering to a multiple of a feature's maximum needs --acts STORE (or the SAE's "
                "feature_stats.safetensors)"
            )
        values = [float(cfg.scale) * float(rng.max_activation[f]) for f in cfg.features]
    with _threads.torch_threads(torch_threads):
        base, steered, tally = _play_both(agent, sae, layer, cfg, values)
    return _result(agent, str(sae_dir) if is_dir else "", layer, cfg, values, rng, base, steered,
                   tally)  # fmt: skip


def _play_both(
    agent: Agent, sae: Any, layer: str, cfg: SteerConfig, values: list[float] | None
) -> tuple[list[RecordedEpisode], list[RecordedEpisode], _Tally]:
    """Play the spliced and the steered agent on the same seeds; tally the spliced states."""
    tally = _Tally()
    mult = cfg.scale if cfg.relative else None

    @torch.no_grad()
    def both(obs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _, h = agent.forward(obs, layer)
        f = sae.encode(h.float())
        q = agent.forward_from(layer, sae.decode(f).float())
        q_st = agent.forward_from(
            layer, sae.decode(steered_features(f, cfg.features, values, mult)).float()
        )
        return q, q_st, f

    def spliced(obs: np.ndarray) -> tuple[np.ndarray, None]:
        q, q_st, f = both(obs)
        tally.base.append(q.argmax(1).numpy())
        tally.steered.append(q_st.argmax(1).numpy())
        tally.firing.append((f[:, cfg.features] > 0).any(1).numpy())
        return q.numpy(), None

    def steered(obs: np.ndarray) -> tuple[np.ndarray, None]:
        return both(obs)[1].numpy(), None

    return play_episodes(agent, spliced, cfg), play_episodes(agent, steered, cfg), tally


def play_episodes(
    agent: Agent, policy: Any, cfg: EvalConfig, on_batch: Callable[[StepBatch], None] | None = None
) -> list[RecordedEpisode]:
    """Play ``cfg.episodes`` seeded episodes; each one's seed, actions and return
    (``on_batch`` sees every step batch, with what the policy passed along in ``extra``)."""
    eps: dict[int, RecordedEpisode] = {}
    batches: Any = play(
        agent.env_config, policy, seed=cfg.seed, episodes=cfg.episodes, epsilon=cfg.epsilon,
        n_envs=cfg.n_envs, max_episode_steps=cfg.max_episode_steps,
    )  # fmt: skip
    b: StepBatch
    for b in batches:
        if on_batch is not None:
            on_batch(b)
        log_steps(eps, b)
    return [eps[i] for i in range(cfg.episodes)]


def _result(
    agent: Agent,
    sae_path: str,
    layer: str,
    cfg: SteerConfig,
    values: list[float] | None,
    rng: FeatureRange | None,
    base: list[RecordedEpisode],
    steered: list[RecordedEpisode],
    tally: _Tally,
) -> SteerResult:
    a, b, fire = tally.arrays()
    changed = a != b
    r_base = [e.score for e in base]
    r_st = [e.score for e in steered]
    diffs = np.asarray(r_st, dtype=np.float64) - np.asarray(r_base, dtype=np.float64)
    n_actions = agent.head.out_features
    tv, kl = action_shift(a, b, n_actions)
    tv_f, kl_f = action_shift(a[fire], b[fire], n_actions) if fire.any() else (None, None)
    return SteerResult(
        agent=str(agent.path),
        sae=sae_path,
        layer=layer,
        features=list(cfg.features),
        scale=cfg.scale,
        relative=cfg.relative,
        values=list(values) if values is not None else [None] * len(cfg.features)
        if cfg.relative else [0.0] * len(cfg.features),
        feature_max=[float(rng.max_activation[f]) if rng is not None else None
                     for f in cfg.features],
        episodes=cfg.episodes,
        seed=cfg.seed,
        epsilon=cfg.epsilon,
        return_spliced=float(np.mean(r_base)),
        return_steered=float(np.mean(r_st)),
        delta_return=float(diffs.mean()),
        delta_return_ci=bootstrap_ci(diffs, cfg.bootstrap, cfg.seed),
        states=len(a),
        states_firing=int(fire.sum()),
        greedy_changed=float(changed.mean()) if len(a) else 0.0,
        greedy_changed_firing=float(changed[fire].mean()) if fire.any() else None,
        changed_states=int(changed.sum()),
        changed_states_firing=int((changed & fire).sum()),
        action_tv=tv,
        action_kl=kl,
        action_tv_firing=tv_f,
        action_kl_firing=kl_f,
        returns_spliced=r_base,
        returns_steered=r_st,
        episodes_spliced=base,
        episodes_steered=steered,
    )  # fmt: skip
