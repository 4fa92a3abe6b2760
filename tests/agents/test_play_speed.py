"""The fast play path (reused emulators, the two env groups double-buffered, the lockstep RAM
emulators in their own process) plays exactly the games of the plain path: bit-identical
recordings (activations, context table with RAM and observation hashes, episode log) and
evaluations, against the plain path making the same forward calls (``rollout.SPLIT_FORWARD``:
the policy on each group's rows, as the fast path calls it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlsae.agents import rollout
from rlsae.agents.evaluate import evaluate_agent
from rlsae.agents.record import record_activations
from rlsae.agents.results import Evaluation, read_episodes
from rlsae.agents.rollout_overlap import RamDriver
from rlsae.errors import RlsaeError
from rlsae.sae.store import ActivationStore


def _plain(monkeypatch: pytest.MonkeyPatch, split: bool = True) -> None:
    """The plain path: new emulators per play, one vector env, lockstep emulators inline; with
    ``split`` the policy is called on each group's rows (the fast path's forward batches)."""
    rollout.close_idle_emulators()
    monkeypatch.setattr(rollout, "REUSE_EMULATORS", False)
    monkeypatch.setattr(rollout, "OVERLAP_RAM", False)
    monkeypatch.setattr(rollout, "OVERLAP_ENVS", False)
    monkeypatch.setattr(rollout, "SPLIT_FORWARD", split)


def _record(agent: Path, out: Path, seed: int, steps: int = 130, n_envs: int = 3) -> Path:
    return record_activations(
        agent, "fc1", steps, out, epsilon=0.3, seed=seed, n_envs=n_envs, max_episode_steps=25,
        progress=False, ram=True,
    )  # fmt: skip


def _same_store(a: Path, b: Path, rows: int = 130) -> None:
    sa, sb = ActivationStore(a), ActivationStore(b)
    assert sa.rows == sb.rows == rows
    assert np.array_equal(
        sa.read_rows(np.arange(rows)).numpy(), sb.read_rows(np.arange(rows)).numpy()
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
    assert rollout.REUSE_EMULATORS and rollout.OVERLAP_RAM and rollout.OVERLAP_ENVS  # default
    assert not rollout.SPLIT_FORWARD
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


def test_lockstep_drift_is_still_refused_from_the_ram_process(
    poster_agent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    real = RamDriver.step
    monkeypatch.setattr(
        RamDriver, "step", lambda self, e, a, r: real(self, e, a, np.asarray(r) + 10)
    )
    with pytest.raises(RlsaeError, match="the lockstep emulator scored"):
        _record(poster_agent, tmp_path / "drift", seed=1)
    assert not (tmp_path / "drift").exists()
