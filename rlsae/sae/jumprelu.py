"""JumpReLU's straight-through estimators (Rajamanoharan et al. 2024), as SAELens trains them.

    jumprelu(z, t) = z * H(z - t)        step(z, t) = H(z - t)        H = Heaviside

Both are piecewise constant in the threshold t, so its gradient is estimated with the rectangle
kernel K(u) = 1 if |u| < 1/2 and bandwidth eps:

    d jumprelu / d t  ~  -(t / eps) K((z - t) / eps)        d jumprelu / d z = H(z - t)
    d step / d t      ~  -(1 / eps) K((z - t) / eps)        d step / d z     = 0

summed over the rows (``t`` is per latent). The pre-activations get no gradient from ``step``
(DeepMind's estimator; SAELens's ``jumprelu_ste_to_input=False``). Dense (rows, d_sae) tensors:
the set of latents above threshold is the data's, not a fixed k per row.

Training does not use these autograd functions: ``rlsae.sae._fast.jumprelu_loss`` computes the
same estimators by hand (sparse over each row's candidates, or dense), and the tests check it
against them; they stay as the estimators' readable definition and for losses of your own.
"""

from __future__ import annotations

from typing import Any

import torch


def rectangle(u: torch.Tensor) -> torch.Tensor:
    """The rectangle kernel: 1 where -1/2 < u < 1/2, else 0."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, t: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(z, t)
        ctx.bandwidth = bandwidth
        return z * (z > t).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        z, t = ctx.saved_tensors
        eps = ctx.bandwidth
        g_t = -((t / eps) * rectangle((z - t) / eps) * g).sum(0)
        return (z > t).to(g.dtype) * g, g_t, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, t: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(z, t)
        ctx.bandwidth = bandwidth
        return (z > t).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        z, t = ctx.saved_tensors
        eps = ctx.bandwidth
        return None, -((1.0 / eps) * rectangle((z - t) / eps) * g).sum(0), None


def jumprelu(z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """z * (z > threshold) for (rows, d_sae) ``z`` and (d_sae,) ``threshold``, with the
    straight-through estimator of the threshold's gradient (module docstring)."""
    out: torch.Tensor = _JumpReLU.apply(z, threshold, float(bandwidth))
    return out


def step(z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """(z > threshold) as z's dtype, with the straight-through estimator of the threshold's
    gradient and none to ``z`` (module docstring)."""
    out: torch.Tensor = _Step.apply(z, threshold, float(bandwidth))
    return out
