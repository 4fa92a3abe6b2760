"""The three built-in dead-features studies: ``smoke`` (CI), ``demo`` (a laptop), ``paper``
(the poster's scale, for GPUs or a cluster).

Each is a plain dict in the study-config format (see :mod:`rlsae.study.atari`); write one out
with ``rlsae pipeline atari --preset demo --print-config`` and edit it to make your own.
"""

from __future__ import annotations

import copy
from typing import Any

from rlsae.errors import RlsaeError

SMOKE: dict[str, Any] = {
    "name": "smoke",
    "population": {
        # four checkpoints along one tiny run (the fit needs at least four agents); the agents
        # barely differ: this preset checks the plumbing, not the science
        "arch": "poster",
        "train_steps": 200,
        "seeds": [0],
        "checkpoint_every": 50,
        "n_envs": 1,
        "hyperparameters": {
            "learning_starts": 50,
            "buffer_size": 500,
            "batch_size": 32,
            "train_freq": 8,
            "target_update_interval": 100,
            "save_replay_buffer": False,
        },
    },
    "recording": {"layer": "fc1", "steps": 128, "epsilon": 0.2},
    "sae": {"arch": "topk", "d_sae": 128, "k": 8, "train": {"epochs": 4, "batch_size": 32}},
    "evaluation": {
        "episodes": 1,
        "epsilon": 0.05,
        "live_threshold": 1,
        "splice_episodes": 1,
        "max_episode_steps": 100,
    },
    "fit": {"bootstrap": 200},
}

DEMO: dict[str, Any] = {
    "name": "demo",
    "population": {
        # eight checkpoints along one DQN run, from barely trained to the end of the run; sized
        # so that the whole study fits in about 15 minutes on a 2-core CPU machine
        "arch": "poster",
        "train_steps": 12_000,
        "seeds": [0],
        "checkpoint_every": 1_500,
        "hyperparameters": {
            "learning_starts": 500,
            "buffer_size": 10_000,
            "batch_size": 32,
            "train_freq": 4,
            "target_update_interval": 500,
            "exploration_initial_eps": 1.0,
            "exploration_final_eps": 0.05,
            "exploration_fraction": 0.25,
            "save_replay_buffer": False,
        },
    },
    "recording": {"layer": "fc1", "steps": 4_000, "epsilon": 0.2},
    "sae": {
        "arch": "topk",
        "d_sae": 2048,
        "k": 50,
        "train": {"epochs": 8, "batch_size": 256, "log_every": 5},
    },
    "evaluation": {"episodes": 4, "epsilon": 0.05, "live_threshold": 1, "splice_episodes": 1},
    "fit": {"bootstrap": 2000},
}

PAPER: dict[str, Any] = {
    "name": "paper",
    "population": {
        # 24 agents: 8 seeds x a 3-point learning-rate grid, each trained 2 M steps
        "arch": "poster",
        "train_steps": 2_000_000,
        "seeds": [0, 1, 2, 3, 4, 5, 6, 7],
        "grid": {"learning_rate": [0.0001, 0.00025, 0.0005]},
    },
    "recording": {"layer": "fc1", "steps": 1_500_000, "epsilon": 0.2},
    "sae": {"arch": "topk", "d_sae": 2048, "k": 50, "train": {"epochs": 3}},
    "evaluation": {"episodes": 30, "epsilon": 0.05, "live_threshold": 1, "splice_episodes": 10},
    # DQN training and SAE training run on CPU threads in this version: ask Ray for CPUs only
    "resources": {"cpus": 4, "gpus": 0},
    "fit": {"bootstrap": 5000},
}

PRESETS: dict[str, dict[str, Any]] = {"smoke": SMOKE, "demo": DEMO, "paper": PAPER}


def preset_dict(name: str) -> dict[str, Any]:
    """A copy of a preset's config dict."""
    if name not in PRESETS:
        raise RlsaeError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def preset_config(name: str) -> Any:
    """A preset as a validated :class:`rlsae.study.atari.StudyConfig`."""
    from rlsae.study.atari import StudyConfig

    return StudyConfig.from_dict(preset_dict(name), where=f"preset {name}")
