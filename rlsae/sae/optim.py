"""The trainer's optimiser and learning-rate schedule: Adam for a column-major encoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rlsae.sae.model import SAE


def lr_factor(step: int, total: int, warmup_frac: float, decay_frac: float) -> float:
    """Linear warm-up from 0, constant, linear decay to 0 over the last ``decay_frac``."""
    warm = int(warmup_frac * total)
    decay = int(decay_frac * total)
    if warm and step < warm:
        return (step + 1) / warm
    if decay and step >= total - decay:
        return max(0.0, (total - step) / decay)
    return 1.0


class Adam(torch.optim.Adam):
    """torch's Adam, stepping column-major parameters (the TopK encoder, see
    ``rlsae.sae.model.encoder_parameter``) as their contiguous transposes. Adam is elementwise,
    so the result is the same, but the fused kernel would otherwise copy such a parameter, its
    gradient and both moment buffers to row-major and back on every step. The moment buffers keep the parameter's shape and layout, so
    checkpoints are those of torch's Adam."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        flipped = [
            p
            for group in self.param_groups
            for p in group["params"]
            if p.ndim == 2 and not p.is_contiguous() and p.t().is_contiguous()
        ]
        for p in flipped:
            _transpose_param(p, self.state.get(p, {}))
        try:
            return super().step(closure)
        finally:
            for p in flipped:
                _transpose_param(p, self.state.get(p, {}))


def _transpose_param(p: torch.Tensor, state: dict[str, Any]) -> None:
    """Swap a 2-D parameter, its gradient and its Adam moments for their transposed views."""
    p.data = p.data.t()
    if p.grad is not None:
        p.grad = p.grad.t()
    for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        if isinstance(state.get(name), torch.Tensor) and state[name].ndim == 2:
            state[name] = state[name].t()


def make_optimizer(
    sae: SAE, lr: float, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.Adam:
    """Adam over the SAE's parameters (the fused kernel where this torch build has one)."""
    try:
        return Adam(sae.parameters(), lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):  # no fused Adam for this device or dtype
        return Adam(sae.parameters(), lr=lr, betas=betas)
