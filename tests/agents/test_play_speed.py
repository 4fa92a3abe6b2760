"""The fast play path (reused emulators, lockstep RAM emulators stepped in a worker thread, ROM
loaded once per reset) plays exactly the games of the plain path: bit-identical recordings
(activations, context table with RAM and observation hashes, episode log) and evaluations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlsae.agents import ram_emulator, rollout
from rlsae.agents.evaluate import evaluate_agent
from rlsae.agents.record import record_activations
from rlsae.agents.results import Evaluation, read_episodes
from rlsae.errors import RlsaeError
from rlsae.sae.store import ActivationStore


def _plain(monkeypatch: pytest.MonkeyPatch) -> None:
    rollout.close_idle_emulators()
    monkeypatch.setattr(rollout, "REUSE_EMULATORS", False)
    monkeypatch.setattr(rollout, "OVERLAP_RAM", False)


def _record(agent: Path, out: Path, seed: int) -> Path:
    return record_activations(
        agent, "fc1", 130, out, epsilon=0.3, seed=seed, n_envs=3, max_episode_steps=25,
        progress=False,
    )  # fmt: skip


def _same_store(a: Path, b: Path) -> None:
    sa, sb = ActivationStore(a), ActivationStore(b)
    assert sa.rows == sb.rows == 130
    assert np.array_equal(
        sa.read_rows(np.arange(130)).numpy(), sb.read_rows(np.arange(130)).numpy()
    )
    ca, cb = sa.context(), sb.context()
    assert ca is not None and cb is not None and ca.equals(cb)
    assert "ram" in ca.columns and "obs_hash" in ca.columns
    assert read_episodes(a) == read_episodes(b)


@pytest.mark.parametrize("arch", ["poster", "nature"])
def test_fast_recording_is_bit_identical_to_the_plain_path(
    arch: str, poster_agent: Path, nature_agent: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):  # fmt: skip
    agent = poster_agent if arch == "poster" else nature_agent
    assert rollout.REUSE_EMULATORS and rollout.OVERLAP_RAM  # the default is the fast path
    # another recording first leaves its emulators idle mid-episode; the next one reuses them
    _record(agent, tmp_path / "other", seed=9)
    assert rollout._IDLE  # kept for reuse
    fast = _record(agent, tmp_path / "fast", seed=4)
    with monkeypatch.context() as m:
        _plain(m)
        plain = _record(agent, tmp_path / "plain", seed=4)
        assert not rollout._IDLE  # the plain path closes its emulators
    _same_store(fast, plain)
    # several episodes restarted on reused emulators (3 envs, 25-step episodes)
    assert len(read_episodes(fast).episodes) >= 6


def test_fast_evaluation_is_identical_to_the_plain_path(
    nature_agent: Path, monkeypatch: pytest.MonkeyPatch
):
    def run(seed: int) -> Evaluation:
        return evaluate_agent(
            nature_agent, episodes=4, epsilon=0.2, seed=seed, n_envs=2, max_episode_steps=30
        )

    run(7)  # leaves emulators to reuse
    fast = run(2)
    with monkeypatch.context() as m:
        _plain(m)
        plain = run(2)
    assert fast == plain


def test_lockstep_drift_is_still_refused_from_the_worker_thread(
    poster_agent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    real = ram_emulator.LockstepAle.step
    monkeypatch.setattr(ram_emulator.LockstepAle, "step", lambda self, a: real(self, a) + 10)
    with pytest.raises(RlsaeError, match="the lockstep emulator scored"):
        _record(poster_agent, tmp_path / "drift", seed=1)
    assert not (tmp_path / "drift").exists()
