"""Feature action effects against hand computation; splicing against known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rlsae.agents.dqn import load_agent
from rlsae.agents.effects import (
    action_effect_grid,
    direct_effect,
    direct_effect_grid,
    feature_effect,
    joystick_layout,
    to_grid,
)
from rlsae.agents.envs import make_vec_env
from rlsae.agents.results import SpliceResult
from rlsae.agents.splice import splice_metrics
from rlsae.errors import RlsaeError
from rlsae.sae import SAE, SAEConfig


def _obs(mode: str, n: int = 3) -> np.ndarray:
    env = make_vec_env(mode, n, seed=11)
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(40):
        obs, *_ = env.step(rng.integers(0, 9, n))
    env.close()
    return obs


def _sae(layer: str, d_in: int = 512, d_sae: int = 64, k: int = 8) -> SAE:
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, k=k, hook_name=layer), seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(0.05)  # make features fire on the small activations of a tiny agent
    return sae


def test_joystick_grid_puts_each_direction_where_the_stick_points():
    # ale-py Ms. Pac-Man order: NOOP UP RIGHT LEFT DOWN UPRIGHT UPLEFT DOWNRIGHT DOWNLEFT
    assert joystick_layout().tolist() == [[6, 1, 5], [3, 0, 2], [8, 4, 7]]
    assert to_grid(np.arange(9))[1, 1] == 0  # NOOP in the centre


def test_effect_at_the_last_layer_equals_activation_times_wq_dot_decoder_row(poster_agent: Path):
    agent = load_agent(poster_agent)
    sae = _sae("fc2")
    obs = _obs("poster")
    _, acts = agent.forward(obs, "fc2")
    f = sae.encode(acts).detach().numpy()
    j = int(np.argmax((f > 0).sum(0)))  # a feature that fires on these states
    assert (f[:, j] > 0).any()
    W_q = agent.head.weight.detach().numpy().astype(np.float64)
    d_j = sae.W_dec[j].detach().numpy().astype(np.float64)
    hand = f[:, j : j + 1] * (W_q @ d_j)[None, :]
    got = feature_effect(agent, sae, "fc2", j, obs)
    assert np.allclose(got, hand, atol=1e-4)
    assert np.allclose(direct_effect(agent, sae, "fc2", j), W_q @ d_j, atol=1e-5)
    grid = direct_effect_grid(agent, sae, "fc2", j)
    assert grid[1, 1] == pytest.approx((W_q @ d_j)[0], abs=1e-5)  # NOOP
    assert grid[0, 1] == pytest.approx((W_q @ d_j)[1], abs=1e-5)  # UP
    assert grid[2, 0] == pytest.approx((W_q @ d_j)[8], abs=1e-5)  # DOWNLEFT


def test_effect_through_fc2_matches_a_numpy_forward_pass(poster_agent: Path):
    agent = load_agent(poster_agent)
    sae = _sae("fc1")
    obs = _obs("poster", 2)
    _, acts = agent.forward(obs, "fc1")
    f = sae.encode(acts).detach().numpy().astype(np.float64)
    j = int(np.argmax((f > 0).sum(0)))
    sd = {k: v.detach().numpy().astype(np.float64) for k, v in agent.q_network.state_dict().items()}
    W_dec = sae.W_dec.detach().numpy().astype(np.float64)
    b_dec = sae.b_dec.detach().numpy().astype(np.float64)

    def q_of(h):  # fc2 (ReLU) then the linear head, by hand
        z = np.maximum(
            h @ sd["features_extractor.fc2.0.weight"].T + sd["features_extractor.fc2.0.bias"], 0
        )
        return z @ sd["q_net.0.weight"].T + sd["q_net.0.bias"]

    f_removed = f.copy()
    f_removed[:, j] = 0
    hand = q_of(f @ W_dec + b_dec) - q_of(f_removed @ W_dec + b_dec)
    grid = action_effect_grid(agent, sae, "fc1", j, obs)
    assert grid.shape == (2, 3, 3)
    assert np.allclose(grid, hand[:, joystick_layout()], atol=1e-4)
    assert np.abs(hand).max() > 0  # the feature does something here
    # a single RGB screen (what the viewer has) gives the same grid as the observation
    one = action_effect_grid(agent, sae, "fc1", j, obs[0].transpose(1, 2, 0))
    assert np.allclose(one, grid[0], atol=1e-5)
    with pytest.raises(RlsaeError, match="not followed only by the linear Q head; .*fc2"):
        direct_effect(agent, sae, "fc1", j)


def test_effects_refuse_an_sae_of_another_layer_or_width(poster_agent: Path, nature_agent: Path):
    agent = load_agent(poster_agent)
    obs = _obs("poster", 1)
    with pytest.raises(RlsaeError, match="trained on layer 'fc2', not 'fc1'"):
        feature_effect(agent, _sae("fc2"), "fc1", 0, obs)
    with pytest.raises(RlsaeError, match="960 wide"):
        feature_effect(agent, _sae("conv3"), "conv3", 0, obs)
    with pytest.raises(RlsaeError, match="out of range"):
        feature_effect(agent, _sae("fc1"), "fc1", 64, obs)
    with pytest.raises(RlsaeError, match="unknown layer 'fc2' for a nature agent"):
        feature_effect(load_agent(nature_agent), _sae("fc2"), "fc2", 0, _obs("nature", 1))


def _identity_sae(layer: str, d: int = 512) -> SAE:
    """ReLU SAE with W_enc = [I, -I], W_dec = [I; -I]: relu(x) - relu(-x) = x exactly."""
    sae = SAE(SAEConfig(d_in=d, d_sae=2 * d, arch="relu", hook_name=layer), seed=0)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def _fc1_states(agent, seed: int, episodes: int, max_episode_steps: int) -> torch.Tensor:
    """fc1 activations of every state the agent visits, played greedily (as splice does)."""
    from rlsae.agents.rollout import play

    acts = []

    def pol(obs):
        q, a = agent.forward(obs, "fc1")
        acts.append(a)
        return q.numpy(), None

    list(
        play(
            agent.env_config, pol, seed=seed, episodes=episodes, max_episode_steps=max_episode_steps
        )
    )
    return torch.cat(acts)


def _state_reading_agent(nature_agent: Path):
    """The tiny agent's fc1 barely varies between states, so its greedy action hardly does and
    the mean ablation plays the same game (the case where nothing can be recovered). Give it a
    head that reads fc1's deviation from its mean (Q = W (h - mean), W random): the mean-ablated
    agent then sees Q = 0 and plays differently from the original for certain."""
    agent = load_agent(nature_agent)
    mean = _fc1_states(agent, seed=1, episodes=2, max_episode_steps=80).double().mean(0).float()
    w = torch.randn(agent.head.weight.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        agent.head.weight.copy_(w)
        agent.head.bias.copy_(-w @ mean)
    return agent


KW = dict(episodes=2, seed=1, epsilon=0.0, max_episode_steps=80)


def test_a_perfect_sae_recovers_everything(nature_agent: Path):
    agent = _state_reading_agent(nature_agent)
    res = splice_metrics(agent, _identity_sae("fc1"), **KW)
    assert res.action_agreement == 1.0 and res.action_agreement_spliced == 1.0
    assert res.q_fvu == pytest.approx(0.0, abs=1e-9)
    assert res.returns_sae == res.returns_original
    assert res.return_original != res.return_ablated  # certain: see _state_reading_agent
    assert res.return_recovered == pytest.approx(1.0)
    assert res.states == 160
    assert res.return_original == pytest.approx(np.mean(res.returns_original))
    # typed artifact: the --json object reads back as the same result
    assert SpliceResult.from_json(json.loads(json.dumps(res.to_json()))) == res


def test_nothing_to_recover_gives_none(nature_agent: Path):
    """Five steps into a game nobody has scored: R_orig = R_ablated = 0, recovered is None."""
    res = splice_metrics(_state_reading_agent(nature_agent), _identity_sae("fc1"),
                         **{**KW, "max_episode_steps": 5})  # fmt: skip
    assert res.returns_original == res.returns_ablated == [0.0, 0.0]
    assert res.return_recovered is None
    assert res.to_json()["return_recovered"] is None


def test_a_constant_sae_at_the_mean_acts_like_mean_ablation(nature_agent: Path):
    """An SAE whose reconstruction is always its b_dec = the layer's mean over the original
    episodes is the mean ablation: spliced and ablated returns coincide."""
    agent = _state_reading_agent(nature_agent)
    # recompute the mean activation of the original agent's states by playing again
    mean = _fc1_states(agent, seed=1, episodes=2, max_episode_steps=80).double().mean(0).float()
    const = SAE(SAEConfig(d_in=512, d_sae=4, arch="relu", hook_name="fc1"), seed=0)
    with torch.no_grad():
        const.W_enc.zero_()
        const.b_enc.fill_(-1.0)  # never fires
        const.b_dec.copy_(mean)
    res = splice_metrics(agent, const, **KW)
    assert res.returns_sae == res.returns_ablated
    assert res.return_original != res.return_ablated  # certain: see _state_reading_agent
    assert res.action_agreement < 1.0
    assert res.return_recovered == pytest.approx(0.0)


def test_splice_refuses_an_sae_for_another_width(poster_agent: Path):
    with pytest.raises(RlsaeError, match="960 wide"):
        splice_metrics(poster_agent, _sae("conv3"), episodes=1)
