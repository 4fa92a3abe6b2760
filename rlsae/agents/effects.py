"""What an SAE feature does to the agent's action values.

For an SAE trained on a layer, a feature ``j`` and a state: encode the layer's activations,
decode the reconstruction with and without feature ``j``, run both through the rest of the
network, and take the difference of the Q-values per action:

    effect = Q(rest(decode(f))) - Q(rest(decode(f with f_j = 0)))

This is the feature's *contribution* to each action value in that state (positive: the feature
pushes the agent towards that action); removing the feature changes Q by ``-effect``. When the
layer is followed only by the linear Q head (poster ``fc2``, nature ``fc1``), the effect is
``f_j * (W_q @ d_j)``, and ``W_q @ d_j`` (:func:`direct_effect`) is the state-independent
effect of one unit of the feature.

Effects are laid out as the 3x3 joystick grid (rows up/centre/down, columns left/centre/right,
NOOP in the centre), derived from ale-py's Ms. Pac-Man action names:

    UPLEFT    UP    UPRIGHT
    LEFT      NOOP  RIGHT
    DOWNLEFT  DOWN  DOWNRIGHT
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from rlsae.agents.dqn import Agent
from rlsae.agents.envs import action_meanings
from rlsae.agents.layers import LAYERS, check_layer
from rlsae.errors import RlsaeError

_ROW = {"UP": 0, "": 1, "DOWN": 2}
_COL = {"LEFT": 0, "": 1, "RIGHT": 2}


@functools.lru_cache(maxsize=1)
def joystick_layout() -> np.ndarray:
    """(3, 3) array of action ids: where each Ms. Pac-Man action sits on the joystick grid."""
    grid = np.full((3, 3), -1, dtype=np.int64)
    for action, name in enumerate(action_meanings()):
        vertical = "UP" if name.startswith("UP") else "DOWN" if name.startswith("DOWN") else ""
        horizontal = "LEFT" if name.endswith("LEFT") else "RIGHT" if name.endswith("RIGHT") else ""
        if name not in ("NOOP", vertical + horizontal):
            raise RlsaeError(f"unexpected Ms. Pac-Man action name {name!r} from ale-py")
        grid[_ROW[vertical], _COL[horizontal]] = action
    if (grid < 0).any():
        raise RlsaeError("ale-py's Ms. Pac-Man action set does not fill the 3x3 joystick grid")
    return grid


def to_grid(values: Any) -> np.ndarray:
    """Lay out per-action values (..., 9) on the joystick grid (..., 3, 3)."""
    v = np.asarray(values)
    if v.shape[-1] != 9:
        raise RlsaeError(f"expected 9 action values, got {v.shape[-1]}")
    return v[..., joystick_layout()]


def check_sae(agent: Agent, sae: Any, layer: str, feature: int) -> None:
    """Refuse an SAE of another width or layer, or a feature it does not have (one line)."""
    _, width, _ = check_layer(agent.arch, layer)
    cfg = sae.cfg
    if int(cfg.d_in) != width:
        raise RlsaeError(
            f"the SAE reads {cfg.d_in}-wide activations but layer {layer} is {width} wide"
        )
    hook = str(getattr(cfg, "hook_name", "") or "")
    if hook and hook != layer:
        raise RlsaeError(f"the SAE was trained on layer {hook!r}, not {layer!r}")
    if not 0 <= int(feature) < int(cfg.d_sae):
        raise RlsaeError(f"feature {feature} out of range: the SAE has {cfg.d_sae} features")


def _as_obs(agent: Agent, obs: Any) -> tuple[torch.Tensor, bool]:
    """A batch of agent observations; accepts an RGB screen (210, 160, 3) for poster agents."""
    t = torch.as_tensor(np.asarray(obs))
    shape = agent.env_config.obs_shape
    if agent.arch == "poster" and tuple(t.shape[-3:]) == (210, 160, 3):
        t = t.movedim(-1, -3)
    single = t.dim() == 3
    if single:
        t = t.unsqueeze(0)
    if tuple(t.shape[1:]) != shape:
        hint = " (nature agents need the stacked observation: replay_observations)"
        raise RlsaeError(
            f"observation shape {tuple(t.shape[1:])} does not fit a {agent.arch} agent "
            f"(expects {shape})" + (hint if agent.arch == "nature" else "")
        )
    return t, single


@torch.no_grad()
def feature_effect(agent: Agent, sae: Any, layer: str, feature: int, obs: Any) -> np.ndarray:
    """Per-action contribution of ``feature`` in state(s) ``obs``: (9,) or (n, 9)."""
    check_sae(agent, sae, layer, feature)
    x, single = _as_obs(agent, obs)
    _, acts = agent.forward(x, layer)
    f = sae.encode(acts.float())
    f_removed = f.clone()
    f_removed[:, int(feature)] = 0.0
    q_full = agent.forward_from(layer, sae.decode(f))
    q_removed = agent.forward_from(layer, sae.decode(f_removed))
    eff = (q_full - q_removed).numpy()
    return eff[0] if single else eff


def action_effect_grid(agent: Agent, sae: Any, layer: str, feature: int, obs: Any) -> np.ndarray:
    """:func:`feature_effect` on the 3x3 joystick grid (NOOP centre): (3, 3) or (n, 3, 3)."""
    return to_grid(feature_effect(agent, sae, layer, feature, obs))


@torch.no_grad()
def direct_effect(agent: Agent, sae: Any, layer: str, feature: int) -> np.ndarray:
    """``W_q @ d_feature`` (9,): the state-independent effect of one unit of the feature.

    Only defined when ``layer`` feeds the linear Q head directly (poster ``fc2``, nature ``fc1``).
    """
    check_sae(agent, sae, layer, feature)
    _, _, rest = check_layer(agent.arch, layer)
    if rest:
        direct = [n for n, spec in LAYERS[agent.arch].items() if not spec[2]]
        raise RlsaeError(
            f"layer {layer} is not followed only by the linear Q head; the state-independent "
            f"effect exists for {', '.join(direct)}"
        )
    d = sae.W_dec[int(feature)].detach().float()
    return (agent.head.weight.detach().float() @ d).numpy()


def direct_effect_grid(agent: Agent, sae: Any, layer: str, feature: int) -> np.ndarray:
    """:func:`direct_effect` on the joystick grid (3, 3)."""
    return to_grid(direct_effect(agent, sae, layer, feature))
