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
NOOP in the centre), derived from ale-py's action names of the agent's game (Ms. Pac-Man's):

    UPLEFT    UP    UPRIGHT
    LEFT      NOOP  RIGHT
    DOWNLEFT  DOWN  DOWNRIGHT

A game whose 18 actions are the joystick with and without the button gets a 3x6 grid: the
joystick without FIRE on the left, with FIRE on the right (``FIRE`` in the right centre). Any
other action set (Breakout's NOOP, FIRE, RIGHT, LEFT; Pong's 6) is one row of all its action
values in ale-py's order, drawn as a bar chart labelled with :func:`rlsae.agents.envs.action_meanings`.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from rlsae.agents.config import DEFAULT_GAME
from rlsae.agents.dqn import Agent
from rlsae.agents.envs import action_meanings
from rlsae.agents.layers import LAYERS, check_layer
from rlsae.errors import RlsaeError

_ROW = {"UP": 0, "": 1, "DOWN": 2}
_COL = {"LEFT": 0, "": 1, "RIGHT": 2}


@functools.lru_cache(maxsize=16)
def action_layout(game: str = DEFAULT_GAME) -> np.ndarray | None:
    """Where each action of ``game`` sits on the joystick grid: (3, 3) action ids for a 9-action
    joystick (NOOP centre), (3, 6) for an 18-action joystick with button (without FIRE left,
    with FIRE right); ``None`` for any other action set (drawn as a bar chart)."""
    names = action_meanings(game)
    fire = len(names) == 18
    if len(names) not in (9, 18):
        return None
    grid = np.full((3, 6 if fire else 3), -1, dtype=np.int64)
    for action, full in enumerate(names):
        pressed = full.endswith("FIRE")
        name = full[: -len("FIRE")] if pressed else full
        name = "" if name in ("NOOP", "") else name
        vertical = "UP" if name.startswith("UP") else "DOWN" if name.startswith("DOWN") else ""
        horizontal = "LEFT" if name.endswith("LEFT") else "RIGHT" if name.endswith("RIGHT") else ""
        if name != vertical + horizontal or (pressed and not fire):
            return None
        col = _COL[horizontal] + (3 if pressed else 0)
        if grid[_ROW[vertical], col] >= 0:
            return None
        grid[_ROW[vertical], col] = action
    return None if (grid < 0).any() else grid


def joystick_layout(game: str = DEFAULT_GAME) -> np.ndarray:
    """(3, 3) (or (3, 6)) array of action ids: where each action of ``game`` (Ms. Pac-Man by
    default) sits on the joystick grid; one line when its actions are not a joystick."""
    grid = action_layout(game)
    if grid is None:
        raise RlsaeError(f"{game}'s actions ({', '.join(action_meanings(game))}) are no joystick")
    return grid


def to_grid(values: Any, game: str = DEFAULT_GAME) -> np.ndarray:
    """Lay out per-action values (..., A) of ``game``: on its joystick grid (..., 3, 3) or
    (..., 3, 6), or, for another action set, as one row (..., 1, A) in action order."""
    v = np.asarray(values)
    n = len(action_meanings(game))
    if v.shape[-1] != n:
        raise RlsaeError(f"expected {n} action values ({game}), got {v.shape[-1]}")
    grid = action_layout(game)
    return v[..., None, :] if grid is None else v[..., grid]


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
    """Per-action contribution of ``feature`` in state(s) ``obs``: (A,) or (n, A)."""
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
    """:func:`feature_effect` on the game's joystick grid (NOOP centre): (3, 3) or (n, 3, 3) for
    Ms. Pac-Man; see :func:`to_grid` for other games."""
    return to_grid(feature_effect(agent, sae, layer, feature, obs), agent.env_config.game)


@torch.no_grad()
def direct_effect(agent: Agent, sae: Any, layer: str, feature: int) -> np.ndarray:
    """``W_q @ d_feature`` (A,): the state-independent effect of one unit of the feature.

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
    """:func:`direct_effect` on the game's joystick grid ((3, 3) for Ms. Pac-Man; see
    :func:`to_grid`)."""
    return to_grid(direct_effect(agent, sae, layer, feature), agent.env_config.game)
