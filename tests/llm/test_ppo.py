"""PPO pieces against hand-computed values (and GAE against a Monte-Carlo return)."""

from __future__ import annotations

import math

import pytest
import torch

from rlsae.errors import RlsaeError
from rlsae.llm.ppo import (
    AdaptiveKLController,
    FixedKLController,
    PPOConfig,
    compute_gae,
    kl_penalty_rewards,
    policy_loss,
    sample_batch,
    value_loss,
    whiten,
)


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_gae_hand_computed():
    rewards = t([[1.0, 0.0, 2.0], [0.0, 3.0, 5.0]])
    values = t([[0.5, 1.0, 0.0], [1.0, 2.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: A2 = 2; A1 = -1 + 0.72*2 = 0.44; A0 = 1.4 + 0.72*0.44 = 1.7168
    # row 1 (last token masked): A1 = 3 - 2 = 1; A0 = 0 + 0.9*2 - 1 + 0.72*1 = 1.52
    assert torch.allclose(adv, t([[1.7168, 0.44, 2.0], [1.52, 1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, t([[2.2168, 1.44, 2.0], [2.52, 3.0, 0.0]]), atol=1e-6)


def test_gae_lambda_one_is_monte_carlo():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(4, 6, generator=g)
    values = torch.randn(4, 6, generator=g)
    lengths = [6, 4, 1, 3]
    mask = torch.tensor([[1] * n + [0] * (6 - n) for n in lengths])
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    for b, n in enumerate(lengths):
        for i in range(n):
            mc = rewards[b, i:n].sum()  # undiscounted return to the end of the completion
            assert adv[b, i].item() == pytest.approx((mc - values[b, i]).item(), abs=1e-5)
            assert ret[b, i].item() == pytest.approx(mc.item(), abs=1e-5)
        assert adv[b, n:].abs().sum() == 0


def test_kl_penalty_hand_computed():
    scores = t([1.0, -2.0])
    logp = t([[-1.0, -2.0, -3.0], [-0.5, -1.0, -9.0]])
    ref = t([[-1.5, -2.0, -2.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards, kl = kl_penalty_rewards(scores, logp, ref, mask, kl_coef=0.5)
    assert torch.allclose(kl, t([[0.5, 0.0, -1.0], [0.5, 0.0, 0.0]]))
    # -0.5 * kl, plus the score on each row's last completion token
    assert torch.allclose(rewards, t([[-0.25, 0.0, 1.5], [-0.25, -2.0, 0.0]]))


def test_policy_loss_hand_computed_and_gradient():
    old = torch.zeros(1, 3)
    new = torch.log(t([[1.5, 0.5, 1.1]])).requires_grad_(True)
    adv = t([[1.0, 1.0, -1.0]])
    mask = torch.ones(1, 3)
    loss, stats = policy_loss(new, old, adv, mask, cliprange=0.2)
    # max(-A r, -A clip(r)): 1.5 -> max(-1.5, -1.2) = -1.2; 0.5 -> max(-0.5, -0.8) = -0.5;
    # 1.1 with A=-1 -> 1.1 (inside the clip range)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.1) / 3)
    assert stats["policy_clipfrac"] == pytest.approx(1 / 3)
    loss.backward()
    # d/dlogp of -A r = -A r; the clipped term has no gradient
    assert torch.allclose(new.grad, t([[0.0, -0.5 / 3, 1.1 / 3]]), atol=1e-6)


def test_policy_loss_ignores_masked_tokens():
    old = torch.zeros(1, 2)
    new = t([[0.0, 5.0]])
    loss, _ = policy_loss(new, old, t([[2.0, 100.0]]), torch.tensor([[1, 0]]))
    assert loss.item() == pytest.approx(-2.0)


def test_value_loss_hand_computed():
    loss, stats = value_loss(
        t([[0.5, -0.1]]), t([[0.0, 0.0]]), t([[1.0, 1.0]]), torch.ones(1, 2), cliprange_value=0.2
    )
    # (0.5-1)^2 = 0.25 vs clipped (0.2-1)^2 = 0.64 -> 0.64 ; -0.1 in range -> 1.21
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.21) / 2)
    assert stats["value_clipfrac"] == pytest.approx(0.5)


def test_whiten_hand_computed():
    x = t([[1.0, 2.0, 3.0, 4.0]])
    out = whiten(x, torch.ones(1, 4))
    assert out.tolist()[0] == pytest.approx(
        [(v - 2.5) / math.sqrt(5 / 3) for v in [1, 2, 3, 4]], abs=1e-5
    )
    out = whiten(t([[1.0, 2.0, 3.0, 100.0]]), torch.tensor([[1, 1, 1, 0]]))
    assert out.tolist()[0] == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-5)


def test_adaptive_kl_controller_hand_computed():
    ctl = AdaptiveKLController(0.5, target=6.0, horizon=10000)
    ctl.update(9.0, 64)  # error 0.5 clipped to 0.2: x (1 + 0.2 * 64 / 10000)
    assert ctl.value == pytest.approx(0.5 * 1.00128)
    ctl.update(3.0, 64)  # error -0.5 clipped to -0.2
    assert ctl.value == pytest.approx(0.5 * 1.00128 * 0.99872)
    ctl.update(6.6, 1000)  # error 0.1: x 1.01
    assert ctl.value == pytest.approx(0.5 * 1.00128 * 0.99872 * 1.01)
    fixed = FixedKLController(0.3)
    fixed.update(100.0, 64)
    assert fixed.value == 0.3


def test_config_validation_one_line():
    with pytest.raises(RlsaeError, match="not divisible by mini-batch size 24") as e:
        PPOConfig(batch_size=64, mini_batch_size=24).validate()
    assert "\n" not in str(e.value)
    PPOConfig().validate()
    assert PPOConfig().batch_size == 64 and PPOConfig().learning_rate == 1e-6


def test_sample_batch_is_seeded():
    pool = [[i] for i in range(100)]
    a, b = sample_batch(pool, 8, 3), sample_batch(pool, 8, 3)
    assert a == b and len({x[0] for x in a}) == 8
    assert sample_batch(pool, 8, 4) != a
    assert len(sample_batch(pool[:3], 8, 0)) == 8  # small pool: with replacement
