"""Mean max cosine similarity (MMCS) between two dictionaries of decoder directions, and the
shared-features artifact of the language-model study.

For dictionaries A (n_a, d) and B (n_b, d): each row of A is matched to its most similar row of B
by cosine similarity; ``mmcs_ab`` is the mean of those maxima (and ``mmcs_ba`` the other way).
The similarity matrix is built in row chunks, so 16k x 16k dictionaries never need more than a
(chunk, n_b) block at once. ``top_k`` lists A's features with the highest max similarity in B
(the paper's shared-feature set D_g). ``hungarian=True`` adds a one-to-one matching
(scipy's linear_sum_assignment) for dictionaries small enough to hold the full matrix.

Artifacts: :class:`MMCSResult` (``rlsae.mmcs``, ``rlsae analyze mmcs --json``) and
:class:`SharedFeatures` (``rlsae.shared-features``, ``analysis/llm_shared_features.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from rlsae.artifacts import Artifact
from rlsae.errors import RlsaeError

if TYPE_CHECKING:  # torch is imported where the comparison runs: the artifacts load without it
    import torch

HUNGARIAN_MAX = 8192 * 8192


@dataclass
class FeatureMatch:
    """A feature of dictionary A and its most similar feature of dictionary B."""

    feature: int
    """Index of the feature in A."""
    match: int
    """Index of its best match in B."""
    cosine: float
    """Cosine similarity of the two decoder directions."""


@dataclass
class MMCSResult(Artifact):
    """MMCS of two dictionaries both ways, A's best-matched features (``analyze mmcs --json``)."""

    FORMAT: ClassVar[str] = "rlsae.mmcs"
    VERSION: ClassVar[int] = 1

    mmcs_ab: float
    """Mean over A's features of the max cosine similarity to B's."""
    mmcs_ba: float
    """Mean over B's features of the max cosine similarity to A's."""
    n_a: int
    """Features in A."""
    n_b: int
    """Features in B."""
    top_k: list[FeatureMatch] = field(default_factory=list)
    """A's features with the highest max similarity in B, best first."""
    hungarian_mean_cos: float | None = None
    """Mean cosine of the one-to-one (Hungarian) matching; None when not asked for."""
    hungarian_pairs: list[list[float]] | None = None
    """The one-to-one matching as ``[a, b, cosine]`` rows (a, b are feature indices); None when
    not asked for."""
    sae_a: str = ""
    """Where dictionary A came from (an SAE directory); empty when given as a matrix."""
    sae_b: str = ""
    """Where dictionary B came from."""


@dataclass
class DictionaryComparison:
    """:func:`compare_dictionaries`'s result: the JSON artifact and the per-feature tensors."""

    result: MMCSResult
    """The summary (what is written)."""
    max_cos_ab: torch.Tensor
    """(n_a,) max cosine of each A feature in B."""
    argmax_ab: torch.Tensor
    """(n_a,) index of that best match in B."""
    max_cos_ba: torch.Tensor
    """(n_b,) max cosine of each B feature in A."""


def _unit_rows(W: torch.Tensor, name: str) -> torch.Tensor:
    import torch

    W = torch.as_tensor(W).detach().to(torch.float32)
    if W.ndim != 2 or W.shape[0] == 0:
        raise RlsaeError(
            f"dictionary {name} must be a non-empty (n_features, d) matrix, got {tuple(W.shape)}"
        )
    if not torch.isfinite(W).all():
        raise RlsaeError(f"dictionary {name} holds NaN or Inf")
    return W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)


def check_top_k(top_k: int) -> None:
    """Refuse a negative ``--top-k`` in one line (0 lists no features)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise RlsaeError(f"--top-k must be a whole number >= 0, got {top_k!r}")


def compare_dictionaries(
    W_dec_a: torch.Tensor,
    W_dec_b: torch.Tensor,
    top_k: int = 10,
    hungarian: bool = False,
    *,
    chunk: int = 2048,
) -> DictionaryComparison:
    """MMCS both ways, A's top-k features by max similarity in B, optional Hungarian matching."""
    import torch

    check_top_k(top_k)
    A = _unit_rows(W_dec_a, "A")
    B = _unit_rows(W_dec_b, "B")
    if A.shape[1] != B.shape[1]:
        raise RlsaeError(
            f"dictionaries live in different spaces (d={A.shape[1]} vs d={B.shape[1]}); "
            "compare SAEs of the same width"
        )
    n_a, n_b = A.shape[0], B.shape[0]
    if hungarian and n_a * n_b > HUNGARIAN_MAX:
        raise RlsaeError(
            f"Hungarian matching of {n_a} x {n_b} features is too large; drop --hungarian"
        )
    max_ab = torch.empty(n_a)
    arg_ab = torch.empty(n_a, dtype=torch.long)
    max_ba = torch.full((n_b,), -2.0)
    for s in range(0, n_a, chunk):
        block = A[s : s + chunk] @ B.t()  # (chunk, n_b)
        m, i = block.max(dim=1)
        max_ab[s : s + chunk], arg_ab[s : s + chunk] = m, i
        max_ba = torch.maximum(max_ba, block.max(dim=0).values)
    order = torch.argsort(max_ab, descending=True, stable=True)[: min(top_k, n_a)]
    result = MMCSResult(
        mmcs_ab=float(max_ab.mean()),
        mmcs_ba=float(max_ba.mean()),
        n_a=n_a,
        n_b=n_b,
        top_k=[FeatureMatch(int(f), int(arg_ab[f]), float(max_ab[f])) for f in order],
    )
    if hungarian:
        from scipy.optimize import linear_sum_assignment

        sim = (A @ B.t()).double().numpy()
        rows, cols = linear_sum_assignment(sim, maximize=True)
        cos = sim[rows, cols]
        result.hungarian_mean_cos = float(cos.mean())
        result.hungarian_pairs = [
            [int(r), int(c), float(v)] for r, c, v in zip(rows, cols, cos, strict=True)
        ]
    return DictionaryComparison(result, max_ab, arg_ab, max_ba)


# ----------------------------------------------------------------------------- shared features


@dataclass
class SAEPair:
    """MMCS of two SAEs' dictionaries (A vs B), with A's best-matched features."""

    sae_a: str
    """Dictionary A: an SAE directory relative to the run directory (``saes/...``)."""
    sae_b: str
    """Dictionary B, likewise."""
    mmcs_ab: float
    """MMCS from A to B."""
    mmcs_ba: float
    """MMCS from B to A."""
    top_k: list[FeatureMatch] = field(default_factory=list)
    """A's ``k`` features with the highest max cosine in B, best first."""


@dataclass
class SizePair(SAEPair):
    """A model's small SAE (A) against its large SAE (B) on one layer."""

    d_sae_a: int = 0
    """Features of the small SAE."""
    d_sae_b: int = 0
    """Features of the large SAE."""
    top_k_utility: list[FeatureMatch] = field(default_factory=list)
    """The ``utility_k`` best-matched features, those explained and scored for Table 3."""


@dataclass
class LayerShared:
    """Shared features on one layer: small vs large per model, and base vs tuned."""

    layer: int
    """Block index."""
    hook: str
    """Hook point, e.g. ``blocks.3.hook_resid_post``."""
    models: dict[str, SizePair] = field(default_factory=dict)
    """Per model (``base``, ``tuned``): its small SAE against its large SAE."""
    base_vs_tuned: SAEPair | None = None
    """The base model's small SAE against the tuned model's; None when not computed."""


@dataclass
class SharedFeatures(Artifact):
    """The LM study's shared features (``analysis/llm_shared_features.json``)."""

    FORMAT: ClassVar[str] = "rlsae.shared-features"
    VERSION: ClassVar[int] = 1

    k: int
    """Length of each ``top_k`` list."""
    utility_k: int
    """Length of each ``top_k_utility`` list."""
    layers: list[LayerShared] = field(default_factory=list)
    """One entry per studied layer, most divergent first."""

    def layer(self, layer: int) -> LayerShared:
        """The entry of ``layer`` (KeyError if the study did not cover it)."""
        for entry in self.layers:
            if entry.layer == layer:
                return entry
        raise KeyError(layer)

    def pairs(self) -> list[tuple[LayerShared, str, SAEPair]]:
        """Every pair in the file as ``(layer entry, kind, pair)``; kind is the model name
        (small vs large) or ``base_vs_tuned``."""
        out: list[tuple[LayerShared, str, SAEPair]] = []
        for entry in self.layers:
            out += [(entry, src, pair) for src, pair in entry.models.items()]
            if entry.base_vs_tuned is not None:
                out.append((entry, "base_vs_tuned", entry.base_vs_tuned))
        return out


def size_pair(cmp: MMCSResult, sae_a: str, sae_b: str, k: int, utility_k: int) -> SizePair:
    """A :class:`SizePair` from a comparison of the small (A) and large (B) SAE of one model
    (compare with ``top_k >= max(k, utility_k)``)."""
    return SizePair(
        sae_a=sae_a,
        sae_b=sae_b,
        mmcs_ab=cmp.mmcs_ab,
        mmcs_ba=cmp.mmcs_ba,
        top_k=cmp.top_k[:k],
        d_sae_a=cmp.n_a,
        d_sae_b=cmp.n_b,
        top_k_utility=cmp.top_k[:utility_k],
    )


def sae_pair(cmp: MMCSResult, sae_a: str, sae_b: str, k: int) -> SAEPair:
    """An :class:`SAEPair` from a comparison of dictionary A with dictionary B."""
    return SAEPair(sae_a, sae_b, cmp.mmcs_ab, cmp.mmcs_ba, cmp.top_k[:k])
