"""The poster's live-feature survey, checked on what the store recorded (not on the config):
no row before step 66 of its episode, sticky actions off in the replayable episode log (every
surveyed row replays to the same screen), epsilon visible as off-greedy actions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rlsae.agents.results import read_episodes
from rlsae.agents.survey import SurveyConfig, survey_activations
from rlsae.errors import RlsaeError


def test_survey_protocol_on_the_context_table(poster_agent: Path, tmp_path: Path):
    from rlsae.agents.replay import verify_replay
    from rlsae.sae.store import ActivationStore

    cfg = SurveyConfig(episodes=4, max_episode_steps=120, n_envs=2, seed=3)
    store = survey_activations(poster_agent, tmp_path / "survey", cfg)
    ctx = pd.read_parquet(store / "context.parquet")
    assert ActivationStore(store).rows == len(ctx) == 4 * (120 - 66)
    assert ctx["step"].min() == 66 and ctx["step"].max() == 119
    assert sorted(ctx["episode"].unique()) == [0, 1, 2, 3]
    off_greedy = float((ctx["action"] != ctx["greedy_action"]).mean())
    assert 0.08 <= off_greedy <= 0.28  # epsilon 0.2 x 8/9 random actions differ from greedy
    log = read_episodes(store)
    assert log.env.repeat_action_probability == 0.0 == log.ale["repeat_action_probability"]
    assert all(len(e.actions) == 120 for e in log.episodes)  # the skipped steps are replayable
    check = verify_replay(store)
    assert check.checked == len(ctx) and not check.mismatches


def test_survey_settings_refused_before_work(poster_agent: Path, tmp_path: Path):
    with pytest.raises(RlsaeError, match="must exceed skip_first_steps"):
        survey_activations(poster_agent, tmp_path / "s", SurveyConfig(max_episode_steps=66))
    with pytest.raises(RlsaeError, match="survey: epsilon"):
        survey_activations(poster_agent, tmp_path / "s", SurveyConfig(epsilon=1.5))
    assert not (tmp_path / "s").exists()


def test_survey_cli(poster_agent: Path, run_cli, tmp_path: Path):
    import json

    code, out, _ = run_cli(
        "dqn", "survey", "--agent", poster_agent, "--out", tmp_path / "s", "--episodes", "1",
        "--max-episode-steps", "70", "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["rows"] == 4
    code, out, err = run_cli(
        "dqn", "survey", "--agent", poster_agent, "--out", tmp_path / "t", "--skip-first-steps",
        "-1",
    )  # fmt: skip
    assert code == 2 and "dqn survey: skip_first_steps: must be at least 0" in err
    assert not (tmp_path / "t").exists()
