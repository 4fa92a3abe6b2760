"""Feature pairs across SAEs for the feature pages, from the shared-features artifact.

``analysis/llm_shared_features.json`` (:class:`rlsae.analysis.mmcs.SharedFeatures`) lists, per
layer, each model's small SAE against its large SAE and the base model's SAE against the tuned
model's, with the best-matched features. A feature page lists the features of other SAEs that
its feature is paired with, and links to them when the other SAE is part of the site.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlsae.analysis.mmcs import SAEPair, SharedFeatures, SizePair
from rlsae.errors import RlsaeError

SHARED_FILE = "llm_shared_features.json"
"""The shared-features artifact's name under ``analysis/``."""


@dataclass
class FeaturePair:
    """A feature of another SAE paired with the page's feature."""

    other: str | None
    """Site id of the other SAE, or None when the site does not hold it (then no link)."""
    other_name: str
    """The other SAE's path under ``saes/``."""
    feature: int
    """The paired feature of the other SAE."""
    cosine: float | None
    """Cosine similarity of the two decoder directions."""
    kind: str
    """Which comparison paired them: ``base_vs_tuned`` or ``models/MODEL`` (small vs large)."""

    def to_page(self) -> dict[str, Any]:
        return {
            "other": self.other,
            "other_name": self.other_name,
            "feature": self.feature,
            "cosine": self.cosine,
            "kind": self.kind,
        }


def read_shared(run_dir: Path, notes: list[str]) -> SharedFeatures | None:
    """The run's shared-features artifact; None (with a note if it is unreadable) if absent."""
    path = run_dir / "analysis" / SHARED_FILE
    if not path.is_file():
        return None
    try:
        return SharedFeatures.read(path)
    except RlsaeError as e:
        notes.append(f"{e}; no feature pairs")
        return None


def _comparisons(shared: SharedFeatures) -> list[tuple[str, SAEPair]]:
    """(kind, pair) of every comparison, base-vs-tuned of each layer first."""
    out: list[tuple[str, SAEPair]] = []
    for entry in shared.layers:
        if entry.base_vs_tuned is not None:
            out.append(("base_vs_tuned", entry.base_vs_tuned))
        out += [(f"models/{name}", pair) for name, pair in entry.models.items()]
    return out


def _norm(p: str) -> str:
    p = p.replace("\\", "/").rstrip("/")
    return p.split("saes/", 1)[1] if "saes/" in p else p


def _names(p: str, sae_rel: str) -> bool:
    return p == sae_rel or p.endswith("/" + sae_rel)


def _lookup(p: str, by_rel: dict[str, str]) -> str | None:
    for rel, sid in by_rel.items():
        if _names(p, rel):
            return sid
    return None


def shared_pairs(
    shared: SharedFeatures, sae_rel: str, by_rel: dict[str, str]
) -> dict[int, list[FeaturePair]]:
    """The features of SAE ``sae_rel`` (its path under ``saes/``) that ``shared`` pairs with a
    feature of another SAE: {feature: [FeaturePair]}, each pair listed once. ``by_rel`` maps the
    site's SAE paths to their ids."""
    out: dict[int, list[FeaturePair]] = {}
    seen: set[tuple[int, str, int]] = set()
    for kind, pair in _comparisons(shared):
        a, b = _norm(pair.sae_a), _norm(pair.sae_b)
        if _names(a, sae_rel):
            side, other_name = "a", b
        elif _names(b, sae_rel):
            side, other_name = "b", a
        else:
            continue
        other = _lookup(other_name, by_rel)
        matches = list(pair.top_k)
        if isinstance(pair, SizePair):
            matches += pair.top_k_utility
        for m in matches:
            mine, theirs = (m.feature, m.match) if side == "a" else (m.match, m.feature)
            if (mine, other_name, theirs) in seen:
                continue
            seen.add((mine, other_name, theirs))
            cos = float(f"{m.cosine:.4g}") if math.isfinite(m.cosine) else None
            out.setdefault(mine, []).append(FeaturePair(other, other_name, theirs, cos, kind))
    return out
