"""Toy activations with planted features, and their ground truth: ``synthesize(cfg, out)``.

Each row is a sparse non-negative combination of ``n_features`` planted unit directions in
``d_in`` dimensions (superposition when n_features > d_in):

    x = sum_i a_i d_i        a_i = magnitude (uniform in [0.5, 1.5]) where feature i fires

Feature i fires independently with probability p_i: ``poisson`` firing gives every feature the
same p = mean_active / n_features (so the count per row is close to Poisson(mean_active));
``zipf`` firing gives p_i proportional to 1 / (i + 1) ** zipf_exponent, scaled so the expected
count per row is ``mean_active`` (no p above 1). With ``parents`` > 0 the first ``parents``
features are parents, each with ``children`` child features after them that can only fire on
rows where their parent fires (each with probability ``child_prob`` there): the hierarchy that
feature absorption and Matryoshka SAEs are about.

With ``correlated_groups`` > 0, that many groups of ``group_size`` features (right after the
hierarchy's) fire together more often than chance: a Gaussian copula, feature i of group j
firing where sqrt(c) z_j + sqrt(1 - c) e_i is above the standard normal quantile 1 - p_i
(``correlation`` c), so each feature keeps its probability p_i.

The store is an ordinary activation store; the ground truth (``ground_truth.safetensors`` in the
store directory, or ``truth_path``) holds ``directions`` (n_features, d_in), the true activations
as coordinates ``act_rows``, ``act_features``, ``act_values`` and ``parent`` (n_features,) (-1
for none). ``rlsae sae eval --ground-truth`` reads it (``rlsae.sae.groundtruth``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlsae.configs import check_range, describe
from rlsae.errors import RlsaeError

GROUND_TRUTH = "ground_truth.safetensors"


@dataclass
class SynthConfig:
    """What ``rlsae acts synth`` plants. The defaults are the toy the SAE kinds are compared on."""

    rows: int = 65536
    """Rows of activations."""
    d_in: int = 64
    """Width of the activations."""
    n_features: int = 256
    """Planted unit directions (random Gaussian, normalised)."""
    mean_active: float = 4.0
    """Expected features firing per row."""
    firing: Literal["poisson", "zipf"] = "poisson"
    """``poisson``: every feature equally likely; ``zipf``: p_i proportional to 1/(i+1)^s."""
    zipf_exponent: float = 1.0
    """The s of ``zipf`` firing."""
    parents: int = 0
    """Parent features, each with ``children`` children firing only with it (0: no hierarchy)."""
    children: int = 4
    """Children per parent (with ``parents`` > 0)."""
    child_prob: float = 0.5
    """Probability that each child fires on a row where its parent fires."""
    correlated_groups: int = 0
    """Groups of ``group_size`` features (after the hierarchy's) whose firing is correlated
    (0: every feature fires independently)."""
    group_size: int = 2
    """Features per correlated group."""
    correlation: float = 0.5
    """Correlation of the Gaussians behind the firing of two features of a group (a Gaussian
    copula: feature i fires where sqrt(c) z_group + sqrt(1 - c) e_i is above the quantile that
    keeps its firing probability); in [0, 1)."""
    seed: int = 0
    """Seeds directions, firing and magnitudes."""

    def validate(self, where: str = "SynthConfig") -> None:
        """Refuse an impossible setting in one line before any work."""
        for name, lo in (("rows", 1), ("d_in", 1), ("n_features", 1), ("parents", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise RlsaeError(f"{where}: {name}: expected an integer, got {describe(value)}")
            check_range(where, name, value, lo)
        if isinstance(self.children, bool) or not isinstance(self.children, int):
            raise RlsaeError(
                f"{where}: children: expected an integer, got {describe(self.children)}"
            )
        check_range(where, "children", self.children, 1)
        check_range(where, "seed", self.seed, 0, 2**32 - 1)
        check_range(where, "mean_active", self.mean_active, 0, self.n_features, lo_open=True)
        check_range(where, "zipf_exponent", self.zipf_exponent, 0)
        check_range(where, "child_prob", self.child_prob, 0, 1)
        for name, lo in (("correlated_groups", 0), ("group_size", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise RlsaeError(f"{where}: {name}: expected an integer, got {describe(value)}")
            check_range(where, name, value, lo)
        check_range(where, "correlation", self.correlation, 0, 1)
        if self.correlation >= 1:
            raise RlsaeError(f"{where}: correlation: must be below 1, got {self.correlation!r}")
        if not self.correlated_groups and (self.correlation != 0.5 or self.group_size != 2):
            name = "correlation" if self.correlation != 0.5 else "group_size"
            raise RlsaeError(
                f"{where}: {name}: a setting of correlated groups; give correlated_groups"
            )
        need = self.parents * (1 + self.children) + self.correlated_groups * self.group_size
        if self.correlated_groups and need > self.n_features:
            raise RlsaeError(
                f"{where}: correlated_groups: {self.correlated_groups} groups of "
                f"{self.group_size} after the hierarchy need {need} features, more than "
                f"n_features={self.n_features}"
            )
        if self.firing not in ("poisson", "zipf"):
            raise RlsaeError(
                f"{where}: firing: expected poisson or zipf, got {describe(self.firing)}"
            )
        if self.parents * (1 + self.children) > self.n_features:
            raise RlsaeError(
                f"{where}: parents: {self.parents} parents with {self.children} children each need "
                f"{self.parents * (1 + self.children)} features, more than n_features={self.n_features}"
            )


def synthesize(
    cfg: SynthConfig,
    out: str | os.PathLike,
    *,
    truth_path: str | os.PathLike | None = None,
    shard_rows: int = 65536,
) -> Path:
    """Write the store ``out`` and its ground truth (``out/ground_truth.safetensors`` unless
    ``truth_path``); returns the ground truth's path. Refuses an existing ``out``."""
    import torch
    from safetensors.torch import save

    from rlsae.fsutil import atomic_write_bytes
    from rlsae.sae.store import ActivationWriter

    cfg.validate()
    out = Path(out)
    if out.exists():
        raise RlsaeError(f"{out} already exists; choose another --out or remove it")
    g = torch.Generator().manual_seed(cfg.seed)
    n, d = cfg.n_features, cfg.d_in
    directions = torch.randn(n, d, generator=g)
    directions /= directions.norm(dim=1, keepdim=True)
    p, parent = firing_probabilities(cfg)
    groups = correlated_features(cfg)
    rows: list[torch.Tensor] = []
    feats: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    with ActivationWriter(
        out,
        d,
        hook="synth",
        source=f"synth-{cfg.seed}",
        provider="synth",
        shard_rows=shard_rows,
        extra={"synth": _jsonable(cfg)},
    ) as writer:
        for start in range(0, cfg.rows, 8192):
            b = min(8192, cfg.rows - start)
            fires = torch.rand(b, n, generator=g) < p
            if groups is not None:  # correlated groups: a Gaussian copula per group
                fires[:, groups] = _correlated_firing(b, groups, p, cfg.correlation, g)
            if cfg.parents:  # children only where their parent fires
                has_parent = parent >= 0
                fires[:, has_parent] &= fires[:, parent[has_parent]]
            acts = fires * (0.5 + torch.rand(b, n, generator=g))
            writer.append(acts @ directions)
            r, f = acts.nonzero(as_tuple=True)
            rows.append(r + start)
            feats.append(f)
            values.append(acts[r, f])
    tensors = {
        "directions": directions.contiguous(),
        "act_rows": torch.cat(rows),
        "act_features": torch.cat(feats),
        "act_values": torch.cat(values).float(),
        "parent": parent.contiguous(),
    }
    path = Path(truth_path) if truth_path is not None else out / GROUND_TRUTH
    atomic_write_bytes(path, save(tensors))
    return path


def firing_probabilities(cfg: SynthConfig) -> tuple[Any, Any]:
    """(p, parent): each feature's firing probability (a child's: given its parent) and its
    parent's index (-1 for none), as torch tensors."""
    import torch

    n = cfg.n_features
    parent = torch.full((n,), -1, dtype=torch.long)
    n_children = cfg.parents * cfg.children
    for i in range(cfg.parents):
        first = cfg.parents + i * cfg.children
        parent[first : first + cfg.children] = i
    free = [i for i in range(n) if parent[i] < 0]  # parents and unrelated features
    if cfg.firing == "zipf":
        w = 1.0 / torch.arange(1, len(free) + 1, dtype=torch.float64) ** cfg.zipf_exponent
    else:
        w = torch.ones(len(free), dtype=torch.float64)
    # expected count: sum of free p + children's (p_parent * child_prob) each
    boost = torch.ones(len(free), dtype=torch.float64)
    boost[: cfg.parents] += cfg.children * cfg.child_prob
    scale = cfg.mean_active / float((w * boost).sum())
    p = torch.zeros(n, dtype=torch.float64)
    p[torch.tensor(free)] = (w * scale).clamp(max=1.0)
    if n_children:
        p[parent >= 0] = cfg.child_prob
    return p.float(), parent


def correlated_features(cfg: SynthConfig) -> Any:
    """The correlated groups' features as a (groups, group_size) torch index (None without
    groups): the features right after the hierarchy's, group by group."""
    import torch

    if not cfg.correlated_groups:
        return None
    start = cfg.parents * (1 + cfg.children)
    size = cfg.correlated_groups * cfg.group_size
    return torch.arange(start, start + size).reshape(cfg.correlated_groups, cfg.group_size)


def _correlated_firing(rows: int, groups: Any, p: Any, c: float, g: Any) -> Any:
    """(rows, groups, group_size) firing of the grouped features: feature i of group j fires
    where sqrt(c) z_j + sqrt(1 - c) e_i > Phi^-1(1 - p_i), z and e independent standard normals,
    so each keeps its probability p_i and two of a group are correlated through c."""
    import torch

    z = torch.randn(rows, groups.shape[0], 1, generator=g, dtype=torch.float64)
    e = torch.randn(rows, *groups.shape, generator=g, dtype=torch.float64)
    u = math.sqrt(c) * z + math.sqrt(1.0 - c) * e
    return u > torch.special.ndtri(1.0 - p[groups].double())


def _jsonable(cfg: SynthConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(cfg)
