"""Environments: the C++ vector env behind SB3's VecEnv against gymnasium's ALE/MsPacman-v5."""

from __future__ import annotations

import numpy as np
import pytest

from rlsae.agents.envs import AleVecEnv, EnvConfig, action_meanings, make_vec_env, rgb_frame
from rlsae.errors import RlsaeError


def test_poster_observations_equal_gymnasium_ale_v5_frames_and_rewards():
    """Without sticky actions the emulator is deterministic: our RGB frames and rewards must
    equal gymnasium's ALE/MsPacman-v5 (frameskip 4) step for step."""
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    cfg = EnvConfig(mode="poster", repeat_action_probability=0.0)
    env = AleVecEnv(cfg, 1, seed=1, autoreset=False)
    ref = gym.make("ALE/MsPacman-v5", repeat_action_probability=0.0, frameskip=4)
    obs = env.reset()
    ref_obs, _ = ref.reset(seed=1)
    assert obs.shape == (1, 3, 210, 160) and obs.dtype == np.uint8
    assert np.array_equal(rgb_frame(obs[0]), ref_obs)
    rng = np.random.default_rng(0)
    total = 0.0
    for _ in range(150):
        a = int(rng.integers(0, 9))
        obs, rew, _, info = env.step(np.array([a]))
        ref_obs, ref_rew, *_ = ref.step(a)
        assert np.array_equal(rgb_frame(obs[0]), ref_obs)
        assert info[0]["raw_reward"] == ref_rew
        assert rew[0] == pytest.approx(ref_rew / 100.0)  # the poster's reward scaling
        total += ref_rew
    assert total > 0  # the check covered steps that scored
    env.close()


def test_nature_mode_stacks_four_84x84_gray_frames():
    env = make_vec_env("nature", 2, seed=0)
    obs = env.reset()
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    nxt, rew, _, _ = env.step(np.array([2, 3]))
    # the stack shifts by one frame per step
    assert np.array_equal(nxt[:, :3], obs[:, 1:])
    assert set(np.unique(rew)).issubset({-1.0, 0.0, 1.0})
    env.close()


def test_episode_statistics_count_the_raw_score_of_whole_games():
    """Nature mode ends training episodes at each life loss, but info['episode'] reports the
    whole game's raw score, as SB3's Monitor under AtariWrapper does."""
    env = make_vec_env(EnvConfig(mode="nature"), 1, seed=3)
    env.reset()
    rng = np.random.default_rng(1)
    raw_sum, life_ends, game = 0.0, 0, None
    for _ in range(5000):
        _, _, done, info = env.step(rng.integers(0, 9, 1))
        raw_sum += info[0]["raw_reward"]
        if done[0] and "episode" not in info[0]:
            life_ends += 1
            assert "terminal_observation" in info[0]
        if "episode" in info[0]:
            game = info[0]["episode"]
            break
    assert game is not None
    assert game["r"] == pytest.approx(raw_sum)
    assert life_ends == 2  # Ms. Pac-Man starts with 3 lives
    env.close()


def test_action_set_is_the_nine_joystick_directions():
    assert action_meanings() == [
        "NOOP", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT",
    ]  # fmt: skip


def test_bad_env_settings_raise_one_line_errors():
    with pytest.raises(RlsaeError, match="unknown observation mode"):
        EnvConfig(mode="pixels")
    with pytest.raises(RlsaeError, match="n_envs"):
        make_vec_env("poster", 0)
    with pytest.raises(
        RlsaeError, match="^env: reward_transform: expected one of sign, scale, none"
    ):
        make_vec_env(EnvConfig(reward_transform="log"), 1)
    with pytest.raises(
        RlsaeError, match="^env: repeat_action_probability: must be between 0 and 1"
    ):
        make_vec_env(EnvConfig(repeat_action_probability=1.5), 1)
