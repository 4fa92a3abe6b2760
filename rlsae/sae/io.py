"""SAE directories in the SAELens format: ``sae_weights.safetensors`` + ``cfg.json``.

Our TopK SAEs are written as SAELens architecture ``topk``, ReLU ones as ``standard``, JumpReLU
and BatchTopK ones as ``jumprelu`` with their ``threshold`` (as SAELens saves a BatchTopK SAE for
inference: the global threshold repeated per latent); tied SAEs
get ``W_enc`` materialised as ``W_dec.T``. Our own settings (arch, tied, source) ride in
``cfg.json["metadata"]["rlsae"]``, where SAELens keeps but ignores them. ``load_sae`` reads ours
and SAELens-written ``topk``/``standard``/``jumprelu`` directories (folding ``rescale_acts_by_decoder_norm``
into the weights, which leaves outputs unchanged). This module handles files and configs only;
``rlsae.sae.model`` builds the ``SAE`` from them (``load_sae``, ``SAE.save``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_bytes, atomic_write_json
from rlsae.sae.config import DTYPES, SAEConfig

WEIGHTS = "sae_weights.safetensors"
_SAELENS_ARCH = {
    "topk": "topk",
    "relu": "standard",
    "batchtopk": "jumprelu",
    "jumprelu": "jumprelu",
    "matryoshka": "jumprelu",
}
"""SAELens's architecture name for each of ours."""
CFG = "cfg.json"


def _sae_lens_version() -> str:
    try:
        from importlib.metadata import version

        return version("sae-lens")
    except Exception:  # not installed: still a valid 6.x-format file
        return "6.0.0"


def sae_lens_cfg(cfg: SAEConfig) -> dict[str, Any]:
    """The cfg.json dict SAELens 6.x expects for this SAE."""
    v = _sae_lens_version()
    d: dict[str, Any] = {
        "architecture": _SAELENS_ARCH[cfg.arch],
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": v,
            "sae_lens_training_version": v,
            "hook_name": cfg.hook_name,
            "model_name": cfg.source,
            "rlsae": cfg.to_dict(),
        },
    }
    if cfg.arch == "topk":
        d["k"] = cfg.k
        d["rescale_acts_by_decoder_norm"] = False
    return d


def write_sae_files(path: str | os.PathLike, cfg: SAEConfig, tensors: dict[str, Any]) -> Path:
    """Write ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec`` (and ``threshold`` for JumpReLU and
    BatchTopK) and cfg.json into ``path`` (created if needed), each file atomically."""
    from safetensors.torch import save

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    names = ("W_enc", "b_enc", "W_dec", "b_dec") + (
        ("threshold",) if "threshold" in tensors else ()
    )
    tensors = {k: tensors[k].detach().to("cpu").contiguous() for k in names}
    atomic_write_bytes(path / WEIGHTS, save(tensors))
    atomic_write_json(path / CFG, sae_lens_cfg(cfg))
    return path


def _read_cfg(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((path / CFG).read_text())
    except FileNotFoundError:
        raise RlsaeError(f"{path} is not an SAE directory (no {CFG})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RlsaeError(f"{path / CFG} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise RlsaeError(f"{path / CFG} is not an SAE config")
    return cfg


def _cfg_from_dict(d: dict[str, Any], path: Path) -> tuple[SAEConfig, bool]:
    meta: dict[str, Any] = d["metadata"] if isinstance(d.get("metadata"), dict) else {}
    ours: dict[str, Any] = meta["rlsae"] if isinstance(meta.get("rlsae"), dict) else {}
    arch = d.get("architecture", "standard")
    if arch not in ("topk", "standard", "jumprelu"):
        raise RlsaeError(
            f"{path}: SAELens architecture {arch!r} is not supported; use topk, standard or jumprelu"
        )
    ours_arch = {"topk": "topk", "standard": "relu", "jumprelu": "jumprelu"}[arch]
    if arch == "jumprelu" and ours.get("arch") in ("batchtopk", "matryoshka"):
        ours_arch = ours["arch"]  # a (Matryoshka) BatchTopK SAE rlsae saved for inference
    if d.get("normalize_activations", "none") not in ("none", None):
        raise RlsaeError(
            f"{path}: normalize_activations={d['normalize_activations']!r} is not supported"
        )
    if d.get("reshape_activations", "none") not in ("none", None):
        raise RlsaeError(
            f"{path}: reshape_activations={d['reshape_activations']!r} is not supported"
        )
    try:
        cfg = SAEConfig(
            d_in=int(d["d_in"]),
            d_sae=int(d["d_sae"]),
            arch=ours_arch,  # type: ignore[arg-type]  # one of SAE_ARCHS
            k=int(d.get("k", 32)) if arch == "topk" else _k(ours.get("k", 32)),
            tied=bool(ours.get("tied", False)),
            hook_name=str(meta.get("hook_name") or d.get("hook_name") or ""),
            source=str(ours.get("source") or meta.get("model_name") or d.get("model_name") or ""),
            dtype=str(d.get("dtype", "float32"))
            if str(d.get("dtype", "float32")) in DTYPES
            else "float32",
            apply_b_dec_to_input=bool(d.get("apply_b_dec_to_input", True)),
            matryoshka_groups=list(ours["matryoshka_groups"])
            if ours_arch == "matryoshka"
            else None,
        )
    except RlsaeError as e:
        raise RlsaeError(f"{path / CFG}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise RlsaeError(f"{path / CFG} is missing or has a bad field ({e})") from None
    return cfg, bool(d.get("rescale_acts_by_decoder_norm", False)) and arch == "topk"


def read_sae_files(path: str | os.PathLike) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """The config and float32 tensors of an SAE directory written by rlsae or by SAELens
    (architectures topk, standard and jumprelu), checked for shapes and NaN/Inf; SAELens's
    ``rescale_acts_by_decoder_norm`` folded into the weights; ``tied`` cleared where the file's
    W_enc is not W_dec.T."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise RlsaeError(f"SAE directory {path} not found")
    cfg, rescale = _cfg_from_dict(_read_cfg(path), path)
    wpath = path / WEIGHTS
    if not wpath.is_file():
        raise RlsaeError(f"{path} has no {WEIGHTS}")
    try:
        sd = load_file(str(wpath))
    except (SafetensorError, OSError) as e:
        raise RlsaeError(f"{wpath} is truncated or corrupt ({e})") from None
    shapes = {
        "W_enc": (cfg.d_in, cfg.d_sae),
        "b_enc": (cfg.d_sae,),
        "W_dec": (cfg.d_sae, cfg.d_in),
        "b_dec": (cfg.d_in,),
    }
    if cfg.arch in ("jumprelu", "batchtopk", "matryoshka"):
        shapes["threshold"] = (cfg.d_sae,)
    for name, shape in shapes.items():
        if name not in sd:
            raise RlsaeError(f"{wpath} has no tensor {name!r}")
        if tuple(sd[name].shape) != shape:
            raise RlsaeError(
                f"{wpath}: {name} has shape {tuple(sd[name].shape)}, cfg.json says {shape}"
            )
        if not torch.isfinite(sd[name]).all():
            raise RlsaeError(f"{wpath}: {name} holds NaN or Inf")
    if cfg.tied and not torch.equal(sd["W_enc"], sd["W_dec"].t()):
        cfg.tied = False  # edited outside rlsae: keep both matrices as they are
    sd = {k: v.to(torch.float32) for k, v in sd.items()}
    if rescale:  # SAELens topk with rescale_acts_by_decoder_norm: fold the norms in, exactly
        n = sd["W_dec"].norm(dim=1).clamp_min(1e-8)
        sd["W_enc"] = sd["W_enc"] * n
        sd["b_enc"] = sd["b_enc"] * n
        sd["W_dec"] = sd["W_dec"] / n[:, None]
        cfg.tied = False
    return cfg, sd


def _k(value: Any) -> int | float:
    """rlsae's k from cfg.json's metadata: an integer, or BatchTopK's fractional average."""
    k = float(value)
    return int(k) if k.is_integer() else k
