"""How well an SAE reconstructs a store, and which latents fire: ``evaluate_sae``.

One sequential pass over the store. Reconstruction figures are pooled over every row and
dimension: ``fvu`` = sum of squared errors / sum of squared deviations from the store's mean
(fraction of variance unexplained), ``explained_variance`` = 1 - fvu, ``mse`` = mean squared error
per element. ``l0`` = mean active latents per row. A latent is ``dead`` if it never fires over the
evaluated rows and ``dense`` if it fires on more than 10% of them. Per-latent ``firing_counts``,
``max_activation`` and ``mean_activation`` come back as tensors (saved by
``save_feature_stats`` as ``feature_stats.safetensors``), not in the JSON.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_bytes
from rlsae.sae.model import SAE
from rlsae.sae.store import ActivationStore

FEATURE_STATS = "feature_stats.safetensors"
TENSOR_KEYS = ("firing_counts", "max_activation", "mean_activation")
DENSE_FRACTION = 0.1


def check_compatible(sae: SAE, store: ActivationStore, *, check_hook: bool = False) -> None:
    """RlsaeError if the store's width (or, with ``check_hook``, its hook) differs from the SAE's."""
    if sae.cfg.d_in != store.d_in:
        raise RlsaeError(
            f"SAE expects d_in={sae.cfg.d_in} but the store {store.path} has d_in={store.d_in}; "
            "use the SAE trained on this layer"
        )
    if check_hook and sae.cfg.hook_name and store.hook and sae.cfg.hook_name != store.hook:
        raise RlsaeError(
            f"SAE was trained on hook {sae.cfg.hook_name!r} but the store {store.path} holds {store.hook!r}"
        )


@torch.no_grad()
def evaluate_sae(
    sae: SAE,
    store: ActivationStore,
    batch_size: int = 4096,
    *,
    max_rows: int | None = None,
    check_hook: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Reconstruction and firing statistics of ``sae`` over ``store`` (or its first ``max_rows``)."""
    check_compatible(sae, store, check_hook=check_hook)
    n, d = sae.cfg.d_sae, sae.cfg.d_in
    counts = torch.zeros(n, dtype=torch.int64)
    max_act = torch.zeros(n)
    sum_act = torch.zeros(n, dtype=torch.float64)
    sq_err = 0.0
    sum_x = torch.zeros(d, dtype=torch.float64)
    sum_x2 = 0.0
    active = 0
    rows = 0
    limit = max_rows if max_rows is not None else store.rows
    batches = store.iter_sequential(batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(
            batches,
            total=-(-min(limit, store.rows) // batch_size),
            desc="eval",
            unit="batch",
            leave=False,
        )
    for x in batches:
        x = x[: limit - rows]
        if x.shape[0] == 0:
            break
        if sae.cfg.arch == "topk":
            vals, idx = sae.encode_topk(x)
            recon = sae.decode_sparse(vals, idx)
            fire = vals > 0
            fired_idx = idx[fire]
            counts += torch.bincount(fired_idx, minlength=n)
            sum_act.index_add_(0, idx.reshape(-1), vals.reshape(-1).double())
            max_act = torch.maximum(
                max_act,
                torch.zeros(n).scatter_reduce_(
                    0, idx.reshape(-1), vals.reshape(-1).float(), "amax"
                ),
            )
            active += int(fire.sum())
        else:
            f = sae.encode(x)
            recon = sae.decode(f)
            fire = f > 0
            counts += fire.sum(0)
            sum_act += f.double().sum(0)
            max_act = torch.maximum(max_act, f.float().amax(0))
            active += int(fire.sum())
        sq_err += float((recon.double() - x.double()).pow(2).sum())
        sum_x += x.double().sum(0)
        sum_x2 += float(x.double().pow(2).sum())
        rows += x.shape[0]
        if rows >= limit:
            break
    if rows == 0:
        raise RlsaeError(f"activation store {store.path} has no rows to evaluate")
    total_var = sum_x2 - float((sum_x * sum_x).sum()) / rows
    fvu = sq_err / total_var if total_var > 0 else float("nan")
    return {
        "fvu": fvu,
        "explained_variance": 1.0 - fvu,
        "mse": sq_err / (rows * d),
        "l0": active / rows,
        "dead": int((counts == 0).sum()),
        "dense": int((counts > DENSE_FRACTION * rows).sum()),
        "d_sae": n,
        "rows": rows,
        "firing_counts": counts,
        "max_activation": max_act,
        "mean_activation": (sum_act / rows).float(),
    }


def live_feature_count(firing_counts: torch.Tensor | Any, threshold: int = 1) -> int:
    """Latents that fired at least ``threshold`` times (``threshold=1``: not dead)."""
    c = torch.as_tensor(firing_counts)
    return int((c >= threshold).sum())


def json_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """``evaluate_sae``'s result without the per-latent tensors."""
    return {k: v for k, v in result.items() if not isinstance(v, torch.Tensor)}


def save_feature_stats(result: dict[str, Any], sae_dir: str | os.PathLike) -> Path:
    """Write ``feature_stats.safetensors`` (firing_counts, max/mean_activation, rows) atomically."""
    from safetensors.torch import save

    path = Path(sae_dir) / FEATURE_STATS
    tensors = {k: result[k].contiguous() for k in TENSOR_KEYS}
    tensors["rows"] = torch.tensor([int(result["rows"])], dtype=torch.int64)
    atomic_write_bytes(path, save(tensors))
    return path


def load_feature_stats(sae_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read ``feature_stats.safetensors`` from an SAE directory."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(sae_dir) / FEATURE_STATS
    if not path.is_file():
        raise RlsaeError(
            f"{path} not found; run `rlsae sae eval --sae {sae_dir} --acts STORE` first"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise RlsaeError(f"{path} is truncated or corrupt ({e})") from None
