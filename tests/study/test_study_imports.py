"""Import and survey as stages of the dead-features study (issue 13): ``population.imports``
names agent files that the study's ``import`` stage brings in, and ``evaluation.survey_episodes``
counts live features on a survey with the poster's protocol, checked on the survey's context
table and against live features counted here from the survey's activations."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rlsae.configs import from_mapping
from rlsae.errors import RlsaeError
from rlsae.study.atari_config import StudyConfig


def _poster_state_dicts(folder: Path, n: int) -> list[Path]:
    """Random-weight poster-network state dicts (the poster's names and raw-pixel scale)."""
    from rlsae.agents.importer import POSTER_SHAPES

    folder.mkdir()
    files = []
    for i in range(n):
        gen = torch.Generator().manual_seed(i)
        sd = {k: torch.randn(shape, generator=gen) * 0.02 for k, shape in POSTER_SHAPES.items()}
        sd["conv1.weight"] /= 255.0  # the poster's network takes raw 0-255 pixels
        files.append(folder / f"agent{i}.pt")
        torch.save(sd, files[-1])
    return files


def _config(dqns: Path, **evaluation: object) -> dict:
    return {
        "name": "imports",
        "population": {"arch": "poster", "train_steps": 0, "imports": [str(dqns)]},
        "recording": {"layer": "fc1", "steps": 200, "epsilon": 0.2},
        "sae": {"arch": "topk", "d_sae": 64, "k": 4, "train": {"epochs": 1, "batch_size": 64}},
        "evaluation": {
            "episodes": 1,
            "epsilon": 0.0,
            "splice_episodes": 0,
            "max_episode_steps": 120,
            **evaluation,
        },  # fmt: skip
        "fit": {"bootstrap": 10},
    }


def test_import_and_survey_settings_are_checked_in_one_line(tmp_path: Path) -> None:
    _poster_state_dicts(tmp_path / "dqns", 1)
    ok = from_mapping(StudyConfig, _config(tmp_path / "dqns", survey_episodes=3), "c")
    assert ok.population.imports and ok.evaluation.survey_episodes == 3
    bad = [
        ({"imports": [str(tmp_path / "none*.pt")]}, "population.imports: .* names no agent file"),
        ({"import_game": "pacmn"}, "population.import_game: game: 'pacmn' is not one of"),
        ({"import_arch": "nature"}, "import_arch 'nature' differs from population.arch"),
    ]
    for change, message in bad:
        cfg = _config(tmp_path / "dqns")
        cfg["population"].update(change)
        with pytest.raises(RlsaeError, match=message):
            from_mapping(StudyConfig, cfg, "c")
    for value, message in [(-1, "survey_episodes: must be"), (2, "must exceed skip_first_steps")]:
        cfg = _config(tmp_path / "dqns", survey_episodes=value, max_episode_steps=50)
        with pytest.raises(RlsaeError, match=message):
            from_mapping(StudyConfig, cfg, "c")


@pytest.mark.slow
def test_study_imports_files_and_counts_live_features_on_a_poster_survey(tmp_path: Path) -> None:
    from rlsae.agents.survey_config import POSTER_SKIP_STEPS
    from rlsae.sae import ActivationStore, load_sae
    from rlsae.study.atari import ATARI, run_study
    from rlsae.study.engine import Context
    from rlsae.study.results import LiveFeatures

    files = _poster_state_dicts(tmp_path / "dqns", 2)
    cfg = from_mapping(StudyConfig, _config(tmp_path / "dqns", survey_episodes=2), "test")
    run = tmp_path / "run"
    res = run_study(cfg, run, engine="serial")
    table = pd.read_csv(run / "analysis" / "agents.csv")
    assert table["agent"].tolist() == ["agent0", "agent1"] and res["agents"] == 2
    for f in files:
        info = json.loads((run / "agents" / "imported" / f.stem / "agent.json").read_text())
        assert info["source"]["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
        assert info["source"]["file"] == f.name
    for name in table["agent"]:
        store = ActivationStore(run / "survey" / name / "fc1")
        ctx = store.context()
        log = json.loads((store.path / "episodes.json").read_text())
        # the protocol, read off what was recorded: sticky actions off, epsilon 0.2, the first
        # 66 steps of each of the 2 episodes skipped, every other step kept
        assert log["env"]["repeat_action_probability"] == 0.0
        assert sorted(ctx["episode"].unique()) == [0, 1]
        assert ctx["step"].min() == POSTER_SKIP_STEPS
        lengths = [len(e["actions"]) for e in log["episodes"]]
        assert len(ctx) == sum(n - POSTER_SKIP_STEPS for n in lengths) == store.rows
        explored = float((ctx["action"] != ctx["greedy_action"]).mean())
        assert 0.05 < explored < 0.4  # about 0.2 x 8/9 over 108 rows
        # live features counted here from the survey's activations with the agent's SAE
        sae = load_sae(run / "saes" / name / "fc1" / "topk-64-k4")
        with torch.no_grad():
            acts = store.read_rows(np.arange(store.rows)).float()
            fires = (sae.encode(acts) > 0).any(0)
        marker = Context(ATARI, cfg, run).result(LiveFeatures, "live", name)
        assert marker.source_of_counts.startswith("survey") and marker.rows == store.rows
        assert int(table.loc[table["agent"] == name, "live"].iloc[0]) == int(fires.sum())
    for _, row in table.iterrows():  # the score's bootstrap interval, in the table and report
        assert row["return_ci_low"] <= row["mean_return"] <= row["return_ci_high"]
    assert "95% CI (bootstrap over episodes)" in (run / "analysis" / "report.html").read_text()
    again = run_study(cfg, run, engine="serial", resume=True)
    assert again["stages_run"] == 0
