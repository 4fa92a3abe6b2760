"""The two Q-networks: SB3's NatureCNN and the poster's small CNN on raw RGB frames.

Both are SB3 features extractors followed by SB3's linear Q head (``net_arch=[]``), so every
agent is a plain ``stable_baselines3.DQN``. The hookable layers (post-ReLU activations) and
their widths are listed in :mod:`rlsae.agents.layers` (readable without torch).

``fc1`` is the poster's SAE site (its "first 512-wide hidden layer"); for nature it is the
512-unit NatureCNN features, the only layer before the linear head.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from torch import nn

from rlsae.agents.layers import HEAD, LAYERS, check_layer, layer_widths
from rlsae.errors import RlsaeError

POSTER_PARAMS = 878_505
"""Parameter count of the poster's network (conv stack + fc 960-512-512-9)."""


class PosterCNN(BaseFeaturesExtractor):
    """conv(3->16, k9, s2) -> maxpool 2 -> conv(16->32, k9, s3) -> conv(32->64, k6, s2)
    -> fc 960->512 -> fc 512->512, ReLU after each; input (3, 210, 160) uint8 scaled to [0, 1]."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 512) -> None:
        if tuple(observation_space.shape) != (3, 210, 160):
            raise RlsaeError(
                f"the poster network needs (3, 210, 160) RGB observations, got "
                f"{tuple(observation_space.shape)}; use --arch nature for 84x84 stacked frames"
            )
        super().__init__(observation_space, features_dim)
        self.conv1 = nn.Sequential(nn.Conv2d(3, 16, kernel_size=9, stride=2), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, kernel_size=9, stride=3), nn.ReLU())
        self.conv3 = nn.Sequential(nn.Conv2d(32, 64, kernel_size=6, stride=2), nn.ReLU())
        self.flatten = nn.Flatten()
        self.fc1 = nn.Sequential(nn.Linear(960, 512), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(512, features_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3(self.conv2(self.pool(self.conv1(x))))
        return self.fc2(self.fc1(self.flatten(x)))


def policy_kwargs(arch: str) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` for an architecture (both end in a single linear Q head)."""
    if arch == "poster":
        return dict(features_extractor_class=PosterCNN, net_arch=[])
    if arch == "nature":
        return dict(features_extractor_class=NatureCNN, net_arch=[])
    raise RlsaeError(f"unknown architecture {arch!r}; use nature or poster")


def get_module(root: nn.Module, path: str) -> nn.Module:
    mod = root
    for part in path.split("."):
        mod = getattr(mod, part)
    return mod


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "HEAD",
    "LAYERS",
    "POSTER_PARAMS",
    "PosterCNN",
    "check_layer",
    "count_parameters",
    "get_module",
    "layer_widths",
    "policy_kwargs",
]
