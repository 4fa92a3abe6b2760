"""The two Q-networks: sizes, layer widths, the poster's parameter count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from rlsae.agents.networks import POSTER_PARAMS, PosterCNN, count_parameters, layer_widths
from rlsae.errors import RlsaeError


def _conv_out(n: int, k: int, s: int) -> int:
    return (n - k) // s + 1


def test_poster_cnn_has_the_posters_parameter_count_and_shapes():
    # hand count: conv weights + biases, then the three linear layers of fc 960-512-512-9
    h, w = _conv_out(210, 9, 2) // 2, _conv_out(160, 9, 2) // 2
    h, w = _conv_out(h, 9, 3), _conv_out(w, 9, 3)
    h, w = _conv_out(h, 6, 2), _conv_out(w, 6, 2)
    flat = 64 * h * w
    assert flat == 960
    hand = (3 * 16 * 81 + 16) + (16 * 32 * 81 + 32) + (32 * 64 * 36 + 64)
    hand += (flat * 512 + 512) + (512 * 512 + 512) + (512 * 9 + 9)
    assert hand == 878_505 == POSTER_PARAMS

    from stable_baselines3 import DQN

    from rlsae.agents.envs import make_vec_env
    from rlsae.agents.networks import policy_kwargs

    env = make_vec_env("poster", 1, seed=0)
    model = DQN(
        "CnnPolicy", env, policy_kwargs=policy_kwargs("poster"), buffer_size=10, device="cpu"
    )
    assert count_parameters(model.q_net) == hand
    env.close()


def test_poster_cnn_layer_outputs_have_the_listed_widths():
    net = PosterCNN(spaces.Box(0, 255, (3, 210, 160), np.uint8))
    x = torch.rand(2, 3, 210, 160)
    seen = {}
    for name in ("flatten", "fc1", "fc2"):
        getattr(net, name).register_forward_hook(lambda m, i, o, n=name: seen.__setitem__(n, o))
    out = net(x)
    assert out.shape == (2, 512)
    widths = layer_widths("poster")
    assert seen["flatten"].shape[1] == widths["conv3"] == 960
    assert seen["fc1"].shape[1] == widths["fc1"] == 512
    assert (seen["fc1"] >= 0).all()  # post-ReLU


def test_poster_cnn_rejects_stacked_gray_frames():
    with pytest.raises(RlsaeError, match="poster network needs"):
        PosterCNN(spaces.Box(0, 255, (4, 84, 84), np.uint8))
