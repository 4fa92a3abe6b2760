"""The double-buffered play (``rollout.OVERLAP_ENVS``: two env groups, one stepping while the
policy runs on the other) against the plain path: the same rows in the same order, the
budget and the episode limit kept as the plain path keeps them, the policy called on exactly
the rows played, and (its forward batches being each group's rows, not all envs') activations
within rounding of the plain path's single forward call."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from rlsae.agents import rollout
from rlsae.agents.dqn import load_agent
from rlsae.agents.env_row import SparePool
from rlsae.agents.evaluate import evaluate_agent
from rlsae.agents.hashing import obs_hash
from rlsae.agents.ram_emulator import take_ram_process
from rlsae.agents.record import record_activations
from rlsae.agents.results import read_episodes
from rlsae.agents.rollout_overlap import concat_extra, group_sizes
from rlsae.errors import RlsaeError
from rlsae.sae.store import ActivationStore


def _plain(m: pytest.MonkeyPatch, split: bool) -> None:
    rollout.close_idle_emulators()
    for name in ("REUSE_EMULATORS", "OVERLAP_RAM", "OVERLAP_ENVS"):
        m.setattr(rollout, name, False)
    m.setattr(rollout, "SPLIT_FORWARD", split)


def _record(agent: Path, out: Path, steps: int, n_envs: int, cap: int) -> Path:
    return record_activations(
        agent, "fc1", steps, out, epsilon=0.3, seed=11, n_envs=n_envs, max_episode_steps=cap,
        progress=False, ram=True,
    )  # fmt: skip


def test_grouped_recording_is_the_plain_one_within_rounding(
    nature_agent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fast = _record(nature_agent, tmp_path / "fast", 160, 4, 30)
    with monkeypatch.context() as m:
        _plain(m, split=False)  # one forward call on all active envs
        plain = _record(nature_agent, tmp_path / "plain", 160, 4, 30)
    sa, sb = ActivationStore(fast), ActivationStore(plain)
    ca, cb = sa.context(), sb.context()
    assert ca is not None and cb is not None and len(ca) == len(cb) == 160
    # the forward batch differs (2 envs, not 4): Q may differ in the last bits, so a greedy
    # action may flip only where the best two Q-values are within rounding of each other;
    # up to such a row the games are the same
    qcols = [f"q_{a}" for a in range(9)]
    flips = np.flatnonzero(ca["greedy_action"].to_numpy() != cb["greedy_action"].to_numpy())
    rows = len(ca) if not flips.size else int(flips[0])
    if flips.size:
        q = np.sort(cb.loc[rows, qcols].to_numpy(dtype=np.float64))
        assert q[-1] - q[-2] <= 1e-5 * max(1.0, float(np.abs(q).max()))
    assert rows > 0
    for col in ("episode", "episode_seed", "step", "action", "reward", "obs_hash", "ram"):
        assert ca[col].iloc[:rows].equals(cb[col].iloc[:rows]), col
    np.testing.assert_allclose(
        ca[qcols].to_numpy()[:rows], cb[qcols].to_numpy()[:rows], rtol=1e-5, atol=1e-6
    )
    acts_a = sa.read_rows(np.arange(rows)).numpy()
    acts_b = sb.read_rows(np.arange(rows)).numpy()
    np.testing.assert_allclose(acts_a, acts_b, rtol=1e-5, atol=1e-6 * np.abs(acts_b).max())


def test_budget_cut_and_odd_groups_as_the_plain_path(
    poster_agent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # 5 envs (groups of 3 and 2), 17-step episodes restarting together, and a budget of
    # 26 * 5 + 1 rows: the last step keeps the earliest-started episode only
    assert group_sizes(5) == [3, 2]
    fast = _record(poster_agent, tmp_path / "fast", 131, 5, 17)
    with monkeypatch.context() as m:
        _plain(m, split=True)
        plain = _record(poster_agent, tmp_path / "plain", 131, 5, 17)
    sa, sb = ActivationStore(fast), ActivationStore(plain)
    assert sa.rows == sb.rows == 131
    assert np.array_equal(
        sa.read_rows(np.arange(131)).numpy(), sb.read_rows(np.arange(131)).numpy()
    )
    ca, cb = sa.context(), sb.context()
    assert ca is not None and ca.equals(cb)
    assert read_episodes(fast) == read_episodes(plain)
    last = ca.iloc[-1]
    assert int(last["episode"]) == int(ca["episode"].iloc[-6:].min())  # the earliest kept


def test_episode_limit_retires_envs_as_the_plain_path(
    nature_agent: Path, monkeypatch: pytest.MonkeyPatch
):
    def run() -> object:
        return evaluate_agent(
            nature_agent, episodes=7, epsilon=0.25, seed=5, n_envs=4, max_episode_steps=23
        )

    fast = run()
    with monkeypatch.context() as m:
        _plain(m, split=True)
        plain = run()
    assert fast == plain


def test_the_policy_sees_exactly_the_rows_played_and_a_stopped_play_leaves_whole_emulators(
    nature_agent: Path, monkeypatch: pytest.MonkeyPatch
):
    agent = load_agent(nature_agent)
    seen: list[str] = []

    def policy(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen.extend(obs_hash(o) for o in obs)
        return agent.q_values(obs).numpy(), np.arange(len(obs))[:, None]

    def play(**kw: object) -> list:
        return list(
            rollout.play(agent.env_config, policy, seed=3, epsilon=0.3, n_envs=4, **kw)  # type: ignore[arg-type]
        )

    batches = play(max_total_steps=53, max_episode_steps=10)
    played = [obs_hash(o) for b in batches for o in b.obs]
    assert sum(len(b.env_index) for b in batches) == 53 and played == seen
    for b in batches:  # rows in env order, extra concatenated in the same order
        assert np.all(np.diff(b.env_index) > 0)
        assert np.array_equal(b.extra[:, 0], np.concatenate(
            [np.arange(n) for n in np.bincount(b.env_index >= 2, minlength=2) if n]
        ))  # fmt: skip
    # a consumer that stops mid-play: the emulators (a step in flight) are kept, whole
    gen = rollout.play(agent.env_config, policy, seed=8, epsilon=0.3, n_envs=4, episodes=6)
    for _ in range(5):
        next(gen)
    gen.close()
    assert rollout._IDLE
    again = [
        (b.episode.tolist(), b.action.tolist()) for b in play(episodes=5, max_episode_steps=12)
    ]
    with monkeypatch.context() as m:
        _plain(m, split=True)
        ref = [
            (b.episode.tolist(), b.action.tolist()) for b in play(episodes=5, max_episode_steps=12)
        ]
    assert again == ref


def test_a_lost_ram_process_and_odd_extras_are_one_line_errors():
    proc = take_ram_process()
    proc.proc.kill()
    proc.proc.wait()
    with pytest.raises(RlsaeError, match="RAM emulator process ended unexpectedly"):
        proc.get(proc.ask("sync"))
    proc.close()
    with pytest.raises(TypeError, match="must pass along None or one array row"):
        concat_extra([{"a": 1}, {"a": 2}])
    assert concat_extra([None, None]) is None


@pytest.mark.parametrize(
    "n_envs,episodes,budget,cap",
    [(2, 3, None, 9), (3, 7, 40, 6), (4, None, 37, 7), (5, 4, 23, 11), (6, 9, 45, 5)],
)
def test_grouped_play_is_the_split_plain_play_batch_for_batch(
    nature_agent: Path, monkeypatch: pytest.MonkeyPatch,
    n_envs: int, episodes: int | None, budget: int | None, cap: int,
):  # fmt: skip
    # episode limits retire envs of one group while the other restarts, and budgets cut steps
    agent = load_agent(nature_agent)

    def policy(obs: np.ndarray) -> tuple[np.ndarray, None]:
        return agent.q_values(obs).numpy(), None

    def run() -> list[tuple]:
        batches = rollout.play(
            agent.env_config, policy, seed=n_envs, epsilon=0.4, n_envs=n_envs,
            episodes=episodes, max_total_steps=budget, max_episode_steps=cap, ram=True,
        )  # fmt: skip
        return [
            (b.env_index.tolist(), b.episode.tolist(), b.step.tolist(), b.action.tolist(),
             b.reward.tolist(), b.episode_end.tolist(), b.q.tobytes(), b.ram.tobytes(),  # type: ignore[union-attr]
             [obs_hash(o) for o in b.obs])
            for b in batches
        ]  # fmt: skip

    fast = run()
    with monkeypatch.context() as m:
        _plain(m, split=True)
        plain = run()
    assert fast == plain
    rows = sum(len(b[0]) for b in fast)
    if budget is not None:
        assert rows <= budget
    if episodes is not None:
        assert len({e for b in fast for e in b[1]}) <= episodes


def test_spare_emulators_start_the_episodes_a_reset_in_place_would(
    nature_agent: Path, monkeypatch: pytest.MonkeyPatch
):
    # 4 envs ending together every 8 steps: 8 rounds of restarts; after the first (in place,
    # the pool then builds its spares) most episodes start on a spare reset ahead of time
    agent = load_agent(nature_agent)
    served: list[bool] = []
    take = SparePool.take

    def counting_take(self: SparePool, episode: int) -> object:
        got = take(self, episode)
        served.append(got is not None)
        return got

    monkeypatch.setattr(SparePool, "take", counting_take)

    def policy(obs: np.ndarray) -> tuple[np.ndarray, None]:
        return agent.q_values(obs).numpy(), None

    def run() -> list[tuple]:
        batches = rollout.play(
            agent.env_config, policy, seed=2, epsilon=0.3, n_envs=4, episodes=36,
            max_episode_steps=8, ram=True,
        )  # fmt: skip
        return [
            (b.env_index.tolist(), b.episode.tolist(), b.action.tolist(), b.reward.tolist(),
             b.ram.tobytes(), [obs_hash(o) for o in b.obs])  # type: ignore[union-attr]
            for b in batches
        ]  # fmt: skip

    rollout.close_idle_emulators()
    with_spares = run()
    assert len(served) == 32 and sum(served) >= 16, served
    # every emulator is kept for the next play: the 4 playing and the 2 spares
    assert len(rollout._IDLE[rollout._env_key(agent.env_config, 1)]) == 4 + rollout.SPARE_ENVS
    served.clear()
    monkeypatch.setattr(rollout, "SPARE_ENVS", 0)
    in_place = run()
    assert not served and in_place == with_spares
    with monkeypatch.context() as m:
        _plain(m, split=True)
        assert run() == with_spares


def test_the_spare_pool_prepares_the_next_episodes_in_order_and_stops_at_the_limit():
    made: list[str] = []

    class Env:  # stands in for a one-env vector env: what reset_one calls
        noops = np.zeros(1, dtype=np.int64)

        def __init__(self) -> None:
            self.name = f"env{len(made)}"
            made.append(self.name)
            self.seeds: list[list[int]] = []

        def reset_with_seeds(self, seeds: list[int]) -> np.ndarray:
            self.seeds.append(seeds)
            return np.full((1, 1), seeds[0])

    nxt = [5]
    with ThreadPoolExecutor(2) as threads:
        pool = SparePool(
            Env,
            lambda e: None if e >= 8 else 100 + e,
            lambda: nxt[0],
            2,
            threads,  # type: ignore[arg-type]
        )
        pool.fill()  # builds its 2 emulators, resets them for episodes 5 and 6
        assert made == ["env0", "env1"] and sorted(pool.ready) == [5, 6]
        assert pool.take(4) is None
        env, obs = pool.take(5)  # type: ignore[misc]
        assert obs.tolist() == [[105]] and env.seeds == [[105]]  # type: ignore[attr-defined]
        nxt[0] = 6
        pool.give(Env())  # the finished emulator: reset for episode 7, the last one
        pool.fill()
        assert sorted(pool.ready) == [6, 7] and len(made) == 3
        nxt[0] = 8  # (6 and 7 handed out elsewhere) no episode left: nothing is prepared or
        pool.fill()  # built, and the spares passed over are kept as free emulators
        assert len(made) == 3 and not pool.ready and len(pool.free) == 2
        whole, broken = pool.envs()
        assert len(whole) == 2 and not broken and not pool.ready and pool.served == 1
