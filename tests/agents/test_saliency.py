"""Saliency: gradients against finite differences, integrated gradients' completeness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rlsae.agents.dqn import load_agent
from rlsae.agents.saliency import (
    feature_saliency,
    gradient_x_input,
    heat_map,
    integrated_gradients,
)
from rlsae.errors import RlsaeError
from rlsae.sae import SAE, SAEConfig, save_sae


def _small_fn():
    """A small conv net (softplus: smooth, so finite differences are exact to O(eps^2)) and an
    SAE-style ReLU read-out on top, in float64."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, stride=2).double()
    lin = torch.nn.Linear(3 * 3 * 3, 5).double()
    w_enc = torch.randn(5, generator=g, dtype=torch.float64).abs()  # fires: a > 0

    def fn(x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.softplus(conv(x.double() / 255.0))
        z = torch.nn.functional.softplus(lin(h.flatten(1)))
        return torch.relu(z @ w_enc - 0.1)

    return fn


def test_gradient_x_input_equals_finite_differences_on_a_small_network():
    fn = _small_fn()
    x = torch.rand(2, 7, 7, dtype=torch.float64) * 255
    got = gradient_x_input(fn, x).numpy()
    eps = 1e-3
    fd = np.zeros_like(got)
    for idx in np.ndindex(*x.shape):
        up, down = x.clone(), x.clone()
        up[idx] += eps
        down[idx] -= eps
        with torch.no_grad():
            fd[idx] = float(fn(up[None])[0] - fn(down[None])[0]) / (2 * eps) * float(x[idx])
    assert np.abs(got).max() > 1e-3
    assert np.allclose(got, fd, rtol=1e-5, atol=1e-8)


def test_integrated_gradients_are_complete_on_a_small_network():
    fn = _small_fn()
    x = torch.rand(2, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 255
    for x0 in (torch.zeros_like(x), torch.full_like(x, 100.0)):
        attr, a, a0 = integrated_gradients(fn, x, x0, steps=64)
        assert abs(a - a0) > 1e-2
        assert float(attr.sum()) == pytest.approx(a - a0, abs=1e-3)


def _firing(agent, sae, layer):
    from rlsae.agents.envs import make_vec_env

    env = make_vec_env(agent.arch, 2, seed=3)
    env.reset()
    for _ in range(30):
        obs, *_ = env.step(np.random.default_rng(0).integers(0, 9, 2))
    env.close()
    _, h = agent.forward(obs, layer)
    with torch.no_grad():
        f = sae.encode(h.float())
    j = int(f[0].argmax())
    assert float(f[0, j]) > 0
    return obs[0], j


def _sae(layer: str) -> SAE:
    sae = SAE(SAEConfig(d_in=512, d_sae=32, k=8, hook_name=layer), seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
    return sae


def test_integrated_gradients_are_complete_on_the_agent(nature_agent: Path):
    agent = load_agent(nature_agent)
    sae = _sae("fc1")
    obs, j = _firing(agent, sae, "fc1")
    attr, a, a0 = feature_saliency(agent, sae, "fc1", j, obs, method="ig", steps=256)
    assert attr.shape == (4, 84, 84)
    assert a0 is not None and abs(a - a0) > 0
    assert float(attr.astype(np.float64).sum()) == pytest.approx(a - a0, abs=1e-3)
    gxi, a_g, none = feature_saliency(agent, sae, "fc1", j, obs, method="gxi")
    assert none is None and a_g == pytest.approx(a) and np.abs(gxi).max() > 0
    screen, stack = heat_map(attr, "nature")
    assert screen.shape == (210, 160) and stack is not None and stack.shape == (4, 84, 84)
    with pytest.raises(RlsaeError, match="does not fit a nature agent"):
        feature_saliency(agent, sae, "fc1", j, obs[:3], method="gxi")
    with pytest.raises(RlsaeError, match="out of range"):
        feature_saliency(agent, sae, "fc1", 32, obs, method="gxi")


def test_dqn_saliency_command_writes_an_overlay(
    poster_agent: Path, poster_recording: Path, tmp_path: Path, run_cli
):
    from PIL import Image

    sae_dir = tmp_path / "sae"
    save_sae(_sae("fc1"), sae_dir)
    out = tmp_path / "sal.png"
    code, stdout, err = run_cli(
        "dqn", "saliency", "--agent", poster_agent, "--sae", sae_dir, "--acts", poster_recording,
        "--feature", "0", "--episode", "0", "--step", "3", "--out", out, "--method", "ig",
        "--baseline", "mean", "--steps", "8", "--json",
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(stdout)
    assert res["method"] == "ig" and res["baseline"] == "mean" and res["out"] == str(out)
    assert Image.open(out).size == (160, 210)
    bad = tmp_path / "no.png"
    code, _, err = run_cli(
        "dqn", "saliency", "--agent", poster_agent, "--sae", sae_dir, "--acts", poster_recording,
        "--feature", "0", "--step", "100000", "--out", bad,
    )  # fmt: skip
    assert code == 2 and not bad.exists() and len(err.strip().splitlines()) == 1


def test_dqn_saliency_refuses_an_sae_of_another_agent_arch(
    poster_agent: Path, poster_recording: Path, tmp_path: Path, run_cli
):
    """The SAE's training.json says which agent architecture its store came from: an SAE of a
    nature agent is refused on a poster agent's state in one line, and no PNG is written."""
    from rlsae.sae.config import TrainConfig
    from rlsae.sae.train import TrainingRecord, train_sae

    sdir = tmp_path / "sae"
    train_sae(poster_recording, sdir, TrainConfig(d_sae=16, k=4, steps=2, batch_size=32),
              progress=False)  # fmt: skip
    rec = TrainingRecord.read(sdir / "training.json")
    assert rec.origin["arch"] == "poster"
    rec.origin["arch"] = "nature"
    rec.write(sdir / "training.json")
    out = tmp_path / "sal.png"
    code, stdout, err = run_cli(
        "dqn", "saliency", "--agent", poster_agent, "--sae", sdir, "--acts", poster_recording,
        "--feature", "0", "--step", "3", "--out", out, "--method", "gxi",
    )  # fmt: skip
    assert code == 2 and stdout == "" and err.count("\n") == 1
    assert "trained on activations of a nature agent; this agent is poster" in err
    assert not out.exists()
