"""Where in the frame a feature looks: gradient x input and integrated gradients.

For an SAE feature ``j`` on a layer and an observation ``x`` (uint8 pixels, as the agent sees
them), ``a(x)`` is the feature's activation ``encode(layer(x))[j]``. Attributions are per input
pixel, in the units of ``a``:

- ``gxi``: ``x * da/dx`` (gradient x input);
- ``ig``: integrated gradients from a baseline ``x0`` (a black frame, or the episode's mean
  observation): ``(x - x0) * mean_k da/dx(x0 + t_k (x - x0))`` over ``steps`` midpoints
  ``t_k = (k + 1/2) / steps``. They sum to ``a(x) - a(x0)`` (completeness) up to the Riemann
  error, which is reported (``completeness_error``).

:func:`heat_map` reduces an attribution to a (210, 160) map over the RGB screen (poster agents:
the pixels themselves; nature agents: the last stacked 84x84 frame, stretched to the screen) and
:func:`saliency_png` draws it over the replayed frame (nature: with the four stacked frames'
maps beside it).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlsae import threads as _threads
from rlsae.agents.config import SaliencyConfig
from rlsae.agents.dqn import Agent, load_agent
from rlsae.agents.effects import check_sae
from rlsae.agents.layers import check_layer
from rlsae.agents.networks import get_module
from rlsae.agents.replay import replay_episode, replay_frames, replay_observations
from rlsae.agents.results import SaliencyResult, read_episodes
from rlsae.agents.steer import check_sae_origin
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_bytes
from rlsae.sae import load_sae

METHODS = ("ig", "gxi")

Activation = Callable[[torch.Tensor], torch.Tensor]
"""float pixels (n, C, H, W) on the 0-255 scale -> the feature's activation (n,)."""


def feature_activation(agent: Agent, sae: Any, layer: str, feature: int) -> Activation:
    """The differentiable map from pixels (0-255 floats) to the feature's activation."""
    check_sae(agent, sae, layer, feature)
    path, _, _ = check_layer(agent.arch, layer)
    module = get_module(agent.q_network, path)
    fe = agent.q_network.features_extractor

    def fn(x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            fe(x / 255.0)
        finally:
            handle.remove()
        return sae.encode(captured[0].float())[:, int(feature)]

    return fn


def _grad(fn: Activation, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations (n,), d activation / d x (n, ...)) for a batch of inputs."""
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        a = fn(x)
        (g,) = torch.autograd.grad(a.sum(), x)
    return a.detach(), g


def gradient_x_input(fn: Activation, x: torch.Tensor) -> torch.Tensor:
    """``x * da/dx`` for one input ``x`` (C, H, W)."""
    _, g = _grad(fn, x.unsqueeze(0))
    return (x * g[0]).detach()


def batch_gradient_x_input(fn: Activation, xs: torch.Tensor) -> torch.Tensor:
    """``x * da/dx`` for each input of a batch ``xs`` (n, C, H, W) in one backward pass (the
    activations of different inputs do not depend on each other)."""
    _, g = _grad(fn, xs.float())
    return (xs.float() * g).detach()


def integrated_gradients(
    fn: Activation, x: torch.Tensor, baseline: torch.Tensor, steps: int = 64, batch: int = 16
) -> tuple[torch.Tensor, float, float]:
    """(attributions (C, H, W), a(x), a(baseline)) by the midpoint rule over ``steps`` points."""
    x, baseline = x.float(), baseline.float()
    total = torch.zeros_like(x)
    for start in range(0, steps, batch):
        t = (torch.arange(start, min(steps, start + batch), dtype=torch.float32) + 0.5) / steps
        path = baseline + t.view(-1, 1, 1, 1) * (x - baseline)
        _, g = _grad(fn, path)
        total += g.sum(0)
    with torch.no_grad():
        ends = fn(torch.stack([x, baseline]))
    return ((x - baseline) * total / steps).detach(), float(ends[0]), float(ends[1])


def heat_map(attr: np.ndarray, arch: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(map over the (210, 160) screen, per-stacked-frame maps (4, 84, 84) or None): the
    absolute attribution summed over colour channels (poster) or of the last frame (nature)."""
    a = np.abs(np.asarray(attr, dtype=np.float64))
    if arch == "poster":
        return a.sum(0), None
    last = a[-1]
    rows = (np.arange(210) * last.shape[0]) // 210
    cols = (np.arange(160) * last.shape[1]) // 160
    return last[rows][:, cols], a


def _scaled(m: np.ndarray) -> np.ndarray:
    """A map scaled to [0, 1] by its 99th percentile (its maximum when that is 0), so that a few
    extreme pixels do not wash the rest out."""
    top = float(np.percentile(m, 99)) or float(m.max())
    return np.clip(m / top, 0, 1) if top > 0 else np.zeros_like(m)


def _colour(m: np.ndarray) -> np.ndarray:
    """A map as a red-yellow heat image (uint8 RGB), scaled by :func:`_scaled`."""
    v = _scaled(m)
    rgb = np.stack([np.clip(2 * v, 0, 1), np.clip(2 * v - 1, 0, 1), np.zeros_like(v)], -1)
    return (rgb * 255).astype(np.uint8)


def saliency_png(frame: np.ndarray, screen_map: np.ndarray, stack: np.ndarray | None) -> bytes:
    """PNG bytes: the RGB frame with the heat map blended over it (nature: the four stacked
    frames' maps to its right, stretched to the screen's height)."""
    from PIL import Image  # only when a PNG is drawn

    m = _scaled(screen_map)
    heat = _colour(screen_map).astype(np.float64)
    alpha = (0.75 * m)[..., None]
    over = (frame.astype(np.float64) * (1 - alpha) + heat * alpha).astype(np.uint8)
    panels = [over]
    if stack is not None:
        for s in stack:
            rows = (np.arange(210) * s.shape[0]) // 210
            cols = (np.arange(80) * s.shape[1]) // 80
            panels.append(_colour(s[rows][:, cols]))
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(panels, 1)).save(buf, format="PNG")
    return buf.getvalue()


OVERLAY_LEVELS = 16
"""Opacity levels of a viewer overlay (a 16-colour palette PNG: a few kB a state)."""


def overlay_png(screen_map: np.ndarray) -> bytes:
    """PNG bytes of a transparent heat map over the (210, 160) screen, to lay over the frame in
    the viewer: the map scaled as in :func:`saliency_png`, averaged over 2x2 pixel blocks and
    rounded to :data:`OVERLAY_LEVELS` levels, each a colour of the same red-yellow scale with
    opacity 0.8 x the level (a palette image: small enough for thousands of states)."""
    from PIL import Image

    v = _scaled(np.asarray(screen_map, dtype=np.float64))
    h, w = v.shape
    v = v[: h - h % 2, : w - w % 2].reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    n = OVERLAY_LEVELS - 1
    idx = np.round(v * n).astype(np.uint8).repeat(2, 0).repeat(2, 1)
    t = np.arange(OVERLAY_LEVELS) / n
    rgb = np.stack([np.clip(2 * t, 0, 1), np.clip(2 * t - 1, 0, 1), np.zeros_like(t)], -1)
    img = Image.frombytes("P", (idx.shape[1], idx.shape[0]), np.ascontiguousarray(idx).tobytes())
    img.putpalette((rgb * 255).astype(np.uint8).ravel().tolist())
    alpha = (0.8 * t * 255).astype(np.uint8)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True, transparency=bytes(alpha.tolist()))
    return buf.getvalue()


def episode_mean_observation(store_dir: str | os.PathLike, episode: int) -> np.ndarray:
    """The mean observation over every step of a recorded episode (the IG baseline ``mean``)."""
    total: np.ndarray | None = None
    n = 0
    for _, obs, _ in replay_episode(store_dir, episode, rgb=False):
        total = obs.astype(np.float64) if total is None else total + obs
        n += 1
    if total is None:
        raise RlsaeError(f"episode {episode} has no steps")
    return total / n


def feature_saliency(
    agent: Agent,
    sae: Any,
    layer: str,
    feature: int,
    obs: np.ndarray,
    *,
    method: str = "ig",
    baseline: np.ndarray | None = None,
    steps: int = 64,
) -> tuple[np.ndarray, float, float | None]:
    """(attributions shaped like ``obs``, a(obs), a(baseline) or None for ``gxi``).

    ``obs`` is the agent's observation (poster (3, 210, 160), nature (4, 84, 84)); ``baseline``
    (IG only) defaults to a black frame.
    """
    if method not in METHODS:
        raise RlsaeError(f"unknown saliency method {method!r}; use {' or '.join(METHODS)}")
    fn = feature_activation(agent, sae, layer, feature)
    x = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
    if tuple(x.shape) != tuple(agent.env_config.obs_shape):
        raise RlsaeError(
            f"observation shape {tuple(x.shape)} does not fit a {agent.arch} agent "
            f"(expects {tuple(agent.env_config.obs_shape)})"
        )
    if method == "gxi":
        with torch.no_grad():
            a = float(fn(x.unsqueeze(0))[0])
        return gradient_x_input(fn, x).numpy(), a, None
    x0 = torch.zeros_like(x) if baseline is None else torch.as_tensor(baseline, dtype=torch.float32)
    attr, a, a0 = integrated_gradients(fn, x, x0, steps)
    return attr.numpy(), a, a0


def state_saliency(
    agent_dir: str | os.PathLike | Agent,
    sae_dir: str | os.PathLike,
    acts: str | os.PathLike,
    feature: int,
    episode: int,
    step: int,
    out: str | os.PathLike,
    *,
    method: str = "ig",
    baseline: str = "black",
    steps: int = 64,
    layer: str | None = None,
    torch_threads: int | None = None,
) -> SaliencyResult:
    """A feature's saliency on a recorded state (replayed from the store ``acts``), drawn over
    the replayed RGB frame into the PNG ``out`` (written last, atomically: a refused or failed
    call leaves nothing). Settings: :class:`~rlsae.agents.config.SaliencyConfig`."""
    cfg = SaliencyConfig(method=method, baseline=baseline, steps=steps)
    cfg.validate("state_saliency")
    agent = agent_dir if isinstance(agent_dir, Agent) else load_agent(agent_dir)
    sae = load_sae(sae_dir)
    layer = layer or str(sae.cfg.hook_name or "")
    if not layer:
        raise RlsaeError("the SAE names no layer (hook_name); pass --layer")
    check_sae(agent, sae, layer, feature)
    check_sae_origin(agent, sae_dir, layer)
    log = read_episodes(acts)
    if log.env.mode != agent.arch:
        raise RlsaeError(
            f"the store {acts} was recorded from a {log.env.mode} agent; this agent is {agent.arch}"
        )
    obs = replay_observations(acts, episode, [step])[0]
    frame = replay_frames(acts, episode, [step])[0]
    x0 = episode_mean_observation(acts, episode) if cfg.baseline == "mean" else None
    sae.eval()
    with _threads.torch_threads(torch_threads):
        attr, a, a0 = feature_saliency(
            agent, sae, layer, feature, obs, method=cfg.method, baseline=x0, steps=cfg.steps
        )
    screen, stack = heat_map(attr, agent.arch)
    total = float(attr.astype(np.float64).sum())
    atomic_write_bytes(Path(out), saliency_png(frame, screen, stack))
    ig = cfg.method == "ig"
    return SaliencyResult(
        agent=str(agent.path), sae=str(sae_dir), layer=layer, feature=int(feature),
        episode=int(episode), step=int(step), method=cfg.method,
        baseline=cfg.baseline if ig else None, steps=cfg.steps if ig else None, activation=a,
        baseline_activation=a0, attribution_sum=total,
        completeness_error=abs(total - (a - a0)) if a0 is not None else None, out=str(out),
    )  # fmt: skip
