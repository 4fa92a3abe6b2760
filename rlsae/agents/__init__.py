"""Ms. Pac-Man DQN agents: environments, networks, training, evaluation, recording, replay,
feature effects and SAE splicing. Names load lazily (importing the package is cheap)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Agent": "rlsae.agents.dqn",
    "Checkpoint": "rlsae.agents.agent_dir",
    "DQNConfig": "rlsae.agents.config",
    "DQNTrainConfig": "rlsae.agents.config",
    "EvalConfig": "rlsae.agents.config",
    "RecordConfig": "rlsae.agents.config",
    "SpliceConfig": "rlsae.agents.config",
    "AgentInfo": "rlsae.agents.results",
    "EpisodeLog": "rlsae.agents.results",
    "Evaluation": "rlsae.agents.results",
    "SpliceResult": "rlsae.agents.results",
    "train_dqn": "rlsae.agents.dqn",
    "load_agent": "rlsae.agents.dqn",
    "list_checkpoints": "rlsae.agents.agent_dir",
    "read_agent_info": "rlsae.agents.agent_dir",
    "EnvConfig": "rlsae.agents.config",
    "make_vec_env": "rlsae.agents.envs",
    "make_reference_env": "rlsae.agents.envs",
    "evaluate_agent": "rlsae.agents.evaluate",
    "record_activations": "rlsae.agents.record",
    "replay_frames": "rlsae.agents.replay",
    "replay_observations": "rlsae.agents.replay",
    "action_effect_grid": "rlsae.agents.effects",
    "direct_effect": "rlsae.agents.effects",
    "splice_metrics": "rlsae.agents.splice",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rlsae.agents' has no attribute {name!r}")
