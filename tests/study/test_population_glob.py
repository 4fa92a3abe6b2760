"""population.agents takes glob patterns: a folder of imported agents joins the study whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlsae.errors import RlsaeError
from rlsae.study.atari import population, preset_dict
from rlsae.study.atari_config import StudyConfig


def _config(agents: list[str]) -> StudyConfig:
    from rlsae.configs import from_mapping

    d = preset_dict("smoke")
    d["population"].update({"train_steps": 0, "agents": agents})
    return from_mapping(StudyConfig, d, "config")


def test_glob_adds_every_agent_directory_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "imported"
    for name in ["dqn10", "dqn2", "notes"]:
        (folder / name).mkdir(parents=True)
        if name != "notes":
            (folder / name / "model.zip").write_bytes(b"")
    agents = population(_config([str(folder / "*")]), tmp_path / "run")
    assert [a.name for a in agents] == ["dqn10", "dqn2"]  # "notes" is no agent: skipped
    with pytest.raises(RlsaeError, match="matches no agent directory"):
        _config([str(tmp_path / "empty*")])
