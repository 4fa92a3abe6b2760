"""Splicing an SAE into an agent: play with the SAE's reconstruction in place of the layer.

Three agents play the same seeded episodes: the original, the spliced one (the layer's
activations replaced by the SAE reconstruction) and a mean-ablated one (the layer replaced by
its mean activation over the original agent's states in these episodes). Reported:

- ``return_recovered`` = (R_sae - R_ablated) / (R_orig - R_ablated) (None when R_orig equals
  R_ablated: nothing to recover);
- ``action_agreement``: fraction of the original agent's states where the spliced network's
  greedy action equals the original's (``action_agreement_spliced``: the same on the states
  the spliced agent visits itself);
- ``q_fvu``: sum ||Q_sae - Q_orig||^2 / sum ||Q_orig - mean Q_orig||^2 over the original
  agent's states (fraction of Q-value variance unexplained).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rlsae import threads as _threads
from rlsae.agents.config import SpliceConfig
from rlsae.agents.dqn import Agent, load_agent
from rlsae.agents.effects import check_sae
from rlsae.agents.layers import check_layer
from rlsae.agents.results import SpliceResult
from rlsae.agents.rollout import episode_returns, play
from rlsae.errors import RlsaeError
from rlsae.sae import load_sae
from rlsae.sae.model import check_prefix


class _Stats:
    def __init__(self, width: int) -> None:
        self.n = 0
        self.agree = 0
        self.sq_err = 0.0
        self.q_sum = np.zeros(0)  # one per action of the game, sized by the first batch
        self.q_sq_sum = np.zeros(0)
        self.act_sum = np.zeros(width)

    def add(self, q: torch.Tensor, q_sae: torch.Tensor, acts: torch.Tensor) -> None:
        q64, s64 = q.double(), q_sae.double()
        if self.n == 0:
            self.q_sum, self.q_sq_sum = np.zeros(q.shape[1]), np.zeros(q.shape[1])
        self.n += q.shape[0]
        self.agree += int((q.argmax(1) == q_sae.argmax(1)).sum())
        self.sq_err += float(((s64 - q64) ** 2).sum())
        self.q_sum += q64.sum(0).numpy()
        self.q_sq_sum += (q64**2).sum(0).numpy()
        self.act_sum += acts.double().sum(0).numpy()

    def fvu(self) -> float | None:
        var = float((self.q_sq_sum - self.q_sum**2 / self.n).sum())
        return self.sq_err / var if var > 0 else None


def splice_metrics(
    agent_dir: str | os.PathLike | Agent,
    sae_dir: str | os.PathLike | Any,
    episodes: int = 5,
    seed: int = 0,
    *,
    layer: str | None = None,
    epsilon: float = 0.0,
    n_envs: int = 1,
    max_episode_steps: int | None = None,
    torch_threads: int | None = 1,
    prefix: int | None = None,
) -> SpliceResult:
    """Return recovered, greedy-action agreement and Q-value FVU of an SAE spliced into an agent.

    ``sae_dir`` is an SAE directory (or a loaded SAE); ``layer`` defaults to the SAE's hook name.
    ``prefix``: splice the reconstruction from the SAE's first ``prefix`` latents only
    (:meth:`~rlsae.sae.model.SAE.reconstruct`; a Matryoshka SAE's nested prefixes).
    The settings are those of :class:`~rlsae.agents.config.SpliceConfig`, checked first.
    """
    cfg = SpliceConfig(
        episodes=episodes, epsilon=epsilon, seed=seed, n_envs=n_envs,
        max_episode_steps=max_episode_steps, layer=layer, prefix=prefix,
    )  # fmt: skip
    cfg.validate("splice_metrics")
    agent = agent_dir if isinstance(agent_dir, Agent) else load_agent(agent_dir)
    sae = load_sae(sae_dir) if isinstance(sae_dir, str | os.PathLike) else sae_dir
    if cfg.prefix is not None:
        check_prefix(sae.cfg, cfg.prefix, "splice")
    layer = cfg.layer or str(getattr(sae.cfg, "hook_name", "") or "")
    if not layer:
        raise RlsaeError("the SAE names no layer (hook_name); pass layer=/--layer")
    check_sae(agent, sae, layer, 0)
    sae.eval()
    with _threads.torch_threads(torch_threads):
        recon = sae if cfg.prefix is None else functools.partial(sae.reconstruct, prefix=cfg.prefix)
        orig, spliced, returns = _play_three_variants(agent, recon, layer, cfg)

    def mean(r: list[float]) -> float:
        return float(np.mean(r))

    ro, rs, ra = (mean(returns[k]) for k in ("original", "sae", "ablated"))
    return SpliceResult(
        agent=str(agent.path),
        sae=str(sae_dir) if isinstance(sae_dir, str | os.PathLike) else "",
        layer=layer,
        episodes=cfg.episodes,
        seed=cfg.seed,
        epsilon=cfg.epsilon,
        return_original=ro,
        return_sae=rs,
        return_ablated=ra,
        return_recovered=(rs - ra) / (ro - ra) if ro != ra else None,
        action_agreement=orig.agree / orig.n,
        action_agreement_spliced=spliced.agree / spliced.n,
        q_fvu=orig.fvu(),
        states=orig.n,
        returns_original=returns["original"],
        returns_sae=returns["sae"],
        returns_ablated=returns["ablated"],
        prefix=cfg.prefix,
    )


def _play_three_variants(
    agent: Agent, sae: Callable[[torch.Tensor], torch.Tensor], layer: str, cfg: SpliceConfig
) -> tuple[_Stats, _Stats, dict[str, list[float]]]:
    """Play the original, spliced and mean-ablated agents on the same seeded episodes
    (``sae``: the reconstruction spliced in)."""
    _, width, _ = check_layer(agent.arch, layer)
    orig = _Stats(width)
    spliced = _Stats(width)

    @torch.no_grad()
    def original(obs: np.ndarray) -> tuple[np.ndarray, None]:
        q, acts = agent.forward(obs, layer)
        orig.add(q, agent.forward_from(layer, sae(acts.float())), acts)
        return q.numpy(), None

    @torch.no_grad()
    def with_sae(obs: np.ndarray) -> tuple[np.ndarray, None]:
        q, acts = agent.forward(obs, layer)
        q_sae = agent.forward_from(layer, sae(acts.float()))
        spliced.add(q, q_sae, acts)
        return q_sae.numpy(), None

    def returns(policy: Callable[[np.ndarray], tuple[np.ndarray, None]]) -> list[float]:
        r = episode_returns(
            play(
                agent.env_config,
                policy,
                seed=cfg.seed,
                episodes=cfg.episodes,
                epsilon=cfg.epsilon,
                n_envs=cfg.n_envs,
                max_episode_steps=cfg.max_episode_steps,
            )
        )
        return [float(r[i]["return"]) for i in range(cfg.episodes)]

    r_orig = returns(original)
    mean_act = torch.as_tensor(orig.act_sum / max(orig.n, 1), dtype=torch.float32)

    @torch.no_grad()
    def ablated(obs: np.ndarray) -> tuple[np.ndarray, None]:
        h = mean_act.expand(len(obs), width)
        return agent.forward_from(layer, h).numpy(), None

    r_sae = returns(with_sae)
    r_abl = returns(ablated)
    return orig, spliced, {"original": r_orig, "sae": r_sae, "ablated": r_abl}
