"""Mean max cosine similarity (MMCS) between two dictionaries of decoder directions.

For dictionaries A (n_a, d) and B (n_b, d): each row of A is matched to its most similar row of B
by cosine similarity; ``mmcs_ab`` is the mean of those maxima (and ``mmcs_ba`` the other way).
The similarity matrix is built in row chunks, so 16k x 16k dictionaries never need more than a
(chunk, n_b) block at once. ``top_k`` lists A's features with the highest max similarity in B
(the paper's shared-feature set D_g). ``hungarian=True`` adds a one-to-one matching
(scipy's linear_sum_assignment) for dictionaries small enough to hold the full matrix.
"""

from __future__ import annotations

from typing import Any

import torch

from rlsae.errors import RlsaeError

HUNGARIAN_MAX = 8192 * 8192


def _unit_rows(W: torch.Tensor, name: str) -> torch.Tensor:
    W = torch.as_tensor(W).detach().to(torch.float32)
    if W.ndim != 2 or W.shape[0] == 0:
        raise RlsaeError(
            f"dictionary {name} must be a non-empty (n_features, d) matrix, got {tuple(W.shape)}"
        )
    if not torch.isfinite(W).all():
        raise RlsaeError(f"dictionary {name} holds NaN or Inf")
    return W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)


def compare_dictionaries(
    W_dec_a: torch.Tensor,
    W_dec_b: torch.Tensor,
    top_k: int = 10,
    hungarian: bool = False,
    *,
    chunk: int = 2048,
) -> dict[str, Any]:
    """MMCS both ways, A's top-k features by max similarity in B, optional Hungarian matching.

    Returns ``mmcs_ab``, ``mmcs_ba``, ``top_k`` (list of ``{feature, match, cosine}``),
    ``n_a``, ``n_b``, and the tensors ``max_cos_ab`` / ``argmax_ab`` / ``max_cos_ba`` (not JSON).
    With ``hungarian``: ``hungarian_mean_cos`` and ``hungarian_pairs`` (list of [a, b, cosine]).
    """
    A = _unit_rows(W_dec_a, "A")
    B = _unit_rows(W_dec_b, "B")
    if A.shape[1] != B.shape[1]:
        raise RlsaeError(
            f"dictionaries live in different spaces (d={A.shape[1]} vs d={B.shape[1]}); compare SAEs of the same width"
        )
    n_a, n_b = A.shape[0], B.shape[0]
    max_ab = torch.empty(n_a)
    arg_ab = torch.empty(n_a, dtype=torch.long)
    max_ba = torch.full((n_b,), -2.0)
    for s in range(0, n_a, chunk):
        block = A[s : s + chunk] @ B.t()  # (chunk, n_b)
        m, i = block.max(dim=1)
        max_ab[s : s + chunk], arg_ab[s : s + chunk] = m, i
        max_ba = torch.maximum(max_ba, block.max(dim=0).values)
    k = max(0, min(int(top_k), n_a))
    order = torch.argsort(max_ab, descending=True, stable=True)[:k]
    result: dict[str, Any] = {
        "mmcs_ab": float(max_ab.mean()),
        "mmcs_ba": float(max_ba.mean()),
        "n_a": n_a,
        "n_b": n_b,
        "top_k": [
            {"feature": int(f), "match": int(arg_ab[f]), "cosine": float(max_ab[f])} for f in order
        ],
        "max_cos_ab": max_ab,
        "argmax_ab": arg_ab,
        "max_cos_ba": max_ba,
    }
    if hungarian:
        if n_a * n_b > HUNGARIAN_MAX:
            raise RlsaeError(
                f"Hungarian matching of {n_a} x {n_b} features is too large; drop --hungarian"
            )
        from scipy.optimize import linear_sum_assignment

        sim = (A @ B.t()).double().numpy()
        rows, cols = linear_sum_assignment(sim, maximize=True)
        cos = sim[rows, cols]
        result["hungarian_mean_cos"] = float(cos.mean())
        result["hungarian_pairs"] = [
            [int(r), int(c), float(v)] for r, c, v in zip(rows, cols, cos, strict=True)
        ]
    return result


def json_result(result: dict[str, Any]) -> dict[str, Any]:
    """``compare_dictionaries``'s result without the tensors."""
    return {k: v for k, v in result.items() if not isinstance(v, torch.Tensor)}
