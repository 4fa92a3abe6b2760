"""Evaluation, activation recording and replay, checked against recomputation in the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rlsae.agents.dqn import load_agent
from rlsae.agents.evaluate import evaluate_agent
from rlsae.agents.hashing import obs_hash
from rlsae.agents.record import record_activations
from rlsae.agents.replay import (
    ReplayCheck,
    read_episodes,
    replay_clip,
    replay_episode,
    replay_frames,
    replay_observations,
    verify_replay,
)
from rlsae.agents.results import EpisodeLog, Evaluation, SpliceResult
from rlsae.errors import RlsaeError


def test_same_seed_same_numbers_and_human_normalisation(poster_agent: Path, tmp_path: Path):
    kw = dict(episodes=2, epsilon=0.1, max_episode_steps=120)
    a = evaluate_agent(poster_agent, seed=3, **kw)
    b = evaluate_agent(poster_agent, seed=3, **kw)
    assert a.returns == b.returns and a.mean_return == b.mean_return
    assert a.episodes == 2 and a.lengths == [120, 120]
    r = np.array(a.returns)
    assert a.mean_return == pytest.approx(r.mean())
    assert a.std_return == pytest.approx(r.std())
    assert (a.min_return, a.max_return) == (r.min(), r.max())
    assert a.human_normalized == pytest.approx((r.mean() - 307.3) / (6951.6 - 307.3))
    # the returns are the episodes' raw game scores: replay a recording of the same play
    rec = record_activations(poster_agent, "fc1", 240, tmp_path / "r", epsilon=0.1, seed=3,
                             n_envs=1, max_episode_steps=120, progress=False)  # fmt: skip
    assert [e.score for e in read_episodes(rec).episodes] == a.returns
    # typed artifact round trip, and a file of another kind is refused in one line
    path = a.write(tmp_path / "eval.json")
    assert Evaluation.read(path) == a
    assert json.loads(path.read_text())["format"] == "rlsae.dqn_eval"
    with pytest.raises(RlsaeError, match="is a 'rlsae.dqn_eval' file, not 'rlsae.dqn_splice'"):
        SpliceResult.read(path)


def test_recorded_store_matches_the_agent_on_replayed_observations(
    poster_agent: Path, poster_recording: Path
):
    from rlsae.sae.store import ActivationStore

    store = ActivationStore(poster_recording)
    assert (store.rows, store.d_in, store.provider, store.hook) == (240, 512, "atari", "fc1")
    assert store.extra["layer"] == "fc1" and store.extra["epsilon"] == 0.3
    ctx = store.context()
    cols = ["episode", "episode_seed", "step", "action", "reward", "obs_hash"]
    assert set(cols + [f"q_{i}" for i in range(9)]) <= set(ctx.columns)
    doc = json.loads((poster_recording / "episodes.json").read_text())
    assert doc["env"]["mode"] == "poster" and doc["env"]["repeat_action_probability"] == 0.25
    assert doc["ale"]["img_height"] == 210 and doc["ale"]["grayscale"] is False
    # 2 emulators, episodes cut at 70 steps: episodes restart mid-recording
    assert len(doc["episodes"]) >= 4
    for ep in doc["episodes"]:
        rows = ctx[ctx["episode"] == ep["episode"]].sort_values("step")
        assert rows["action"].tolist() == ep["actions"]
        assert rows["step"].tolist() == list(range(len(ep["actions"])))
        assert (rows["episode_seed"] == ep["seed"]).all()
    # recompute Q and fc1 on replayed observations of one episode: must equal the recording
    agent = load_agent(poster_agent)
    ep = doc["episodes"][1]
    idx = ctx.index[ctx["episode"] == ep["episode"]].to_numpy()
    steps = ctx.loc[idx, "step"].tolist()
    obs = np.stack(replay_observations(poster_recording, ep["episode"], steps))
    q, acts = agent.forward(obs, "fc1")
    assert torch.allclose(acts, store.read_rows(idx), atol=1e-4)
    q_rec = ctx.loc[idx, [f"q_{i}" for i in range(9)]].to_numpy()
    assert np.allclose(q.numpy(), q_rec, atol=1e-4)
    greedy = ctx.loc[idx, "greedy_action"].to_numpy()
    assert np.array_equal(q.numpy().argmax(1), greedy)


def test_replay_reproduces_every_recorded_observation(poster_recording: Path):
    assert verify_replay(poster_recording) == ReplayCheck(checked=240, mismatches=[])


def test_replay_frames_and_clips_are_rgb_screens(poster_recording: Path):
    frames = replay_frames(poster_recording, 0, [5, 0])
    assert frames[0].shape == (210, 160, 3) and frames[0].dtype == np.uint8
    obs0 = replay_observations(poster_recording, 0, [0])[0]
    assert np.array_equal(frames[1], obs0.transpose(1, 2, 0))
    steps, clip = replay_clip(poster_recording, 0, 3, before=5, after=2)
    assert steps == [0, 1, 2, 3, 4, 5] and len(clip) == 6
    assert np.array_equal(clip[5], frames[0])
    with pytest.raises(RlsaeError, match="cannot replay step 999"):
        replay_frames(poster_recording, 0, [999])
    with pytest.raises(RlsaeError, match="episode 4242 not in the recording"):
        replay_frames(poster_recording, 4242, [0])


def test_nature_recording_replays_with_rgb_screens(nature_agent: Path, tmp_path: Path):
    out = record_activations(
        nature_agent, "fc1", 60, tmp_path / "n", epsilon=0.5, seed=2, n_envs=1,
        max_episode_steps=30, progress=False,
    )  # fmt: skip
    assert verify_replay(out) == ReplayCheck(checked=60, mismatches=[])
    ctx = pd.read_parquet(out / "context.parquet")
    seen = [(t, o, f) for t, o, f in replay_episode(out, 1)]
    assert len(seen) == 31  # steps 0..30, the last is the state after the final action
    t, o, frame = seen[4]
    assert o.shape == (4, 84, 84) and frame.shape == (210, 160, 3)
    assert obs_hash(o) == ctx[(ctx.episode == 1) & (ctx.step == 4)]["obs_hash"].item()


def test_bad_recordings_are_refused_without_leaving_files(poster_agent: Path, tmp_path: Path):
    with pytest.raises(RlsaeError, match="steps: must be at least 1, got 0"):
        record_activations(poster_agent, "fc1", 0, tmp_path / "zero", progress=False)
    for bad, msg in [
        (dict(epsilon=-0.5), "epsilon: must be between 0 and 1, got -0.5"),
        (dict(n_envs=0), "n_envs: must be at least 1, got 0"),
        (dict(dtype="int8"), "dtype: expected one of float32, float16, got 'int8'"),
        (dict(max_episode_steps=0), "max_episode_steps: must be at least 1, got 0"),
        (dict(seed=-1), "seed: must be at least 0, got -1"),
    ]:
        with pytest.raises(RlsaeError, match=msg):
            record_activations(poster_agent, "fc1", 5, tmp_path / "o", progress=False, **bad)
        if "dtype" not in bad:  # evaluation checks the same fields the same way
            with pytest.raises(RlsaeError, match=msg):
                evaluate_agent(poster_agent, **bad)
    with pytest.raises(
        RlsaeError,
        match=r"unknown layer 'fc3'.*valid layers: conv3 \(960\), fc1 \(512\), fc2 \(512\)",
    ):
        record_activations(poster_agent, "fc3", 10, tmp_path / "bad", progress=False)
    with pytest.raises(RlsaeError, match="not found"):
        record_activations(tmp_path / "no_agent", "fc1", 10, tmp_path / "x", progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("steps", [3])
def test_recording_writes_exactly_the_requested_rows(
    poster_agent: Path, tmp_path: Path, steps: int
):
    from rlsae.sae.store import ActivationStore

    out = record_activations(poster_agent, "fc2", steps, tmp_path / "r", n_envs=4, progress=False)
    assert ActivationStore(out).rows == steps
    assert verify_replay(out).mismatches == []


def test_episode_log_is_a_typed_artifact(poster_recording: Path):
    log = read_episodes(poster_recording)
    raw = json.loads((poster_recording / "episodes.json").read_text())
    assert (raw["format"], raw["version"]) == ("rlsae.atari_episodes", 1)
    assert log.to_json() == raw and EpisodeLog.from_json(raw) == log
    assert log.config.layer == "fc1" and log.config.steps == 240 and log.config.n_envs == 2
    assert sum(len(e.actions) for e in log.episodes) == 240
    assert log.episode(1).actions == raw["episodes"][1]["actions"]
    with pytest.raises(RlsaeError, match=r"episode 999 not in the recording \(episodes 0\.\."):
        log.episode(999)


def test_recording_resume_keeps_the_same_and_refuses_another(
    poster_agent: Path, nature_agent: Path, poster_recording: Path
):
    kw = dict(epsilon=0.3, seed=5, n_envs=2, max_episode_steps=70, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in poster_recording.iterdir()}
    assert record_activations(poster_agent, "fc1", 240, poster_recording, resume=True, **kw)
    assert {p.name: p.stat().st_mtime_ns for p in poster_recording.iterdir()} == before
    with pytest.raises(RlsaeError, match=r"other settings: steps 240 \(now 300\)"):
        record_activations(poster_agent, "fc1", 300, poster_recording, resume=True, **kw)
    with pytest.raises(RlsaeError, match=r"other settings: layer 'fc1' \(now 'fc2'\)"):
        record_activations(poster_agent, "fc2", 240, poster_recording, resume=True, **kw)
    with pytest.raises(RlsaeError, match=r"other settings: agent_dir .*poster.* \(now .*nature"):
        record_activations(nature_agent, "fc1", 240, poster_recording, resume=True, **kw)
    with pytest.raises(RlsaeError, match="already exists"):
        record_activations(poster_agent, "fc1", 240, poster_recording, **kw)
    assert {p.name: p.stat().st_mtime_ns for p in poster_recording.iterdir()} == before
