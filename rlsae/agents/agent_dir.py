"""The layout of an agent directory, readable without torch: its checkpoints and ``agent.json``.

::

    AGENT/
      model.zip              the SB3 DQN
      agent.json             AgentInfo; written last, so it marks a finished agent
      train.json             the run's DQNTrainConfig (a resume must match it)
      checkpoints/step_N/    each a loadable agent directory, published whole
      resume/                the latest replay buffer, while training is resumable
      tensorboard/
      eval.json              Evaluation, when ``dqn eval`` saved one
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

from rlsae.agents.results import AgentInfo


class Checkpoint(NamedTuple):
    """One published checkpoint of a training run: its env step and its agent directory."""

    step: int
    path: Path


def list_checkpoints(agent_dir: str | os.PathLike) -> list[Checkpoint]:
    """The checkpoints of a training run (``checkpoints/step_N`` with a model), oldest first.

    Checkpoints are published whole (written in a temporary directory, then renamed), so every
    listed one is a loadable agent directory.
    """
    found = []
    ck = Path(agent_dir) / "checkpoints"
    if ck.is_dir():
        for p in ck.iterdir():
            m = re.fullmatch(r"step_(\d+)", p.name)
            if m and (p / "model.zip").is_file():
                found.append(Checkpoint(int(m.group(1)), p))
    return sorted(found)


def read_agent_info(agent_dir: str | os.PathLike) -> AgentInfo:
    """The ``agent.json`` of an agent directory (missing, foreign, bad arch: one-line error)."""
    return AgentInfo.read(Path(agent_dir) / "agent.json")
