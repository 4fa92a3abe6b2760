"""Concepts on hand-built states, one test per concept family; the match scores against
brute-force references; planted features found with AUROC 1, random ones near chance."""

from __future__ import annotations

import re
from itertools import product
from typing import Any

import numpy as np
import pytest
from scipy.stats import spearmanr

import rlsae.agents.concepts as concepts_module
from rlsae.agents.concepts import (
    ConceptMatches,
    auroc,
    auroc_matrix,
    best_f1,
    compute_concepts,
    match_concepts,
    spearman_matrix,
    store_concepts,
)
from rlsae.agents.ram import MsPacmanStates, decode_ram_batch
from rlsae.errors import RlsaeError

FAR = (155.0, 165.0)  # a corner far (> 48 px) from the default player position


def states(rows: list[dict[str, Any]]) -> MsPacmanStates:
    """Hand-built states: each row a dict overriding the defaults (player at (80, 90) heading
    up, four threatening ghosts far away, 4 power pills, 100 dots left, 3 lives)."""
    n = len(rows)

    def col(key: str, default: object, dtype: type) -> np.ndarray:
        return np.array([r.get(key, default) for r in rows], dtype=dtype)

    ghosts = [r.get("ghosts", []) + [FAR] * (4 - len(r.get("ghosts", []))) for r in rows]
    flags = {k: [r.get(k, []) + [False] * (4 - len(r.get(k, []))) for r in rows]
             for k in ("edible", "eyes")}  # fmt: skip
    return MsPacmanStates(
        player_x=col("x", 80.0, np.float32),
        player_y=col("y", 90.0, np.float32),
        player_direction=col("direction", 0, np.int8),
        ghost_x=np.array([[g[0] for g in gs] for gs in ghosts], np.float32).reshape(n, 4),
        ghost_y=np.array([[g[1] for g in gs] for gs in ghosts], np.float32).reshape(n, 4),
        ghost_edible=np.array(flags["edible"], bool).reshape(n, 4),
        ghost_eyes=np.array(flags["eyes"], bool).reshape(n, 4),
        ghosts_count=np.full(n, 3, np.int16),
        power_pills=np.array([r.get("pills", [True] * 4) for r in rows], bool).reshape(n, 4),
        dots_left=col("dots_left", 100, np.int16),
        dots_eaten=col("dots_eaten", 50, np.int16),
        lives=col("lives", 3, np.int8),
        fruit_present=col("fruit", False, bool),
        fruit_x=np.zeros(n, np.float32),
        fruit_y=np.zeros(n, np.float32),
        level=col("level", 0, np.int8),
        score=np.zeros(n, np.int64),
    )


def true_names(
    rows: list[dict[str, Any]], prefix: str, actions: list[int] | None = None
) -> list[set]:
    cv = compute_concepts(states(rows), actions)
    return [
        {c.name for c, v in zip(cv.concepts, cv.values[i], strict=True) if c.name.startswith(prefix)
         and c.kind == "bool" and v > 0.5}
        for i in range(len(rows))
    ]  # fmt: skip


def test_ghost_in_each_direction_within_each_distance() -> None:
    rows: list[dict[str, Any]] = [
        {"ghosts": [(70.0, 90.0)]},  # 10 px left
        {"ghosts": [(60.0, 93.0)]},  # ~20 px left, slightly down
        {"ghosts": [(80.0, 80.0)]},  # 10 px up (screen y grows downwards)
        {"ghosts": [(85.0, 120.0)]},  # 30 px down
        {"ghosts": [(120.0, 90.0)]},  # 40 px right
        {"ghosts": [(72.0, 82.0)]},  # diagonal tie: counted as left
        {},  # nobody near
    ]
    got = true_names(rows, "ghost_")
    assert got[0] == {"ghost_left_12", "ghost_left_24", "ghost_left_48",
                      "ghost_near_12", "ghost_near_24", "ghost_near_48"}  # fmt: skip
    assert got[1] == {"ghost_left_24", "ghost_left_48", "ghost_near_24", "ghost_near_48"}
    assert got[2] == {"ghost_up_12", "ghost_up_24", "ghost_up_48",
                      "ghost_near_12", "ghost_near_24", "ghost_near_48"}  # fmt: skip
    assert got[3] == {"ghost_down_48", "ghost_near_48"}
    assert got[4] == {"ghost_right_48", "ghost_near_48"}
    assert "ghost_left_12" in got[5] and not any("up" in n for n in got[5])
    assert got[6] == set()


def test_edible_and_eyes_ghosts_are_not_threats() -> None:
    rows: list[dict[str, Any]] = [
        {"ghosts": [(70.0, 90.0)], "edible": [True]},
        {"ghosts": [(70.0, 90.0)], "eyes": [True]},
        {"ghosts": [(40.0, 90.0), (70.0, 90.0)], "edible": [True, False]},
    ]
    got = true_names(rows, "")
    assert {"edible_ghost_near_24", "edible_ghost_near_48", "any_ghost_edible"} <= got[0]
    assert not any(n.startswith("ghost_left") or n.startswith("ghost_near") for n in got[0])
    assert "ghost_eyes" in got[1] and not any(n.startswith("ghost_near") for n in got[1])
    assert "edible_ghost_near_48" in got[2] and "edible_ghost_near_24" not in got[2]
    assert "ghost_left_12" in got[2]


def test_nearest_ghost_distances() -> None:
    rows: list[dict[str, Any]] = [
        {"ghosts": [(83.0, 94.0), (85.0, 102.0)], "edible": [True, False]},  # 5 and 13 px
        {"ghosts": [(83.0, 94.0)] * 4, "edible": [True] * 4},  # no threat at all
    ]
    cv = compute_concepts(states(rows))
    assert cv.column("nearest_ghost_distance")[0] == pytest.approx(13.0)
    assert cv.column("nearest_edible_ghost_distance")[0] == pytest.approx(5.0)
    assert cv.column("nearest_ghost_distance")[1] == 250.0
    far = np.hypot(FAR[0] - 80.0, FAR[1] - 90.0)
    assert compute_concepts(states([{}])).column("nearest_ghost_distance")[0] == pytest.approx(far)
    assert compute_concepts(states([{}])).column("nearest_edible_ghost_distance")[0] == 250.0


def test_maze_regions_and_side_edge() -> None:
    rows: list[dict[str, Any]] = [
        {"x": 10.0, "y": 10.0}, {"x": 150.0, "y": 165.0}, {"x": 80.0, "y": 86.0},
        {"x": 9.5, "y": 120.0}, {"x": 149.5, "y": 30.0}, {"x": 60.0, "y": 120.0},
    ]  # fmt: skip
    regions = true_names(rows, "region_")
    assert regions == [{"region_0_0"}, {"region_2_2"}, {"region_1_1"},
                       {"region_2_0"}, {"region_0_2"}, {"region_2_1"}]  # fmt: skip
    edge = compute_concepts(states(rows)).column("at_side_edge")
    assert edge.tolist() == [1, 1, 0, 1, 1, 0]


def test_in_tunnel_per_maze() -> None:
    """The exits of MAZE_TUNNELS, within 12 px of a side: maze 0 opens at rows 50-61, 74-85
    and 98-109; maze 1 at 62-73 and 158-169."""
    rows: list[dict[str, Any]] = [
        {"x": 5.0, "y": 103.5}, {"x": 155.0, "y": 55.5}, {"x": 80.0, "y": 103.5},
        {"x": 5.0, "y": 67.5}, {"x": 5.0, "y": 67.5, "level": 1},
        {"x": 150.0, "y": 163.5, "level": 1}, {"x": 5.0, "y": 103.5, "level": 1},
        {"x": 12.5, "y": 103.5}, {"x": 147.5, "y": 79.5, "level": 3},
    ]  # fmt: skip
    tunnel = compute_concepts(states(rows)).column("in_tunnel")
    assert tunnel.tolist() == [1, 1, 0, 0, 1, 1, 0, 0, 0]


def test_heading_power_pills_dots_lives_level_fruit() -> None:
    rows: list[dict[str, Any]] = [
        {"direction": 3, "x": 150.0, "y": 139.5, "dots_left": 0, "lives": 1, "dots_eaten": 0},
        {"direction": 1, "x": 150.0, "y": 139.5, "pills": [False, True, True, True],
         "dots_left": 59, "lives": 2, "fruit": True},
        {"direction": 2, "x": 10.0, "y": 40.0, "dots_left": 60},
        {"dots_left": 242},
    ]  # fmt: skip
    cv = compute_concepts(states(rows))
    assert true_names(rows, "heading_") == [{"heading_left"}, {"heading_right"},
                                             {"heading_down"}, {"heading_up"}]  # fmt: skip
    # 10 px above the bottom-right pill; 21.5 px below the top-left one
    assert cv.column("power_pill_near_16").tolist() == [1, 0, 0, 0]
    assert cv.column("power_pill_near_32").tolist() == [1, 0, 1, 0]
    assert cv.column("power_pills_left").tolist() == [4, 3, 4, 4]
    assert true_names(rows, "dots_left_") == [
        {"dots_left_0_60"}, {"dots_left_0_60"}, {"dots_left_60_120"}, {"dots_left_180_1000"},
    ]  # fmt: skip
    assert cv.column("dots_left").tolist() == [0, 59, 60, 242]
    assert cv.column("lives").tolist() == [1, 2, 3, 3]
    assert true_names(rows, "lives_") == [{"lives_1"}, {"lives_2"}, {"lives_3"}, {"lives_3"}]
    assert cv.column("level_start").tolist() == [1, 0, 0, 0]
    assert cv.column("fruit_present").tolist() == [0, 1, 0, 0]
    assert cv.column("player_x").tolist() == [150, 150, 10, 80]


def test_actions_and_bad_input() -> None:
    rows: list[dict[str, Any]] = [{}, {}, {}]
    assert true_names(rows, "action_", [0, 3, 8]) == [
        {"action_NOOP"}, {"action_LEFT"}, {"action_DOWNLEFT"}]  # fmt: skip
    assert not any(n.startswith("action_") for n in compute_concepts(states(rows)).names)
    with pytest.raises(RlsaeError, match="one per row"):
        compute_concepts(states(rows), [0, 1])
    with pytest.raises(RlsaeError, match="0..8"):
        compute_concepts(states(rows), [0, 1, 9])
    cv = compute_concepts(states(rows))
    with pytest.raises(RlsaeError) as e:
        cv.select(["ghost_left_12", "ghost_sideways_3"])
    assert "ghost_sideways_3" in str(e.value) and "\n" not in str(e.value)
    assert cv.select(["lives", "ghost_left_12"]).names == ["lives", "ghost_left_12"]


def test_every_concept_is_in_the_documented_table() -> None:
    doc = concepts_module.__doc__ or ""
    patterns = re.findall(r"``([a-z_{}]+)``", doc)
    regexes = [re.compile("^" + re.sub(r"\{[a-z]+\}", r"[A-Za-z0-9]+", p) + "$") for p in patterns]
    names = compute_concepts(states([{}]), [0]).names
    missing = [n for n in names if not any(r.match(n) for r in regexes)]
    assert not missing and len(names) > 50


# -- the scores against references computed another way -----------------------------------


def brute_auroc(s: np.ndarray, y: np.ndarray) -> float:
    pos, neg = s[y], s[~y]
    wins = sum((p > q) + 0.5 * (p == q) for p, q in product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_handles_ties_like_the_pairwise_count() -> None:
    rng = np.random.default_rng(0)
    s = rng.integers(0, 4, size=(80, 3)).astype(float)  # many ties
    s[:, 2] = 0.0  # a dead feature: every pair tied
    y = rng.random((80, 2)) < 0.3
    m = auroc_matrix(s, y)
    for i, j in product(range(3), range(2)):
        assert m[i, j] == pytest.approx(brute_auroc(s[:, i], y[:, j]), abs=1e-12)
    assert m[2, 0] == 0.5
    assert auroc(np.arange(5.0), np.array([0, 0, 0, 1, 1])) == 1.0
    assert auroc(np.arange(5.0), np.zeros(5)) is None


def test_spearman_equals_scipy_and_best_f1_equals_a_scan() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, size=(60, 2)).astype(float)
    v = np.c_[rng.normal(size=60), rng.integers(0, 3, size=60), np.ones(60)]
    m = spearman_matrix(a, v)
    for i, j in product(range(2), range(2)):
        assert m[i, j] == pytest.approx(spearmanr(a[:, i], v[:, j]).statistic, abs=1e-12)
    assert np.isnan(m[:, 2]).all()  # a constant column has no correlation
    y = rng.random(60) < 0.4
    t, f1 = best_f1(a[:, 0], y)
    scan = {}
    for th in np.unique(a[:, 0]):
        pred = a[:, 0] >= th
        tp = (pred & y).sum()
        scan[th] = 2 * tp / (pred.sum() + y.sum())
    assert f1 == pytest.approx(max(scan.values())) and scan[t] == pytest.approx(f1)


# -- matching ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_states() -> MsPacmanStates:
    rng = np.random.default_rng(2)
    ram = rng.integers(0, 256, size=(3000, 128), dtype=np.uint8)
    ram[:, 10] = rng.integers(40, 130, size=3000)  # the player on the screen
    ram[:, 16] = rng.integers(40, 130, size=3000)
    ram[:, 6:10] = ram[:, 10:11] + rng.integers(-40, 41, size=(3000, 4))  # ghosts around her
    ram[:, 12:16] = ram[:, 16:17] + rng.integers(-40, 41, size=(3000, 4))
    return decode_ram_batch(ram)


def test_planted_features_are_found_and_random_ones_are_not(random_states, tmp_path) -> None:
    rng = np.random.default_rng(3)
    actions = rng.integers(0, 9, size=len(random_states))
    cv = compute_concepts(random_states, actions)
    left = cv.column("ghost_left_24")
    assert 0.05 < left.mean() < 0.5
    acts = np.zeros((len(random_states), 5), np.float32)
    acts[:, 0] = 2.5 * left  # fires exactly when a ghost is within 24 px to the left
    acts[:, 1] = np.where(rng.random(len(acts)) < 0.2, rng.random(len(acts)), 0)  # random
    # acts[:, 2] stays dead
    acts[:, 3] = np.sqrt(cv.column("nearest_ghost_distance"))  # a monotone scalar
    acts[:, 4] = 1.0 - cv.column("action_UP")  # fires unless the agent goes UP
    res = match_concepts(acts, cv, top_k=3)
    assert res.live_features == 4 and res.feature(2) is None and res.n_features == 5
    f0 = res.feature(0)
    assert f0 is not None and f0.matches[0].concept == "ghost_left_24"
    assert f0.matches[0].score == 1.0 and f0.matches[0].f1 == 1.0
    assert f0.matches[0].threshold == 2.5 and not f0.matches[0].negated
    assert f0.explanation == "fires when a ghost is within 24 px to the left (AUROC 1.00)"
    f1 = res.feature(1)
    assert f1 is not None
    bool_scores = [m.score for m in f1.matches if m.kind == "bool"]
    assert bool_scores and all(s is not None and 0.5 <= s < 0.56 for s in bool_scores)
    f3 = res.feature(3)
    assert f3 is not None and f3.matches[0].concept == "nearest_ghost_distance"
    assert f3.matches[0].score == pytest.approx(1.0)
    assert f3.explanation.startswith("grows with the distance to the nearest ghost")
    # its thresholds are perfect splits too (negated: it is large when no ghost is near)
    assert all(m.negated and m.score == 1.0 for m in f3.matches[1:])
    f4 = res.feature(4)
    assert f4 is not None and f4.matches[0].concept == "action_UP" and f4.matches[0].negated
    assert f4.matches[0].score == 1.0 and f4.explanation.startswith("fires when NOT (")
    assert res.coverage == pytest.approx(3 / 4)  # all but the random feature
    best = {b.concept: b for b in res.best_per_concept}
    assert best["ghost_left_24"].feature == 0 and best["ghost_left_24"].score == 1.0
    assert best["action_UP"].feature == 4 and best["action_UP"].negated
    assert best["nearest_ghost_distance"].feature == 3
    # the same answer in chunks of one feature, and through a file
    assert match_concepts(acts, cv, top_k=3, chunk=1) == res
    back = ConceptMatches.read(res.write(tmp_path / "m.json"))
    assert back == res


def test_matching_refuses_bad_input_in_one_line(random_states) -> None:
    cv = compute_concepts(random_states)
    with pytest.raises(RlsaeError, match="do not match"):
        match_concepts(np.zeros((10, 3)), cv)
    bad = np.zeros((len(random_states), 2))
    bad[0, 0] = np.nan
    with pytest.raises(RlsaeError, match="NaN"):
        match_concepts(bad, cv)
    dead = match_concepts(np.zeros((len(random_states), 2)), cv)
    assert dead.live_features == 0 and dead.coverage is None and dead.features == []
    assert all(b.feature is None for b in dead.best_per_concept)


def test_concepts_of_a_real_recording_and_its_raw_layer(poster_recording, tmp_path) -> None:
    """End to end on a store written by `dqn record`: concepts from the replayed RAM and the
    recorded actions, matched against the recorded fc1 units plus one planted unit."""
    import pandas as pd

    from rlsae.sae.store import ActivationStore

    cv = store_concepts(poster_recording)
    ctx = pd.read_parquet(poster_recording / "context.parquet")
    assert cv.values.shape[0] == len(ctx) == 240
    for k, name in enumerate(concepts_module.ACTION_NAMES):
        np.testing.assert_array_equal(cv.column(f"action_{name}"), ctx["action"] == k)
    assert cv.column("lives").max() == 3 and cv.column("dots_left").max() <= 242
    raw = ActivationStore(poster_recording).read_rows(np.arange(240)).numpy()
    planted = (ctx["action"].to_numpy() == 3).astype(np.float32)  # LEFT
    acts = np.c_[raw, planted]
    res = match_concepts(acts, cv, raw=raw, groups=ctx["episode"].to_numpy())
    assert any(b.probe_score is not None for b in res.best_per_concept)
    top = res.feature(acts.shape[1] - 1)
    assert top is not None and top.matches[0].concept == "action_LEFT"
    assert top.explanation == "fires when the agent chooses LEFT (AUROC 1.00)"
    assert res.live_features >= 2 and res.coverage is not None
    assert ConceptMatches.read(res.write(tmp_path / "m.json")) == res


def test_a_linear_probe_finds_what_no_single_unit_carries() -> None:
    rng = np.random.default_rng(5)
    raw = rng.normal(size=(2000, 20))
    values = np.c_[
        raw[:, 3] + raw[:, 5] > 0,  # linear in two units, in neither alone
        rng.random(2000) < 0.3,  # unrelated
        raw @ rng.normal(size=20) + 0.1 * rng.normal(size=2000),  # a linear scalar
    ].astype(np.float32)
    cv = concepts_module.ConceptValues(
        (concepts_module.Concept("two_units", "bool", "units 3 and 5 sum above 0"),
         concepts_module.Concept("noise", "bool", "a coin comes up"),
         concepts_module.Concept("mix", "scalar", "a mix of units")),
        values,
    )  # fmt: skip
    groups = np.arange(2000) // 100  # 20 "episodes": 5 held out whole
    probe = concepts_module.probe_concepts(raw, cv, groups=groups)
    assert probe[0] is not None and probe[0] > 0.97
    assert probe[1] is not None and 0.4 < probe[1] < 0.6
    assert probe[2] is not None and probe[2] > 0.97
    res = match_concepts(np.maximum(raw, 0), cv, raw=raw, groups=groups)
    best = {b.concept: b for b in res.best_per_concept}
    assert best["two_units"].feature in (3, 5) and best["two_units"].score is not None
    assert best["two_units"].score < 0.85 < 0.97 < (best["two_units"].probe_score or 0)
    with pytest.raises(RlsaeError, match="one per row"):
        concepts_module.probe_concepts(raw, cv, groups=groups[:10])
    with pytest.raises(RlsaeError, match="do not match"):
        concepts_module.probe_concepts(raw[:10], cv)
    assert match_concepts(np.maximum(raw, 0), cv).best_per_concept[0].probe_score is None
