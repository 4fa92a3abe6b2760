"""The crosscoder of two models (Lindsey et al. 2024): one dictionary over both models'
activations at once, a shared encoder and a decoder per model.

    f(x) = act([x_base | x_tuned] - [b_base | b_tuned]) @ W_enc + b_enc)
    x_base  ~ f @ W_dec[0] + b_dec[0]          x_tuned ~ f @ W_dec[1] + b_dec[1]

``act`` is a JumpReLU with the global threshold estimated in BatchTopK training (``batchtopk``)
or a ReLU (``l1``). Each latent j has a decoder direction in each model, ``W_dec[0, j]`` and
``W_dec[1, j]``; their norms say whether it is shared or belongs to one model
(``rlsae.sae.latents``).

A crosscoder directory holds ``crosscoder_weights.safetensors`` (``W_enc`` (2, d_in, d_sae),
``b_enc`` (d_sae,), ``W_dec`` (2, d_sae, d_in), ``b_dec`` (2, d_in) and, for ``batchtopk``,
``threshold`` (d_sae,); index 0 is the base model, 1 the tuned one, as in dictionary_learning's
``CrossCoder``), ``cfg.json`` (``CrosscoderSpec``, with ``"architecture": "crosscoder"``, which
the SAE commands refuse), and ``training.json`` from training (``rlsae.sae.crosscoder_train``).
The SAE loader refuses a crosscoder and this one refuses an SAE, each in one line.

Trained as an SAE on the concatenated activations (``PairedStore``); ``from_concat`` and
``to_concat`` convert between that SAE's (d_in = 2 d) weights and this layout, losslessly.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_bytes, atomic_write_json
from rlsae.sae.config import DTYPES

WEIGHTS = "crosscoder_weights.safetensors"
CFG = "cfg.json"
ARCHITECTURE = "crosscoder"
MODELS = ("base", "tuned")
"""The two models, in the order of the weights' first axis."""


@dataclass
class CrosscoderSpec:
    """What a crosscoder is (its ``cfg.json``)."""

    d_in: int
    """Width of one model's activations."""
    d_sae: int
    """Number of latents."""
    sparsity: Literal["batchtopk", "l1"] = "batchtopk"
    """How it was trained (``CrosscoderConfig.arch``); ``batchtopk`` fires above ``threshold``
    at inference, ``l1`` is a ReLU."""
    k: int = 32
    """BatchTopK: active latents per row on average in training."""
    hook_name: str = ""
    """Where the activations came from."""
    sources: list[str] = field(default_factory=lambda: ["", ""])
    """The base and the tuned model's stores' sources."""
    architecture: str = ARCHITECTURE
    """Always ``crosscoder`` (what tells this directory from an SAE's)."""
    models: list[str] = field(default_factory=lambda: list(MODELS))
    """The models along the weights' first axis."""
    dtype: str = "float32"
    """Parameter dtype."""
    apply_b_dec_to_input: bool = True
    """The decoder biases are subtracted from the input before encoding."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Crosscoder(nn.Module):
    """A two-model crosscoder (see the module docstring)."""

    def __init__(self, spec: CrosscoderSpec) -> None:
        super().__init__()
        self.spec = spec
        d, n = spec.d_in, spec.d_sae
        dt = getattr(torch, spec.dtype)
        self.W_enc = nn.Parameter(torch.zeros(2, d, n, dtype=dt))
        self.b_enc = nn.Parameter(torch.zeros(n, dtype=dt))
        self.W_dec = nn.Parameter(torch.zeros(2, n, d, dtype=dt))
        self.b_dec = nn.Parameter(torch.zeros(2, d, dtype=dt))
        self.threshold: torch.Tensor | None
        if spec.sparsity == "batchtopk":
            self.register_buffer("threshold", torch.zeros(n, dtype=dt))
        else:
            self.threshold = None

    @property
    def d_sae(self) -> int:
        return self.spec.d_sae

    @classmethod
    def from_concat(cls, spec: CrosscoderSpec, tensors: dict[str, torch.Tensor]) -> Crosscoder:
        """From an SAE's weights on ``[base | tuned]`` (``W_enc`` (2d, n), ``W_dec`` (n, 2d),
        ``b_dec`` (2d,))."""
        cc = cls(spec)
        d, n = spec.d_in, spec.d_sae
        with torch.no_grad():
            cc.W_enc.copy_(tensors["W_enc"].reshape(2, d, n))
            cc.b_enc.copy_(tensors["b_enc"])
            cc.W_dec.copy_(tensors["W_dec"].reshape(n, 2, d).transpose(0, 1))
            cc.b_dec.copy_(tensors["b_dec"].reshape(2, d))
            if cc.threshold is not None:
                cc.threshold.copy_(tensors["threshold"])
        return cc

    def to_concat(self) -> dict[str, torch.Tensor]:
        """The weights as an SAE's on ``[base | tuned]`` (the inverse of ``from_concat``)."""
        d, n = self.spec.d_in, self.spec.d_sae
        out = {
            "W_enc": self.W_enc.detach().reshape(2 * d, n),
            "b_enc": self.b_enc.detach(),
            "W_dec": self.W_dec.detach().transpose(0, 1).reshape(n, 2 * d),
            "b_dec": self.b_dec.detach().reshape(2 * d),
        }
        if self.threshold is not None:
            out["threshold"] = self.threshold.detach()
        return out

    def pre_acts(self, x_base: torch.Tensor, x_tuned: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations (rows, d_sae) of aligned rows of both models."""
        xb, xt = x_base.to(self.W_enc.dtype), x_tuned.to(self.W_enc.dtype)
        if self.spec.apply_b_dec_to_input:
            xb, xt = xb - self.b_dec[0], xt - self.b_dec[1]
        return xb @ self.W_enc[0] + xt @ self.W_enc[1] + self.b_enc

    def encode(self, x_base: torch.Tensor, x_tuned: torch.Tensor) -> torch.Tensor:
        """Dense (rows, d_sae) latent activations."""
        pre = self.pre_acts(x_base, x_tuned)
        if self.threshold is None:
            return torch.relu(pre)
        return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)

    def decode(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (base, tuned) reconstructions from latent activations ``f``."""
        f = f.to(self.W_dec.dtype)
        return f @ self.W_dec[0] + self.b_dec[0], f @ self.W_dec[1] + self.b_dec[1]

    def decoder_norms(self) -> torch.Tensor:
        """(2, d_sae): each latent's decoder norm in the base (row 0) and tuned (row 1) model."""
        return self.W_dec.detach().norm(dim=2)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the weights and cfg.json into ``path`` (created if needed), each atomically."""
        from safetensors.torch import save

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        # W_enc, b_enc, W_dec, b_dec and (BatchTopK) the threshold buffer
        data = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(path / WEIGHTS, save(data))
        atomic_write_json(path / CFG, self.spec.to_dict())
        return path

    def extra_repr(self) -> str:
        s = self.spec
        return f"sparsity={s.sparsity}, d_in={s.d_in}, d_sae={s.d_sae}, k={s.k}"


def read_spec(path: str | os.PathLike) -> CrosscoderSpec:
    """The ``CrosscoderSpec`` of directory ``path``; one line for anything but a crosscoder."""
    path = Path(path)
    try:
        raw = json.loads((path / CFG).read_text())
    except FileNotFoundError:
        raise RlsaeError(f"{path} is not a crosscoder directory (no {CFG})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RlsaeError(f"{path / CFG} is not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise RlsaeError(f"{path / CFG} is not a crosscoder config")
    if raw.get("architecture") != ARCHITECTURE:
        raise RlsaeError(
            f"{path} is an SAE (architecture {raw.get('architecture')!r}), not a crosscoder; "
            "use it with the rlsae sae commands"
        )
    names = {f.name for f in fields(CrosscoderSpec)}
    try:
        spec = CrosscoderSpec(**{k: v for k, v in raw.items() if k in names})
        ok = int(spec.d_in) >= 1 and int(spec.d_sae) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok or spec.sparsity not in ("batchtopk", "l1") or spec.dtype not in DTYPES:
        raise RlsaeError(f"{path / CFG}: a bad or missing d_in, d_sae, sparsity or dtype")
    return spec


def load_crosscoder(path: str | os.PathLike) -> Crosscoder:
    """Load a crosscoder directory written by ``Crosscoder.save``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    spec = read_spec(path)
    try:
        tensors = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as e:
        raise RlsaeError(f"{path / WEIGHTS} cannot be read ({e})") from None
    cc = Crosscoder(spec)
    try:
        cc.load_state_dict({k: tensors[k] for k in cc.state_dict()})
    except (KeyError, RuntimeError) as e:
        raise RlsaeError(
            f"{path / WEIGHTS} does not match its cfg.json ({str(e).splitlines()[0]})"
        ) from None
    return cc
