"""The sparse autoencoder: TopK, ReLU (L1), JumpReLU or BatchTopK, tied or untied, in SAELens's
conventions.

    encode(x) = act((x - b_dec) @ W_enc + b_enc)      act = TopK-then-ReLU, ReLU or JumpReLU
    decode(f) = f @ W_dec + b_dec

``W_enc`` is (d_in, d_sae) and ``W_dec`` is (d_sae, d_in), as in SAELens, so the files load there
unchanged. A tied SAE has no encoder parameter: ``W_enc`` is the view ``W_dec.T`` (and is written
out materialised when saved). Training uses ``rlsae.sae._fast`` for the fast TopK path; this
module is the plain, dense reference that inference and evaluation use. Files are in the SAELens
format (``rlsae.sae.io``).

JumpReLU and BatchTopK SAEs carry a ``threshold`` buffer (d_sae,): a latent is active where its
pre-activation is above it, ``relu(pre) * (pre > threshold)`` as in SAELens. A BatchTopK SAE is
trained with the batch-wide TopK (``rlsae.sae.train``), which sets ``threshold`` to the global
threshold it estimates; at inference it is the JumpReLU SAELens loads it as.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlsae.errors import RlsaeError
from rlsae.sae._fast import topk_select
from rlsae.sae.config import DTYPES, SAEConfig
from rlsae.sae.io import read_sae_files, write_sae_files

__all__ = ["SAE", "SAEConfig", "check_prefix", "encoder_parameter", "load_sae", "save_sae"]

_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPES}
THRESHOLD_ARCHS = ("jumprelu", "batchtopk", "matryoshka")
"""Kinds whose latents fire above a per-latent threshold at inference."""


def encoder_parameter(
    W_enc: torch.Tensor, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> nn.Parameter:
    """``W_enc`` (d_in, d_sae) as a parameter stored row-major as its transpose (d_sae, d_in),
    i.e. column-major. The TopK step's encoder gradient comes out as (d_sae, d_in) rows (one
    ``embedding_bag`` bag per latent); with this layout autograd takes it as it is instead of
    copying it into a row-major (d_in, d_sae) gradient on every step. Values, shape and the
    matmul's speed are the same either way."""
    stored = W_enc.t().to(
        device=device, dtype=dtype, memory_format=torch.contiguous_format, copy=True
    )
    return nn.Parameter(stored.t())


class SAE(nn.Module):
    """A TopK or ReLU sparse autoencoder with SAELens-compatible parameters and files."""

    def __init__(
        self, cfg: SAEConfig, *, device: str | torch.device = "cpu", seed: int | None = None
    ) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        dt = _DTYPES[cfg.dtype]
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        # Unit-norm random decoder rows; encoder initialised as the decoder's transpose.
        w = torch.randn(cfg.d_sae, cfg.d_in, generator=g, dtype=torch.float32)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w.to(device=device, dtype=dt))
        if not cfg.tied:
            self.W_enc = encoder_parameter(w.t(), device=device, dtype=dt)
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, device=device, dtype=dt))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, device=device, dtype=dt))
        self.threshold: torch.Tensor | None
        if cfg.arch == "jumprelu":  # trained (straight-through estimators): a parameter
            self.threshold = nn.Parameter(torch.zeros(cfg.d_sae, device=device, dtype=dt))
        elif cfg.arch in ("batchtopk", "matryoshka"):  # estimated in training: a buffer
            self.register_buffer("threshold", torch.zeros(cfg.d_sae, device=device, dtype=dt))
        else:
            self.threshold = None

    def __getattr__(self, name: str) -> Any:
        # A tied SAE's encoder is the view W_dec.T; an untied one has the parameter "W_enc".
        if name == "W_enc" and self.__dict__["cfg"].tied:
            return self.W_dec.t()
        return super().__getattr__(name)

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations (..., d_sae)."""
        x = x.to(self.W_dec.dtype)
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense (..., d_sae) feature activations."""
        pre = self.pre_acts(x)
        if self.cfg.arch == "relu":
            return torch.relu(pre)
        if self.threshold is not None:
            return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)
        vals, idx = pre.topk(int(self.cfg.k), dim=-1, sorted=False)  # topk: an integer k
        return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())

    def encode_topk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TopK SAEs: the k (values, indices) per row without the dense (..., d_sae) result."""
        if self.cfg.arch != "topk":
            raise RlsaeError("encode_topk needs a topk SAE")
        vals, idx = topk_select(self.pre_acts(x), int(self.cfg.k))
        return vals.relu(), idx

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction from dense feature activations."""
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def decode_sparse(self, vals: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Reconstruction from (rows, k) values and latent indices (gathers only k decoder rows)."""
        out = nn.functional.embedding_bag(
            idx, self.W_dec, per_sample_weights=vals.to(self.W_dec.dtype), mode="sum"
        )
        return out + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x``."""
        if self.cfg.arch == "topk" and x.ndim == 2:
            return self.decode_sparse(*self.encode_topk(x))
        return self.decode(self.encode(x))

    def reconstruct(self, x: torch.Tensor, prefix: int | None = None) -> torch.Tensor:
        """Reconstruction of ``x`` from the first ``prefix`` latents only (all of them with
        ``None``): the activations of latents ``prefix`` and above are set to 0 before decoding,
        as Matryoshka training decodes its nested prefixes. For the kinds whose latents fire
        independently (a threshold or a ReLU) this is the SAE with those latents removed; a
        TopK SAE's prefix is not one (its TopK chooses among all latents), so it is refused."""
        if prefix is None:
            return self(x)
        check_prefix(self.cfg, prefix)
        f = self.encode(x)
        f[..., prefix:] = 0
        return self.decode(f)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale each decoder row to unit norm."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Project out the gradient component parallel to each (unit-norm) decoder row."""
        if self.W_dec.grad is None:
            return
        # g - (g.w) w with w = W/|W|, as g - ((g.W) / |W|^2) W: three passes instead of six
        W, g = self.W_dec, self.W_dec.grad
        coef = torch.linalg.vecdot(g, W) / torch.linalg.vecdot(W, W).clamp_min(1e-16)
        g.addcmul_(W, coef.unsqueeze(1), value=-1.0)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``sae_weights.safetensors`` and ``cfg.json`` (SAELens format), each atomically."""
        return save_sae(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> SAE:
        """Load an SAE directory written by rlsae or by SAELens (topk or standard)."""
        return load_sae(path, device=device)

    def extra_repr(self) -> str:
        c = self.cfg
        return f"arch={c.arch}, d_in={c.d_in}, d_sae={c.d_sae}, k={c.k}, tied={c.tied}"


def check_prefix(cfg: SAEConfig, prefix: int, where: str = "") -> None:
    """RlsaeError unless ``prefix`` is 1..d_sae latents of an SAE whose latents fire
    independently (any kind but ``topk``)."""
    pre = f"{where}: " if where else ""
    if cfg.arch == "topk":
        raise RlsaeError(
            f"{pre}prefix: a topk SAE has no prefixes (its TopK chooses among all latents); "
            "use a matryoshka, batchtopk, jumprelu or relu SAE"
        )
    if isinstance(prefix, bool) or not isinstance(prefix, int) or not 1 <= prefix <= cfg.d_sae:
        raise RlsaeError(f"{pre}prefix: expected 1 to d_sae={cfg.d_sae} latents, got {prefix!r}")


def save_sae(sae: SAE, path: str | os.PathLike) -> Path:
    """Write the SAE's weights and cfg.json into ``path`` (created if needed), each atomically.
    A tied SAE's W_enc is written materialised as W_dec.T (SAELens reads it as it is)."""
    tensors = {
        "W_enc": sae.W_enc.detach().clone(),
        "b_enc": sae.b_enc.detach(),
        "W_dec": sae.W_dec.detach(),
        "b_dec": sae.b_dec.detach(),
    }
    if sae.threshold is not None:
        tensors["threshold"] = sae.threshold.detach()
    return write_sae_files(path, sae.cfg, tensors)


def load_sae(path: str | os.PathLike, device: str = "cpu") -> SAE:
    """Load an SAE directory written by rlsae or by SAELens (architectures topk, standard and
    jumprelu; a BatchTopK SAE written by rlsae comes back as one)."""
    cfg, sd = read_sae_files(path)
    dt = _DTYPES[cfg.dtype]
    sae = SAE(cfg, device="meta")
    with torch.no_grad():
        sae.W_dec = nn.Parameter(sd["W_dec"].to(device=device, dtype=dt))
        if not cfg.tied:
            sae.W_enc = encoder_parameter(sd["W_enc"], device=device, dtype=dt)
        sae.b_enc = nn.Parameter(sd["b_enc"].to(device=device, dtype=dt))
        sae.b_dec = nn.Parameter(sd["b_dec"].to(device=device, dtype=dt))
        if cfg.arch == "jumprelu":
            sae.threshold = nn.Parameter(sd["threshold"].to(device=device, dtype=dt))
        elif cfg.arch in ("batchtopk", "matryoshka"):
            sae.threshold = sd["threshold"].to(device=device, dtype=dt)
    return sae
