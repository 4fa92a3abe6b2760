"""`rlsae dqn concepts` end to end on a tiny recorded store, with a planted SAE latent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rlsae.agents.concepts import ConceptMatches
from rlsae.agents.ram import RAM_CACHE

PLANTED = "action_LEFT"  # no other concept equals it or its negation on the recording


def _sae(path: Path, w_enc: np.ndarray) -> Path:
    """A ReLU SAE with the given encoder (d_in x d_sae), zero biases."""
    import torch

    from rlsae.sae import SAE, SAEConfig, save_sae

    model = SAE(SAEConfig(d_in=w_enc.shape[0], d_sae=w_enc.shape[1], arch="relu", hook_name="fc1"))
    with torch.no_grad():
        model.W_enc.copy_(torch.as_tensor(w_enc, dtype=torch.float32))
    return save_sae(model, path)


@pytest.fixture(scope="module")
def planted(poster_recording: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A copy of the recording whose 2-wide rows are (the planted concept's indicator, noise),
    and an SAE whose latent 0 is column 0, latent 1 column 1 and latent 2 never fires."""
    import pandas as pd

    from rlsae.agents.concepts import store_concepts
    from rlsae.sae import ActivationWriter

    base = tmp_path_factory.mktemp("planted")
    y = store_concepts(poster_recording).column(PLANTED)
    assert 0 < y.mean() < 1
    noise = np.random.default_rng(0).random(len(y))
    ctx = pd.read_parquet(poster_recording / "context.parquet")
    with ActivationWriter(base / "acts", 2, hook="fc1", provider="atari") as w:
        w.append(np.c_[y, noise].astype(np.float32), ctx)
        w.add_file("episodes.json", (poster_recording / "episodes.json").read_bytes())
    sae = _sae(base / "sae", np.array([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0]]))
    return {"acts": base / "acts", "sae": sae, "root": base}


def test_concepts_finds_the_planted_concept_at_auroc_1(poster_agent, planted, run_cli):
    code, out, err = run_cli(
        "dqn", "concepts", "--agent", poster_agent, "--sae", planted["sae"], "--acts",
        planted["acts"], "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    path = planted["sae"] / "concepts.json"
    assert summary["out"] == str(path) and summary["rows"] == 240
    assert summary["features"] == 3 and summary["live_features"] == 2
    doc = json.loads(path.read_text())
    assert doc["format"] == "rlsae.concept-matches"
    res = ConceptMatches.read(path)
    f0 = res.feature(0)
    assert f0 is not None and f0.matches[0].concept == PLANTED
    assert f0.matches[0].score == 1.0 and f0.matches[0].f1 == 1.0 and not f0.matches[0].negated
    assert f0.explanation.startswith("fires when") and f0.explanation.endswith("(AUROC 1.00)")
    assert res.feature(2) is None  # never fires: dead, not matched
    best = {b.concept: b for b in res.best_per_concept}
    assert best[PLANTED].feature == 0 and best[PLANTED].score == 1.0
    assert best[PLANTED].probe_score is not None
    assert res.coverage is not None and res.coverage >= 0.5  # feature 0 is covered
    assert summary["top"][0] == {"feature": 0, "explanation": f0.explanation}
    assert all(c["concept"] != PLANTED for c in summary["layer_only"])  # feature 0 carries it


def test_concepts_human_output_and_a_concept_filter(poster_agent, planted, run_cli):
    out_file = planted["root"] / "some" / "where.json"
    code, out, err = run_cli(
        "dqn", "concepts", "--agent", poster_agent, "--sae", planted["sae"], "--acts",
        planted["acts"], "--out", out_file, "--concepts", PLANTED, "--concepts", "lives",
        "--show", "1",
    )  # fmt: skip
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("2 of 3 features live over 240 rows; coverage")
    assert lines[1].startswith("  feature 0: fires when") and lines[1].endswith("(AUROC 1.00)")
    assert lines[-1] == f"wrote {out_file}" and len(lines) == 3
    res = ConceptMatches.read(out_file)
    assert res.concepts == [PLANTED, "lives"]


def _edited_copy(src: Path, dst: Path, edit, *, drop_ram: bool = False) -> Path:
    """A copy of the store with ``episodes.json`` edited; ``drop_ram``: without the RAM an
    earlier replay kept in it (``ram.npy``) or a recording stored (the ``ram`` column)."""
    import pandas as pd

    shutil.copytree(src, dst)
    doc = json.loads((dst / "episodes.json").read_text())
    edit(doc)
    (dst / "episodes.json").write_text(json.dumps(doc))
    if drop_ram:
        (dst / RAM_CACHE).unlink(missing_ok=True)
        ctx = pd.read_parquet(dst / "context.parquet")
        ctx.drop(columns=["ram"], errors="ignore").to_parquet(dst / "context.parquet", index=False)
    return dst


def test_concepts_refuses_bad_input_in_one_line_before_torch(poster_agent, planted, tmp_path):
    """Another game, an SAE of another width, an unknown concept, bad numbers: exit 2, one line
    each, torch never imported, nothing written."""
    import subprocess
    import sys

    def game(d: dict) -> None:
        d["ale"]["game"] = "breakout"

    other_game = _edited_copy(planted["acts"], tmp_path / "breakout", game)
    wide = _sae(tmp_path / "wide", np.eye(3))
    base = ["dqn", "concepts", "--agent", str(poster_agent)]
    sae, acts = ["--sae", str(planted["sae"])], ["--acts", str(planted["acts"])]
    cases = [
        (base + sae + ["--acts", str(other_game)],
         "no RAM table for game 'breakout'; games with one: ms_pacman"),
        (base + ["--sae", str(wide)] + acts, "encodes width 3 but the store"),
        (base + sae + acts + ["--concepts", "ghost_sideways_7"],
         "no concept named 'ghost_sideways_7'"),
        (base + sae + acts + ["--top-k", "0"], "top_k: must be at least 1"),
        (base + sae + ["--acts", str(tmp_path)], "episodes.json not found"),
    ]  # fmt: skip
    code = (
        "import sys\n"
        "from rlsae.cli import main\n"
        f"for argv in {[argv for argv, _ in cases]!r}:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 2, (argv, e.code)\n"
        "print('torch' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
    lines = res.stderr.strip().splitlines()
    assert len(lines) == len(cases), lines
    for line, (_, message) in zip(lines, cases, strict=True):
        assert line.startswith("error: ") and message in line, line
    assert not (other_game.parent / "breakout" / "concepts.json").exists()
    assert not (wide / "concepts.json").exists()


def test_study_stage_matches_a_store_and_notes_another_game(poster_agent, planted, tmp_path):
    """The study's ``concepts`` stage on the planted store (in the study's layout) writes
    SAE_DIR/concepts.json and returns its coverage; a copy whose env says ``noop_max=30`` is
    replayed with the no-ops its log kept (0) and matches alike; a store of a game without a
    RAM table gets a note."""
    from rlsae.study import atari
    from rlsae.study.engine import Context
    from rlsae.study.results import AgentConcepts

    cfg = atari.preset_config("smoke")
    ctx = Context(atari.ATARI, cfg, tmp_path)

    def place(agent: str, edit=None) -> atari.AgentSpec:
        acts = atari.acts_dir(tmp_path, cfg, agent)
        acts.parent.mkdir(parents=True)
        if edit is None:
            shutil.copytree(planted["acts"], acts)
        else:
            _edited_copy(planted["acts"], acts, edit, drop_ram=True)
        shutil.copytree(planted["sae"], atari.sae_dir(tmp_path, cfg, agent),
                        ignore=shutil.ignore_patterns("concepts.json"))  # fmt: skip
        return atari.AgentSpec(name=agent, agent_dir=str(poster_agent))

    def nature(d: dict) -> None:
        d["env"]["noop_max"] = 30
        assert all(e["noops"] == 0 for e in d["episodes"])

    def game(d: dict) -> None:
        d["ale"]["game"] = "breakout"

    res = atari.concepts(ctx, place("poster"))
    assert isinstance(res, AgentConcepts) and res.note is None and res.rows == 240
    written = ConceptMatches.read(tmp_path / str(res.path))
    assert written.coverage == res.coverage and res.live_features == 2
    assert written.feature(0).matches[0].concept == PLANTED
    same = atari.concepts(ctx, place("nature", nature))
    assert same.note is None and same.coverage == res.coverage and same.rows == 240
    assert (atari.acts_dir(tmp_path, cfg, "nature") / RAM_CACHE).is_file()  # kept for next time
    noted = atari.concepts(ctx, place("breakout", game))
    assert noted.path is None and noted.coverage is None and "breakout" in str(noted.note)
    assert not (atari.sae_dir(tmp_path, cfg, "breakout") / "concepts.json").exists()


def test_concepts_the_layer_encodes_but_no_feature_carries() -> None:
    from rlsae.agents.concepts import ConceptBest
    from rlsae.commands.dqn import _layer_only

    res = ConceptMatches(n_rows=10, n_features=4, live_features=2, coverage=0.5, concepts=[],
        best_per_concept=[
            ConceptBest("lives_1", "bool", 3, 0.7, False, 0.99),  # probe finds it, no feature
            ConceptBest("ghost_near_24", "bool", 1, 0.95, False, 0.99),  # a feature carries it
            ConceptBest("fruit_present", "bool", None, None, False, 0.92),  # no live feature
            ConceptBest("level_start", "bool", 2, 0.6, True, 0.8),  # the probe misses it too
            ConceptBest("dots_left", "scalar", 0, 0.2, False, 0.99),  # scalars: not listed
        ],
    )  # fmt: skip
    got = _layer_only(res)
    assert [c["concept"] for c in got] == ["fruit_present", "lives_1"]  # widest gap first
    assert got[1] == {"concept": "lives_1", "probe_auroc": 0.99, "feature": 3, "auroc": 0.7,
                      "negated": False}  # fmt: skip
