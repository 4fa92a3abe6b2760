"""Fixtures for the agents tests: tiny real DQN agents (real emulator, real SB3), small budgets."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = dict(
    buffer_size=400,
    learning_starts=100,
    batch_size=4,
    train_freq=40,
    target_update_interval=50,
    exploration_fraction=0.5,
)


@pytest.fixture(scope="session")
def poster_agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A poster-architecture agent trained for 200 steps, checkpoints at 100 and 200."""
    from rlsae.agents.dqn import train_dqn

    out = tmp_path_factory.mktemp("agents") / "poster"
    return train_dqn("poster", 200, out, seed=0, checkpoint_every=100, progress=False, **TINY)


@pytest.fixture(scope="session")
def nature_agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A nature-architecture agent trained for 200 steps."""
    from rlsae.agents.dqn import train_dqn

    out = tmp_path_factory.mktemp("agents") / "nature"
    return train_dqn("nature", 200, out, seed=0, progress=False, **TINY)


@pytest.fixture(scope="session")
def poster_recording(poster_agent: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 recorded fc1 rows from 2 emulators, episodes cut at 70 steps (so several restart)."""
    from rlsae.agents.record import record_activations

    out = tmp_path_factory.mktemp("acts") / "fc1"
    return record_activations(
        poster_agent, "fc1", 240, out, epsilon=0.3, seed=5, n_envs=2, max_episode_steps=70,
        progress=False,
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs torch on one thread (the shared ``one_thread`` fixture)."""
    yield
