"""Nature-mode recordings' RAM: `dqn record --ram` reads it from lockstep emulators.

A nature recording's episodes start with up to 30 no-ops that the vector env draws itself;
the lockstep emulators (``rlsae.agents.ram.LockstepRams``) play them too (the replay of a
recording without the column, the default, is checked against this RAM in
``test_ram_replay.py``). Checked here against things measured another way: the
score the RAM holds against the rewards the vector env paid, Ms. Pac-Man's position against
her sprite on the screens the vector env itself draws when the episode is replayed, and a
lockstep game without the no-ops, which must differ. Then `dqn concepts` on a nature store.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rlsae.agents.ram import (
    decode_ram_batch,
    has_recorded_ram,
    recorded_ram,
    recording_ram,
    rollout_ram,
)

PLAYER_RGB = (210, 164, 74)  # OCAtari's colour of Ms. Pac-Man
PLANTED = "action_LEFT"


@pytest.fixture(scope="module")
def nature_recording(nature_agent: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 fc1 rows of the tiny nature agent, 2 emulators, episodes cut at 120 steps."""
    from rlsae.agents.record import record_activations

    out = tmp_path_factory.mktemp("nature-acts") / "fc1"
    return record_activations(
        nature_agent, "fc1", 240, out, epsilon=0.5, seed=3, n_envs=2, max_episode_steps=120,
        progress=False, ram=True,
    )  # fmt: skip


def _player_bbox_centres(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    cx, cy = np.full(len(frames), np.nan), np.full(len(frames), np.nan)
    for t, f in enumerate(frames):
        ys, xs = np.nonzero(np.all(f[:172] == PLAYER_RGB, axis=-1))
        if len(xs) and xs.max() - xs.min() <= 12 and ys.max() - ys.min() <= 12:
            cx[t], cy[t] = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    return cx, cy


def test_a_nature_recording_stores_the_ram_of_the_game_it_played(nature_recording) -> None:
    import pandas as pd

    from rlsae.agents.replay import replay_episode
    from rlsae.agents.results import read_episodes

    assert has_recorded_ram(nature_recording)
    ram = recorded_ram(nature_recording)
    assert ram is not None and ram.shape == (240, 128) and ram.dtype == np.uint8
    assert recording_ram(nature_recording).tobytes() == ram.tobytes()  # no replay needed
    ctx = pd.read_parquet(nature_recording / "context.parquet")
    doc = read_episodes(nature_recording)
    assert doc.env.noop_max == 30
    s = decode_ram_batch(ram)
    errs, late, still = [], [], []
    no_noop_differs = 0
    for episode, rows in ctx.groupby("episode"):
        idx = rows.sort_values("step").index.to_numpy()
        # the reward of step t is the score between rows t and t + 1 (the RAM's BCD score)
        np.testing.assert_array_equal(np.diff(s.score[idx]), rows.loc[idx[:-1], "reward"])
        frames = [f for _, _, f in replay_episode(nature_recording, int(episode))]
        cx, cy = _player_bbox_centres(frames)
        steps = rows.loc[idx, "step"].to_numpy()
        px, py = s.player_x[idx], s.player_y[idx]
        err = np.maximum(np.abs(px - cx[steps]), np.abs(py - cy[steps]))
        moving = np.r_[False, (np.diff(px) != 0) | (np.diff(py) != 0)]
        errs.append(err[~np.isnan(err)])
        still.append(err[~moving & ~np.isnan(err)])
        late.append(np.maximum(np.abs(px[:-6] - cx[steps[6:]]), np.abs(py[:-6] - cy[steps[6:]])))
        # the same seed and actions without the episode's no-ops is another game
        ep = doc.episode(int(episode))
        bare = rollout_ram(ep.actions, seed=ep.seed, repeat_action_probability=0.25)
        no_noop_differs += int(not np.array_equal(bare.ram[steps], ram[idx]))
    err_all, still_all = np.concatenate(errs), np.concatenate(still)
    assert len(err_all) > 200
    # the sprite is drawn at most one step's motion behind the RAM (the frame's phase within
    # the game's update cycle depends on the odd number of no-op frames); standing still, 1 px
    assert np.mean(err_all <= 3.5) >= 0.99 and np.mean(still_all <= 1.0) >= 0.99
    assert len(still_all) > 50
    # a decoding six steps late misses: the check can fail
    assert np.nanmean(np.concatenate(late) <= 3.5) < 0.9
    assert no_noop_differs == ctx["episode"].nunique()


def _sae(path: Path, w_enc: np.ndarray) -> Path:
    """A ReLU SAE with the given encoder (d_in x d_sae), zero biases."""
    import torch

    from rlsae.sae import SAE, SAEConfig, save_sae

    model = SAE(SAEConfig(d_in=w_enc.shape[0], d_sae=w_enc.shape[1], arch="relu", hook_name="fc1"))
    with torch.no_grad():
        model.W_enc.copy_(torch.as_tensor(w_enc, dtype=torch.float32))
    return save_sae(model, path)


def test_concepts_match_on_a_nature_store(nature_agent, nature_recording, tmp_path, run_cli):
    """A copy of the nature store whose rows are (the planted concept's indicator, noise) and
    an SAE passing them through: `dqn concepts` finds the concept at AUROC 1 with no replay."""
    import pandas as pd

    from rlsae.agents.concepts import ConceptMatches, store_concepts
    from rlsae.sae import ActivationWriter

    y = store_concepts(nature_recording).column(PLANTED)
    assert 0 < y.mean() < 1
    noise = np.random.default_rng(0).random(len(y))
    ctx = pd.read_parquet(nature_recording / "context.parquet")
    with ActivationWriter(tmp_path / "acts", 2, hook="fc1", provider="atari") as w:
        w.append(np.c_[y, noise].astype(np.float32), ctx)
        w.add_file("episodes.json", (nature_recording / "episodes.json").read_bytes())
    sae = _sae(tmp_path / "sae", np.array([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0]]))
    code, out, err = run_cli(
        "dqn", "concepts", "--agent", nature_agent, "--sae", sae, "--acts", tmp_path / "acts",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["rows"] == 240 and summary["live_features"] == 2
    res = ConceptMatches.read(sae / "concepts.json")
    f0 = res.feature(0)
    assert f0 is not None and f0.matches[0].concept == PLANTED
    assert f0.matches[0].score == 1.0 and f0.matches[0].f1 == 1.0
