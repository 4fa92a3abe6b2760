"""QR-DQN agents (sb3-contrib's ``QRDQN``, rl-zoo3's ``qrdqn``) imported as DQN agents.

A QR-DQN's network is a DQN's features extractor followed by one linear layer of
``n_quantiles x n_actions`` outputs, read as ``(n_quantiles, n_actions)`` (sb3-contrib's
``QuantileNetwork.forward``: ``quantiles.view(-1, n_quantiles, n_actions)``); it acts greedily on
the mean over quantiles (``QRDQNPolicy._predict``). The mean of linear outputs is a linear layer
with the mean weights and biases, so the imported agent is an ordinary DQN whose head is the
quantile head averaged over quantiles: its Q-values are the QR-DQN's quantile means exactly (up
to float rounding) and every layer before the head is unchanged.

Only the zip's weights-only ``policy.pth`` and the plain JSON of its ``data`` are read (the
action count from ``action_space.n``, the quantile count from ``policy_kwargs.n_quantiles``);
sb3-contrib itself is not needed to import.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rlsae.errors import RlsaeError

PREFIX = "quantile_net."
HEAD = "quantile_net.quantile_net.0"


def is_qrdqn(tensors: dict[str, torch.Tensor]) -> bool:
    """Whether an SB3 policy's tensors are a QR-DQN's (``quantile_net.*`` names)."""
    return any(k.startswith(PREFIX + "features_extractor.") for k in tensors)


def _data_dict(path: Path, key: str) -> dict[str, Any]:
    with zipfile.ZipFile(path) as z:
        try:
            value = json.loads(z.read("data")).get(key)
        except (ValueError, KeyError, zipfile.BadZipFile, OSError) as e:
            raise RlsaeError(f"{path}: the zip's data is not readable ({e})") from None
    return value if isinstance(value, dict) else {}


def quantile_shape(path: Path, tensors: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(n_quantiles, n_actions) of a QR-DQN zip, from its data, checked against the head."""
    w = tensors.get(HEAD + ".weight")
    b = tensors.get(HEAD + ".bias")
    if w is None or b is None or w.dim() != 2 or b.shape != w.shape[:1]:
        raise RlsaeError(f"{path}: the QR-DQN zip has no {HEAD}.weight/bias head")
    n_actions = _data_dict(path, "action_space").get("n")
    n_quantiles = _data_dict(path, "policy_kwargs").get("n_quantiles")
    rows = int(w.shape[0])
    if not isinstance(n_actions, int) or n_actions < 1:
        if not isinstance(n_quantiles, int) or n_quantiles < 1:
            raise RlsaeError(f"{path}: the zip's data gives neither action_space.n nor n_quantiles")
        n_actions = rows // n_quantiles
    n_quantiles = rows // n_actions
    if n_quantiles * n_actions != rows:
        raise RlsaeError(
            f"{path}: the quantile head has {rows} outputs, not a multiple of {n_actions} actions"
        )
    return n_quantiles, n_actions


def qrdqn_to_dqn(
    path: Path, tensors: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], str]:
    """The DQN tensors (``q_net.*`` names, head averaged over quantiles) of a QR-DQN policy,
    and the conversion in words; the target network is dropped."""
    n_q, n_a = quantile_shape(path, tensors)
    out: dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        if not k.startswith(PREFIX) or k.startswith(HEAD + "."):
            continue
        out["q_net." + k[len(PREFIX) :]] = v
    w, b = tensors[HEAD + ".weight"].double(), tensors[HEAD + ".bias"].double()
    out["q_net.q_net.0.weight"] = w.view(n_q, n_a, -1).mean(0).float()
    out["q_net.q_net.0.bias"] = b.view(n_q, n_a).mean(0).float()
    return out, (
        f"QR-DQN head ({n_q} quantiles x {n_a} actions) averaged over quantiles: Q = the mean "
        "of the quantiles, as QR-DQN acts"
    )


def qrdqn_check(model: Any, tensors: dict[str, torch.Tensor], shape: tuple[int, ...]) -> float:
    """Largest |dQ| / max|Q| between the imported agent and the QR-DQN's own quantile means
    (the full quantile head applied, reshaped as sb3-contrib does, then averaged) on seeded
    frames."""
    n_q = int(tensors[HEAD + ".weight"].shape[0]) // int(model.action_space.n)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, *shape), generator=gen, dtype=torch.uint8).float() / 255.0
    with torch.no_grad():
        feats = model.q_net.features_extractor(x)
        quantiles = F.linear(feats, tensors[HEAD + ".weight"], tensors[HEAD + ".bias"])
        q_ref = quantiles.view(-1, n_q, int(model.action_space.n)).mean(dim=1)
        q_new = model.q_net.q_net(feats)
    scale = float(q_ref.abs().max()) or 1.0
    return float((q_new - q_ref).abs().max()) / scale
