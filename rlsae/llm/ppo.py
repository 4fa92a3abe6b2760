"""PPO for language models, on plain transformers + torch (TRL 1.x no longer ships PPO).

One :meth:`PPOTrainer.step` is the classic RLHF update of Ziegler et al. (2019) as TRL's old
``PPOTrainer`` ran it for the paper:

1. sample one completion per prefix from the policy (top_k 0, top_p 1);
2. score each prefix + completion with the reward function;
3. per-token rewards: ``-kl_coef * (log pi(a_t) - log pi_ref(a_t))`` on every completion token,
   plus the score on the last one (:func:`kl_penalty_rewards`);
4. advantages by GAE(gamma, lambda) over the completion tokens with a value head on the policy's
   last hidden state (:func:`compute_gae`), whitened over the batch (:func:`whiten`);
5. ``ppo_epochs`` passes over shuffled mini-batches minimising the clipped policy loss
   (:func:`policy_loss`) plus ``vf_coef`` times the clipped value loss (:func:`value_loss`), with
   gradient-norm clipping;
6. the KL coefficient follows the adaptive controller (:class:`AdaptiveKLController`).

The functions are pure and tested against hand-computed values; the trainer wires them together.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from rlsae.errors import RlsaeError
from rlsae.llm.configs import PPOConfig
from rlsae.llm.generate import (
    Rollout,
    decode_rollout,
    response_logits,
    sample_completions,
    token_logprobs,
)

# --- the maths ----------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of ``x`` over positions where ``mask`` is 1."""
    mask = mask.to(x.dtype)
    n = mask.sum()
    mean = (x * mask).sum() / n.clamp(min=1.0)
    return (((x - mean) ** 2) * mask).sum() / (n - 1).clamp(min=1.0)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``(x - mean) / sqrt(var + 1e-8)`` over the masked positions (mean kept if not shift_mean)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def kl_penalty_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards and per-token KL.

    ``kl_t = logprobs_t - ref_logprobs_t`` on completion tokens (0 elsewhere);
    ``reward_t = -kl_coef * kl_t``, plus ``scores[b]`` on the last completion token of row b.
    """
    mask_f = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * mask_f
    rewards = -kl_coef * kl
    last = (mask.long().sum(dim=1) - 1).clamp(min=0)
    rows = torch.arange(rewards.shape[0])
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards, kl


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns over each row's completion tokens.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` (``V`` after the last completion token is 0),
    ``A_t = delta_t + gamma * lam * A_{t+1}``; returns ``(A, A + V)``, 0 where ``mask`` is 0.
    """
    b, t = rewards.shape
    mask_f = mask.to(values.dtype)
    adv = torch.zeros_like(values)
    last = torch.zeros(b, dtype=values.dtype, device=values.device)
    for i in reversed(range(t)):
        if i + 1 < t:
            next_value, next_mask = values[:, i + 1], mask_f[:, i + 1]
        else:
            next_value = next_mask = torch.zeros_like(last)
        delta = rewards[:, i] + gamma * next_value * next_mask - values[:, i]
        last = delta + gamma * lam * next_mask * last
        adv[:, i] = last
    adv = adv * mask_f
    return adv, (adv + values) * mask_f


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float = 0.2,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate: mean of ``max(-A r, -A clip(r, 1-eps, 1+eps))``, ``r = exp(logp - old)``."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask).item()
        approx_kl = 0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask).item()
    return loss, {"policy_clipfrac": clipfrac, "approx_kl": approx_kl}


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float = 0.2,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss: ``0.5 * mean(max((V - R)^2, (V_clip - R)^2))``, V_clip within old +- c."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    l1 = (values - returns) ** 2
    l2 = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(l1, l2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((l2 > l1).float(), mask).item()
    return loss, {"value_clipfrac": clipfrac}


class AdaptiveKLController:
    """Ziegler et al. (2019): ``coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon``."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


class FixedKLController:
    """A KL coefficient that never changes."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No change."""


# --- the trainer --------------------------------------------------------------------------------


class ValueHead(torch.nn.Module):
    """A scalar value per position from the policy's last hidden state."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.normal_(self.summary.weight, std=1.0 / math.sqrt(hidden_size + 1))
        torch.nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.float()).squeeze(-1)


RewardFn = Callable[[Sequence[str], Sequence[str]], list[float]]


class PPOTrainer:
    """Runs PPO steps on ``policy`` against a frozen ``ref_model`` with ``reward_fn``."""

    def __init__(
        self,
        policy: Any,
        ref_model: Any,
        tokenizer: Any,
        reward_fn: RewardFn,
        cfg: PPOConfig | None = None,
    ) -> None:
        self.cfg = cfg or PPOConfig()
        self.cfg.validate()
        self.policy = policy
        self.ref_model = ref_model
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.device = next(policy.parameters()).device
        hidden = int(policy.config.hidden_size)
        self.value_head = ValueHead(hidden).to(self.device)
        for p in ref_model.parameters():
            p.requires_grad_(False)
        ref_model.eval()
        policy.eval()  # no dropout: old and new log-probs must agree at the start
        params = list(policy.parameters()) + list(self.value_head.parameters())
        self.optimizer = torch.optim.Adam(params, lr=self.cfg.learning_rate)
        self.kl_ctl: AdaptiveKLController | FixedKLController = (
            AdaptiveKLController(self.cfg.init_kl_coef, self.cfg.target_kl, self.cfg.kl_horizon)
            if self.cfg.adaptive_kl
            else FixedKLController(self.cfg.init_kl_coef)
        )

    # one batch of per-token quantities without gradients, chunked to bound memory
    @torch.no_grad()
    def _score_tokens(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logps, ref_logps, values = [], [], []
        n = rollout.query.shape[0]
        for s in range(0, n, self.cfg.mini_batch_size):
            part = rollout.select(torch.arange(s, min(n, s + self.cfg.mini_batch_size)))
            resp = part.response.to(self.device)
            logits, hidden = response_logits(self.policy, part, output_hidden=True)
            logps.append(token_logprobs(logits, resp).cpu())
            values.append(self.value_head(hidden).cpu())
            ref_logits, _ = response_logits(self.ref_model, part)
            ref_logps.append(token_logprobs(ref_logits, resp).cpu())
        return torch.cat(logps), torch.cat(ref_logps), torch.cat(values)

    def step(self, prefix_ids: list[list[int]], seed: int) -> dict[str, float]:
        """One PPO step on ``prefix_ids`` (``batch_size`` prefixes); returns its statistics."""
        cfg = self.cfg
        if len(prefix_ids) != cfg.batch_size:
            raise RlsaeError(f"expected {cfg.batch_size} prefixes, got {len(prefix_ids)}")
        t0 = time.time()
        rollout = sample_completions(
            self.policy,
            self.tokenizer,
            prefix_ids,
            cfg.max_new_tokens,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            temperature=cfg.temperature,
            seed=seed,
            batch_size=cfg.batch_size,
        )
        t_gen = time.time() - t0
        prefixes, completions = decode_rollout(self.tokenizer, rollout)
        scores = torch.tensor(self.reward_fn(prefixes, completions), dtype=torch.float32)
        if not torch.isfinite(scores).all():
            raise RlsaeError("the reward function returned NaN or infinite rewards")

        mask = rollout.response_mask
        old_logps, ref_logps, old_values = self._score_tokens(rollout)
        kl_coef = self.kl_ctl.value
        rewards, kl = kl_penalty_rewards(scores, old_logps, ref_logps, mask, kl_coef)
        advantages, returns = compute_gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = whiten(advantages, mask)

        gen = torch.Generator().manual_seed(seed)
        totals: dict[str, float] = {}
        n_updates = 0
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(cfg.batch_size, generator=gen)
            for s in range(0, cfg.batch_size, cfg.mini_batch_size):
                idx = order[s : s + cfg.mini_batch_size]
                batch = (old_logps[idx], old_values[idx], advantages[idx], returns[idx])
                for k, v in self._update(rollout.select(idx), *batch).items():
                    totals[k] = totals.get(k, 0.0) + v
                n_updates += 1

        mean_kl = float(kl.sum(dim=1).mean())
        self.kl_ctl.update(mean_kl, cfg.batch_size)
        stats = {k: v / n_updates for k, v in totals.items()}
        stats.update(
            {
                "reward_mean": float(scores.mean()),
                "reward_std": float(scores.std()) if len(scores) > 1 else 0.0,
                "kl": mean_kl,
                "kl_coef": kl_coef,
                "next_kl_coef": self.kl_ctl.value,
                "completion_length": float(mask.sum(dim=1).float().mean()),
                "seconds": time.time() - t0,
                "seconds_generate": t_gen,
            }
        )
        return stats

    def _update(
        self,
        part: Rollout,
        old_logps: torch.Tensor,
        old_values: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
    ) -> dict[str, float]:
        """One gradient step on a mini-batch; its losses and statistics."""
        cfg = self.cfg
        m = part.response_mask.to(self.device)
        logits, hidden = response_logits(self.policy, part, output_hidden=True)
        logps = token_logprobs(logits, part.response.to(self.device))
        vpred = self.value_head(hidden)
        pg, pg_stats = policy_loss(
            logps, old_logps.to(self.device), advantages.to(self.device), m, cfg.cliprange
        )
        vf, vf_stats = value_loss(
            vpred, old_values.to(self.device), returns.to(self.device), m, cfg.cliprange_value
        )
        loss = pg + cfg.vf_coef * vf
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        self.optimizer.step()
        return {
            "policy_loss": pg.item(),
            "value_loss": vf.item(),
            "loss": loss.item(),
            "grad_norm": float(grad_norm),
            **pg_stats,
            **vf_stats,
        }

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, value head and KL coefficient (the policy is saved in HF format separately)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "value_head": self.value_head.state_dict(),
            "kl_coef": self.kl_ctl.value,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.value_head.load_state_dict(state["value_head"])
        self.kl_ctl.value = float(state["kl_coef"])


def sample_batch(pool: list[list[int]], batch_size: int, seed: int) -> list[list[int]]:
    """``batch_size`` prefixes drawn from ``pool`` with ``seed`` (with replacement if pool is small)."""
    rng = random.Random(seed)
    if len(pool) >= batch_size:
        return [pool[i] for i in rng.sample(range(len(pool)), batch_size)]
    return [pool[rng.randrange(len(pool))] for _ in range(batch_size)]
