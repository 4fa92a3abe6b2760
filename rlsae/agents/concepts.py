"""Game-state concepts of Ms. Pac-Man, and which SAE features they explain.

Concepts are computed from decoded RAM states (:class:`rlsae.agents.ram.MsPacmanStates`) and,
for the action concepts, the actions taken. Distances are in screen pixels between sprite
centres. A *threatening* ghost is one that is neither edible nor eyes only. "In direction D"
means in D's quadrant: left is ``dx < 0`` with ``|dx| >= |dy|``, up is ``dy < 0`` with
``|dy| > |dx|`` (screen y grows downwards), and likewise right and down.

=================================  ======  =====================================================
name                               kind    true when / value
=================================  ======  =====================================================
``ghost_{dir}_{d}``                bool    a threatening ghost within ``d`` px in direction
                                           ``dir`` (left, right, up, down; ``d`` in
                                           :data:`DISTANCES`)
``ghost_near_{d}``                 bool    a threatening ghost within ``d`` px, any direction
``edible_ghost_near_{d}``          bool    an edible ghost within ``d`` px (``d`` in
                                           :data:`EDIBLE_DISTANCES`)
``any_ghost_edible``               bool    at least one ghost is edible
``ghost_eyes``                     bool    at least one eaten ghost's eyes are travelling home
``nearest_ghost_distance``         scalar  distance to the nearest threatening ghost (px; 250
                                           when there is none)
``nearest_edible_ghost_distance``  scalar  distance to the nearest edible ghost (px; 250 when
                                           none)
``region_{i}_{j}``                 bool    Ms. Pac-Man in row ``i``, column ``j`` of a
                                           :data:`GRID` grid over the maze (0, 0 = top left)
``at_side_edge``                   bool    Ms. Pac-Man within 6 px of the leftmost or rightmost
                                           x she reaches (the outer corridors, where the tunnels
                                           open)
``in_tunnel``                      bool    Ms. Pac-Man in a tunnel of her maze (the exits in
                                           ``ram.MAZE_TUNNELS``, within 12 px of a side)
``player_x``, ``player_y``         scalar  Ms. Pac-Man's position (px)
``heading_{dir}``                  bool    Ms. Pac-Man faces ``dir`` (the game's heading)
``power_pill_near_{d}``            bool    a power pill left within ``d`` px (``d`` in
                                           :data:`PILL_DISTANCES`)
``power_pills_left``               scalar  power pills left (0-4)
``dots_left``                      scalar  dots left in the maze
``dots_left_{lo}_{hi}``            bool    ``lo <= dots_left < hi`` (bins :data:`DOT_BINS`)
``lives``                          scalar  lives including the one being played
``lives_{k}``                      bool    exactly ``k`` lives (1-3)
``level_start``                    bool    no dot eaten yet in this maze
``fruit_present``                  bool    a fruit is on the board
``action_{name}``                  bool    the action taken was ``name`` (ale-py's minimal
                                           set: NOOP, UP, ...); only with an action array
=================================  ======  =====================================================

Matching (:func:`match_concepts`): for every live feature (one that fires on some row) and
every boolean concept, the AUROC of the feature's activation for the concept (ties counted
half, as the Mann-Whitney statistic), with the activation threshold that maximises F1 and that
F1; a concept can also match negated ("fires when no ghost is near"), with AUROC ``1 - a``.
For scalar concepts, Spearman's rank correlation. Matches are ranked by strength,
``2 |AUROC - 0.5|`` or ``|rho|``, a scalar concept first on a tie. Coverage is the fraction of
live features whose best boolean match has AUROC >= 0.9 (either sign). For each concept the
best single feature is kept; given the raw layer, each concept also gets a ridge probe's
held-out score (:func:`probe_concepts`), to show what the layer encodes that no single feature
carries.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from rlsae.agents.ram import (
    DIRECTIONS,
    POWER_PILL_XY,
    MsPacmanStates,
    decode_ram_batch,
    recording_ram,
)
from rlsae.artifacts import Artifact
from rlsae.errors import RlsaeError

DISTANCES: tuple[int, ...] = (12, 24, 48)
"""Radii (px) of the directional and any-direction ghost concepts."""
EDIBLE_DISTANCES: tuple[int, ...] = (24, 48)
"""Radii (px) of the edible-ghost concepts."""
PILL_DISTANCES: tuple[int, ...] = (16, 32)
"""Radii (px) of the power-pill concepts."""
GRID: tuple[int, int] = (3, 3)
"""Rows and columns of the maze-region grid."""
MAZE_WIDTH, MAZE_HEIGHT = 160.0, 172.0
"""The maze's extent on the 210x160 screen (below it: lives and score)."""
SIDE_EDGE_X: tuple[float, float] = (9.5, 149.5)
"""The leftmost and rightmost centre x Ms. Pac-Man reaches (RAM x 18 and 158)."""
DOT_BINS: tuple[int, ...] = (0, 60, 120, 180, 1000)
"""Edges of the ``dots_left`` bins (the first maze has 150 dots)."""
NO_GHOST_DISTANCE = 250.0
"""The distance given when no ghost of the kind is on the board (beyond the maze diagonal)."""
ACTION_NAMES: tuple[str, ...] = (
    "NOOP", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT",
)  # fmt: skip
"""ale-py's Ms. Pac-Man minimal action set, in order (index = action id)."""

Kind = Literal["bool", "scalar"]


@dataclass(frozen=True)
class Concept:
    """One named concept: its kind and the phrase that explanations use."""

    name: str
    kind: Kind
    phrase: str
    """Completes "fires when ..." (bool) or "grows with ..." (scalar)."""


@dataclass(frozen=True)
class ConceptValues:
    """Concepts evaluated on ``n`` rows: ``values[:, k]`` is ``concepts[k]`` (bools as 0/1)."""

    concepts: tuple[Concept, ...]
    values: np.ndarray
    """(n, len(concepts)) float32."""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]

    def column(self, name: str) -> np.ndarray:
        """The values of one concept (one-line error for an unknown name)."""
        return self.values[:, self._index(name)]

    def select(self, names: Sequence[str]) -> ConceptValues:
        """The named concepts only, in that order (one-line error for an unknown name)."""
        idx = [self._index(n) for n in names]
        return ConceptValues(tuple(self.concepts[i] for i in idx), self.values[:, idx])

    def _index(self, name: str) -> int:
        for i, c in enumerate(self.concepts):
            if c.name == name:
                return i
        known = self.names
        raise RlsaeError(
            f"no concept named {name!r}; there are {len(known)}, e.g. {', '.join(known[:6])} "
            "(see rlsae.agents.concepts)"
        )


def _distances(states: MsPacmanStates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ghost offsets from Ms. Pac-Man (dx, dy) and distances, each (n, 4)."""
    dx = states.ghost_x - states.player_x[:, None]
    dy = states.ghost_y - states.player_y[:, None]
    return dx, dy, np.hypot(dx, dy)


def _quadrants(dx: np.ndarray, dy: np.ndarray) -> dict[str, np.ndarray]:
    horizontal = np.abs(dx) >= np.abs(dy)
    return {
        "left": horizontal & (dx < 0),
        "right": horizontal & (dx > 0),
        "up": ~horizontal & (dy < 0),
        "down": ~horizontal & (dy > 0),
    }


def compute_concepts(
    states: MsPacmanStates, actions: np.ndarray | Sequence[int] | None = None
) -> ConceptValues:
    """Every concept of the module table on every row of ``states`` (actions optional)."""
    n = len(states)
    act = None if actions is None else _check_actions(actions, n)
    cols = _Columns()
    _ghost_concepts(cols, states)
    _place_concepts(cols, states)
    _progress_concepts(cols, states)
    if act is not None:
        for k, name in enumerate(ACTION_NAMES):
            cols.add(f"action_{name}", "bool", f"the agent chooses {name}", act == k)
    concepts = tuple(cpt for cpt, _ in cols.items)
    if not cols.items:
        return ConceptValues(concepts, np.zeros((n, 0), np.float32))
    return ConceptValues(concepts, np.stack([v for _, v in cols.items], axis=1).reshape(n, -1))


def _check_actions(actions: np.ndarray | Sequence[int], n: int) -> np.ndarray:
    act = np.asarray(actions).reshape(-1)
    if act.shape[0] != n:
        raise RlsaeError(f"{act.shape[0]} actions for {n} states; give one per row")
    if act.size and (act.min() < 0 or act.max() >= len(ACTION_NAMES)):
        raise RlsaeError(f"actions must be in 0..{len(ACTION_NAMES) - 1}")
    return act


@dataclass
class _Columns:
    """Concept columns in the order they are added."""

    items: list[tuple[Concept, np.ndarray]] = field(default_factory=list)

    def add(self, name: str, kind: Kind, phrase: str, value: np.ndarray | np.generic) -> None:
        self.items.append((Concept(name, kind, phrase), np.asarray(value, dtype=np.float32)))


def _ghost_concepts(cols: _Columns, states: MsPacmanStates) -> None:
    add = cols.add
    dx, dy, dist = _distances(states)
    threat = ~states.ghost_edible & ~states.ghost_eyes
    quads = _quadrants(dx, dy)
    for d in DISTANCES:
        near = threat & (dist <= d)
        for name in ("left", "right", "up", "down"):
            add(f"ghost_{name}_{d}", "bool", f"a ghost is within {d} px to the {name}"
                if name in ("left", "right") else f"a ghost is within {d} px {name}",
                (near & quads[name]).any(axis=1))  # fmt: skip
        add(f"ghost_near_{d}", "bool", f"a ghost is within {d} px", near.any(axis=1))
    for d in EDIBLE_DISTANCES:
        add(f"edible_ghost_near_{d}", "bool", f"an edible ghost is within {d} px",
            (states.ghost_edible & (dist <= d)).any(axis=1))  # fmt: skip
    add("any_ghost_edible", "bool", "a ghost is edible", states.ghost_edible.any(axis=1))
    add("ghost_eyes", "bool", "an eaten ghost's eyes travel home", states.ghost_eyes.any(axis=1))
    far = np.float32(NO_GHOST_DISTANCE)
    add("nearest_ghost_distance", "scalar", "the distance to the nearest ghost",
        np.where(threat, dist, far).min(axis=1, initial=far))  # fmt: skip
    add("nearest_edible_ghost_distance", "scalar", "the distance to the nearest edible ghost",
        np.where(states.ghost_edible, dist, far).min(axis=1, initial=far))  # fmt: skip


def _place_concepts(cols: _Columns, states: MsPacmanStates) -> None:
    add = cols.add
    rows, ncols = GRID
    r = np.clip((states.player_y / MAZE_HEIGHT * rows).astype(np.int64), 0, rows - 1)
    c = np.clip((states.player_x / MAZE_WIDTH * ncols).astype(np.int64), 0, ncols - 1)
    for i in range(rows):
        for j in range(ncols):
            add(f"region_{i}_{j}", "bool",
                f"Ms. Pac-Man is in maze region row {i}, column {j} of {rows}x{ncols}",
                (r == i) & (c == j))  # fmt: skip
    lo, hi = SIDE_EDGE_X
    add("at_side_edge", "bool", "Ms. Pac-Man is at the left or right edge of the maze",
        (states.player_x <= lo + 6) | (states.player_x >= hi - 6))  # fmt: skip
    add("in_tunnel", "bool", "Ms. Pac-Man is in a tunnel", states.in_tunnel())
    add("player_x", "scalar", "Ms. Pac-Man's x (further right)", states.player_x)
    add("player_y", "scalar", "Ms. Pac-Man's y (further down)", states.player_y)
    for k, name in enumerate(DIRECTIONS):
        add(f"heading_{name}", "bool", f"Ms. Pac-Man heads {name}",
            states.player_direction == k)  # fmt: skip
    pill_xy = np.asarray(POWER_PILL_XY, dtype=np.float32)
    pill_dist = np.hypot(
        pill_xy[None, :, 0] - states.player_x[:, None],
        pill_xy[None, :, 1] - states.player_y[:, None],
    )
    for d in PILL_DISTANCES:
        add(f"power_pill_near_{d}", "bool", f"a power pill is within {d} px",
            (states.power_pills & (pill_dist <= d)).any(axis=1))  # fmt: skip


def _progress_concepts(cols: _Columns, states: MsPacmanStates) -> None:
    add = cols.add
    add("power_pills_left", "scalar", "the power pills left", states.power_pills_left)
    add("dots_left", "scalar", "the dots left", states.dots_left)
    for a, b in zip(DOT_BINS[:-1], DOT_BINS[1:], strict=True):
        add(f"dots_left_{a}_{b}", "bool", f"{a} to {b - 1} dots are left",
            (states.dots_left >= a) & (states.dots_left < b))  # fmt: skip
    add("lives", "scalar", "the lives left", states.lives)
    for k in (1, 2, 3):
        add(f"lives_{k}", "bool", f"Ms. Pac-Man has {k} {'life' if k == 1 else 'lives'}",
            states.lives == k)  # fmt: skip
    add("level_start", "bool", "no dot of the maze is eaten yet", states.dots_eaten == 0)
    add("fruit_present", "bool", "a fruit is on the board", states.fruit_present)


def store_concepts(store_dir: str | os.PathLike, *, verify: bool = True) -> ConceptValues:
    """The concepts of every row of an Atari activation store (``rlsae dqn record``), in row
    order: the RAM of every row (:func:`rlsae.agents.ram.recording_ram`: regenerated by replay
    and kept in the store, or recorded with ``dqn record --ram``; each replayed poster screen
    checked against ``obs_hash`` with ``verify``) and the actions from ``context.parquet``."""
    import pandas as pd

    ram = recording_ram(store_dir, verify=verify)
    actions = pd.read_parquet(Path(store_dir) / "context.parquet", columns=["action"])
    return compute_concepts(decode_ram_batch(ram), actions["action"].to_numpy())


# -- matching ----------------------------------------------------------------------------------


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for boolean ``labels``, ties counted half
    (the Mann-Whitney U over positives x negatives); None when a class is empty."""
    out = auroc_matrix(np.asarray(scores, dtype=np.float64)[:, None], np.asarray(labels)[:, None])
    v = out[0, 0]
    return None if np.isnan(v) else float(v)


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return np.asarray(rankdata(x, axis=0, method="average"), dtype=np.float64)


def auroc_matrix(acts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of every activation column (n, f) for every boolean label column (n, c): (f, c).

    NaN where a label column has only one class.
    """
    ranks = _ranks(acts)
    y = np.asarray(labels, dtype=np.float64) > 0.5
    pos = y.sum(axis=0)
    neg = y.shape[0] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        u = ranks.T @ y.astype(np.float64) - (pos * (pos + 1) / 2)[None, :]
        out = u / (pos * neg)[None, :]
    out[:, (pos == 0) | (neg == 0)] = np.nan
    return out


def spearman_matrix(acts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Spearman's rho of every activation column (n, f) with every value column (n, c): (f, c);
    NaN where either column is constant."""
    ra, rv = _ranks(acts), _ranks(values)
    ra -= ra.mean(axis=0)
    rv -= rv.mean(axis=0)
    na, nv = np.linalg.norm(ra, axis=0), np.linalg.norm(rv, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (ra.T @ rv) / np.outer(na, nv)
    out[(na == 0)[:, None] | (nv == 0)[None, :]] = np.nan
    return out


def best_f1(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold ``t`` maximising F1 of predicting ``labels`` by ``scores >= t``, and that
    F1 (the thresholds tried are the distinct scores)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels) > 0.5
    p = int(y.sum())
    if p == 0 or s.size == 0:
        return float("nan"), 0.0
    order = np.argsort(-s, kind="stable")
    s_sorted, tp = s[order], np.cumsum(y[order])
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # the end of each run of equal scores
    predicted = np.arange(1, s.size + 1)[last]
    f1 = 2 * tp[last] / (p + predicted)
    k = int(np.argmax(f1))
    return float(s_sorted[last][k]), float(f1[k])


@dataclass
class ConceptMatch:
    """How well one concept explains one feature's firing."""

    concept: str
    kind: str
    """``bool`` or ``scalar``."""
    score: float | None
    """AUROC of the activation for the concept (bool; for its absence when ``negated``), or
    Spearman's rho (scalar). None when undefined (a constant column)."""
    strength: float
    """``2 |AUROC - 0.5|`` or ``|rho|``: what the matches are ranked by (0-1)."""
    negated: bool = False
    """The feature fires when the (boolean) concept is false."""
    threshold: float | None = None
    """The activation at or above which predicting the concept (or its absence) has the best
    F1 (bool only)."""
    f1: float | None = None
    """That F1 (bool only)."""


@dataclass
class FeatureConcepts:
    """A live feature's best concepts, strongest first, and the one-line explanation."""

    feature: int
    explanation: str
    matches: list[ConceptMatch] = field(default_factory=list)


@dataclass
class ConceptBest:
    """The single feature that matches a concept best."""

    concept: str
    kind: str
    feature: int | None
    """None when no live feature has a defined score (e.g. the concept never varies)."""
    score: float | None = None
    """AUROC (bool; of its absence when ``negated``) or Spearman's rho (scalar)."""
    negated: bool = False
    probe_score: float | None = None
    """Held-out AUROC (bool) or Spearman (scalar) of a ridge probe on the raw layer: what the
    layer encodes linearly, to set beside the best single feature (None when not computed)."""


@dataclass
class ConceptMatches(Artifact):
    """Concept matches of one SAE's features over a set of recorded rows."""

    FORMAT: ClassVar[str] = "rlsae.concept-matches"
    VERSION: ClassVar[int] = 1

    n_rows: int
    n_features: int
    live_features: int
    """Features that fire (activation > 0) on at least one row."""
    coverage: float | None
    """Fraction of live features whose best boolean match has AUROC >= ``coverage_auroc``
    (None when no feature is live)."""
    coverage_auroc: float = 0.9
    concepts: list[str] = field(default_factory=list)
    """The concepts matched against."""
    features: list[FeatureConcepts] = field(default_factory=list)
    """One entry per live feature, by feature index."""
    best_per_concept: list[ConceptBest] = field(default_factory=list)
    """One entry per concept, in ``concepts`` order."""

    def feature(self, index: int) -> FeatureConcepts | None:
        """The matches of feature ``index`` (None when it is dead)."""
        for f in self.features:
            if f.feature == index:
                return f
        return None


def explain(match: ConceptMatch | None, concept: Concept | None) -> str:
    """The one-line explanation of a feature from its best match."""
    if match is None or concept is None or match.score is None:
        return "no concept matches"
    if match.kind == "bool":
        what = f"NOT ({concept.phrase})" if match.negated else concept.phrase
        return f"fires when {what} (AUROC {match.score:.2f})"
    if match.score >= 0:
        return f"grows with {concept.phrase} (Spearman {match.score:+.2f})"
    return f"shrinks as {concept.phrase} grows (Spearman {match.score:+.2f})"


def match_concepts(
    acts: np.ndarray,
    concepts: ConceptValues,
    *,
    top_k: int = 5,
    coverage_auroc: float = 0.9,
    chunk: int = 256,
    raw: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> ConceptMatches:
    """Match every live feature of ``acts`` (rows x features) against ``concepts`` (same rows).

    See the module doc for the scores; ``top_k`` matches are kept per feature. With ``raw``
    (the layer the SAE encodes, rows x units) each concept also gets a linear probe's
    held-out score (:func:`probe_concepts`; ``groups``, e.g. episode ids, keeps a group's rows
    on one side of the split).
    """
    a = np.asarray(acts)
    n = concepts.values.shape[0]
    if a.ndim != 2 or a.shape[0] != n:
        raise RlsaeError(f"activations of shape {a.shape} do not match {n} concept rows")
    if not np.isfinite(a).all():
        raise RlsaeError("activations contain NaN or inf; check the recording")
    if top_k < 1:
        raise RlsaeError(f"top_k must be at least 1, got {top_k}")
    kinds = np.array([c.kind == "bool" for c in concepts.concepts], dtype=bool)
    bool_idx, scalar_idx = np.flatnonzero(kinds), np.flatnonzero(~kinds)
    live = np.flatnonzero((a > 0).any(axis=0)) if n else np.zeros(0, np.int64)
    n_c = len(concepts.concepts)
    best_strength = np.full(n_c, -1.0)
    best_feature = np.full(n_c, -1, dtype=np.int64)
    best_score = np.full(n_c, np.nan)
    features: list[FeatureConcepts] = []
    covered = 0
    for start in range(0, len(live), max(1, chunk)):
        cols = live[start : start + chunk]
        x = a[:, cols].astype(np.float64)
        score = np.full((len(cols), n_c), np.nan)
        score[:, bool_idx] = auroc_matrix(x, concepts.values[:, bool_idx])
        score[:, scalar_idx] = spearman_matrix(x, concepts.values[:, scalar_idx])
        strength = np.where(kinds[None, :], 2 * np.abs(score - 0.5), np.abs(score))
        strength = np.nan_to_num(strength, nan=-1.0)
        better = strength.max(axis=0) > best_strength
        arg = strength.argmax(axis=0)
        best_strength = np.where(better, strength.max(axis=0), best_strength)
        best_feature = np.where(better, cols[arg], best_feature)
        best_score = np.where(better, score[arg, np.arange(n_c)], best_score)
        for i, f in enumerate(cols.tolist()):
            matches = _top_matches(x[:, i], score[i], strength[i], concepts, top_k)
            b = np.nanmax(np.abs(score[i, bool_idx] - 0.5), initial=-1.0) if len(bool_idx) else -1
            covered += int(b + 0.5 >= coverage_auroc)
            top = matches[0] if matches else None
            cpt = next((c for c in concepts.concepts if top and c.name == top.concept), None)
            features.append(FeatureConcepts(int(f), explain(top, cpt), matches))
    probes = [None] * n_c if raw is None else probe_concepts(raw, concepts, groups=groups)
    best = []
    for k, c in enumerate(concepts.concepts):
        if best_feature[k] < 0:
            best.append(ConceptBest(c.name, c.kind, None, probe_score=probes[k]))
            continue
        s = float(best_score[k])
        neg = c.kind == "bool" and s < 0.5
        best.append(ConceptBest(c.name, c.kind, int(best_feature[k]), 1 - s if neg else s, neg,
                                probes[k]))  # fmt: skip
    return ConceptMatches(
        n_rows=int(n),
        n_features=int(a.shape[1]),
        live_features=len(live),
        coverage=covered / len(live) if len(live) else None,
        coverage_auroc=float(coverage_auroc),
        concepts=concepts.names,
        features=features,
        best_per_concept=best,
    )


def probe_concepts(
    raw: np.ndarray,
    concepts: ConceptValues,
    *,
    groups: np.ndarray | None = None,
    holdout: float = 0.25,
    ridge: float = 1.0,
    seed: int = 0,
) -> list[float | None]:
    """Held-out score of a ridge-regression probe from ``raw`` (rows x units) to each concept:
    AUROC of its prediction (bool) or Spearman's rho (scalar); None when undefined.

    Units are standardised on the training rows; ``holdout`` of the rows (or of the
    ``groups``, when given) are held out, chosen with ``seed``. Neighbouring steps of one
    episode are alike, so pass episode ids as ``groups`` when there are several episodes.
    """
    x = np.asarray(raw, dtype=np.float64)
    n = concepts.values.shape[0]
    if x.ndim != 2 or x.shape[0] != n:
        raise RlsaeError(f"raw activations of shape {x.shape} do not match {n} concept rows")
    if not np.isfinite(x).all():
        raise RlsaeError("raw activations contain NaN or inf; check the recording")
    g = np.arange(n) if groups is None else np.asarray(groups).reshape(-1)
    if g.shape[0] != n:
        raise RlsaeError(f"{g.shape[0]} groups for {n} rows; give one per row")
    ids = np.random.default_rng(seed).permutation(np.unique(g))
    test = np.isin(g, ids[: max(1, int(round(holdout * len(ids))))])
    if test.all() or not test.any():
        return [None] * len(concepts.concepts)
    mu, sd = x[~test].mean(axis=0), x[~test].std(axis=0)
    z = (x - mu) / np.where(sd > 0, sd, 1.0)
    y = concepts.values.astype(np.float64)
    y_mu = y[~test].mean(axis=0)
    a = z[~test]
    w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ (y[~test] - y_mu))
    pred, truth = z[test] @ w + y_mu, y[test]
    out: list[float | None] = []
    for k, c in enumerate(concepts.concepts):
        col = pred[:, k : k + 1]
        v = (auroc_matrix if c.kind == "bool" else spearman_matrix)(col, truth[:, k : k + 1])[0, 0]
        out.append(None if np.isnan(v) else float(v))
    return out


def _top_matches(
    act: np.ndarray, score: np.ndarray, strength: np.ndarray, concepts: ConceptValues, k: int
) -> list[ConceptMatch]:
    out: list[ConceptMatch] = []
    # strongest first; on a tie a scalar concept first (a perfect rank correlation says more
    # than a perfect split at one threshold of it)
    is_bool = np.array([c.kind == "bool" for c in concepts.concepts])
    for j in np.lexsort((is_bool, -np.round(strength, 9)))[:k].tolist():
        if strength[j] < 0:
            break
        c = concepts.concepts[j]
        s = float(score[j])
        if c.kind == "scalar":
            out.append(ConceptMatch(c.name, c.kind, s, float(strength[j])))
            continue
        neg = s < 0.5
        y = concepts.values[:, j] > 0.5
        threshold, f1 = best_f1(act, ~y if neg else y)
        out.append(
            ConceptMatch(
                c.name, c.kind, 1 - s if neg else s, float(strength[j]), neg, threshold, f1
            )
        )
    return out


__all__ = [
    "ACTION_NAMES",
    "Concept",
    "ConceptBest",
    "ConceptMatch",
    "ConceptMatches",
    "ConceptValues",
    "FeatureConcepts",
    "auroc",
    "auroc_matrix",
    "best_f1",
    "compute_concepts",
    "explain",
    "match_concepts",
    "probe_concepts",
    "spearman_matrix",
    "store_concepts",
]
