"""Any ALE game (issue 13): ``--game`` for train/eval/record, the game stored in agent.json and
used by eval/record/replay/effects, both observation pipelines on another game, and the effect
layout (joystick grid, or one labelled row for other action sets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rlsae.agents.config import EnvConfig, ale_games, env_id_of
from rlsae.agents.envs import AleVecEnv, action_meanings, rgb_frame
from rlsae.errors import RlsaeError

TINY = dict(buffer_size=300, learning_starts=60, batch_size=4, train_freq=20)


def test_game_is_validated_against_ale_py_roms_in_one_line():
    import ale_py.roms

    assert set(ale_games()) == set(ale_py.roms.get_all_rom_ids())  # read without ale-py
    EnvConfig(game="breakout").validate()
    with pytest.raises(RlsaeError, match=r"^x: game: 'pacmn' is not one of ale-py's 108 ROMs; "
                       r"did you mean pacman, ms_pacman\?$"):  # fmt: skip
        EnvConfig(game="pacmn").validate("x")
    assert env_id_of("ms_pacman") == "ALE/MsPacman-v5" == EnvConfig().env_id
    assert env_id_of("space_invaders") == "ALE/SpaceInvaders-v5"


def test_train_with_an_unknown_game_is_refused_before_anything_is_written(run_cli, tmp_path):
    code, _, err = run_cli("dqn", "train", "--arch", "nature", "--steps", "10", "--out",
                           tmp_path / "a", "--game", "pacmn")  # fmt: skip
    assert code == 2 and "game: 'pacmn' is not one of ale-py's" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    code, _, err = run_cli("dqn", "train", "--arch", "poster", "--steps", "8", "--out",
                           tmp_path / "p", "--game", "pong", "--learning-starts", "100",
                           "--set", "buffer_size=50")  # fmt: skip
    assert code == 0, err
    info = json.loads((tmp_path / "p" / "agent.json").read_text())
    assert (info["env"]["game"], info["env_id"], info["env"]["mode"]) == (
        "pong",
        "ALE/Pong-v5",
        "poster",
    )


def test_poster_frames_of_another_game_equal_gymnasium_v5():
    """The poster pipeline on Pong: RGB frames and rewards equal gymnasium's ALE/Pong-v5 (no
    sticky actions: deterministic), with Pong's 6 actions as the action space."""
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    cfg = EnvConfig(mode="poster", game="pong", repeat_action_probability=0.0)
    env = AleVecEnv(cfg, 1, seed=3, autoreset=False)
    ref = gym.make("ALE/Pong-v5", repeat_action_probability=0.0, frameskip=4)
    assert env.action_space.n == ref.action_space.n == 6
    obs = env.reset()
    ref_obs, _ = ref.reset(seed=3)
    assert np.array_equal(rgb_frame(obs[0]), ref_obs)
    rng = np.random.default_rng(0)
    for _ in range(60):
        a = int(rng.integers(0, 6))
        obs, _, _, info = env.step(np.array([a]))
        ref_obs, ref_rew, *_ = ref.step(a)
        assert np.array_equal(rgb_frame(obs[0]), ref_obs)
        assert info[0]["raw_reward"] == ref_rew
    env.close()
    ref.close()


def test_nature_frames_of_another_game_equal_gymnasium_atari_preprocessing():
    """The nature pipeline on Breakout against gymnasium's own AtariPreprocessing (frame skip 4,
    max over the last two frames, 84x84 gray) + FrameStackObservation(4) on ALE/Breakout-v5 (no
    sticky actions, no no-ops, no FIRE at reset: deterministic): the same raw rewards and life
    losses, and the same stacks once the stack is full (gymnasium pads the first ones with
    black frames), until the game ends."""
    import ale_py
    import gymnasium as gym
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    gym.register_envs(ale_py)
    assert EnvConfig(mode="nature").fire_reset is True  # rl-zoo3's AtariWrapper presses FIRE
    assert EnvConfig(mode="poster").fire_reset is False
    cfg = EnvConfig(
        mode="nature", game="breakout", repeat_action_probability=0.0, noop_max=0,
        fire_reset=False,
    )  # fmt: skip
    env = AleVecEnv(cfg, 1, seed=0, autoreset=False)
    raw = gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0)
    ref = FrameStackObservation(AtariPreprocessing(raw, noop_max=0, frame_skip=4), 4)
    assert env.action_space.n == ref.action_space.n == 4
    env.reset()
    ref.reset(seed=0)
    rng = np.random.default_rng(1)  # a random game that scores 2 points in 187 steps
    scored, lives, steps = 0.0, 5, 0
    for t in range(2000):
        a = int(rng.integers(0, 4))
        obs, _, _, info = env.step(np.array([a]))
        ref_obs, ref_rew, term, trunc, ref_info = ref.step(a)
        assert info[0]["raw_reward"] == ref_rew
        assert info[0]["life_lost"] == (ref_info["lives"] < lives and not term)
        lives, scored, steps = ref_info["lives"], scored + ref_rew, t
        if t >= 3:
            assert np.array_equal(obs[0], ref_obs)
        if term or trunc:
            break
    assert term and scored > 0 and steps > 100  # a whole game, with points, was compared
    env.close()
    ref.close()


@pytest.fixture(scope="module")
def breakout_agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A nature agent of Breakout trained for 150 steps (real emulator, real SB3)."""
    from rlsae.agents.dqn import train_dqn

    out = tmp_path_factory.mktemp("games") / "breakout"
    return train_dqn("nature", 150, out, game="breakout", progress=False, **TINY)


def test_breakout_agent_trains_evals_records_and_replays(breakout_agent: Path, run_cli, tmp_path):
    """A nature agent of Breakout end to end: agent.json names the game; eval and record play
    Breakout (4 actions: q_0..q_3, actions < 4); the recorded steps replay in the emulator with
    the recorded observation hashes; a --game that is not the agent's is refused."""
    info = json.loads((breakout_agent / "agent.json").read_text())
    assert info["env"]["game"] == "breakout" and info["env_id"] == "ALE/Breakout-v5"
    code, out, err = run_cli("dqn", "eval", "--agent", breakout_agent, "--episodes", "2",
                             "--epsilon", "0.5", "--max-episode-steps", "80", "--json",
                             "--no-save", "--game", "breakout")  # fmt: skip
    assert code == 0, err
    ev = json.loads(out)
    assert ev["lengths"] == [80, 80]
    # Breakout's DQN-Zoo constants: random 1.7, human 30.5
    assert ev["human_normalized"] == pytest.approx((ev["mean_return"] - 1.7) / (30.5 - 1.7))
    store = tmp_path / "st"
    code, out, err = run_cli("dqn", "record", "--agent", breakout_agent, "--layer", "fc1",
                             "--steps", "90", "--out", store, "--epsilon", "0.5", "--n-envs", "2",
                             "--max-episode-steps", "40", "--json")  # fmt: skip
    assert code == 0, err
    from rlsae.agents.replay import replay_observations
    from rlsae.agents.results import read_episodes
    from rlsae.sae.store import ActivationStore

    ctx = ActivationStore(store).context()
    assert [c for c in ctx.columns if c.startswith("q_")] == ["q_0", "q_1", "q_2", "q_3"]
    assert int(ctx["action"].max()) <= 3 and ctx["action"].nunique() > 1
    log = read_episodes(store)
    assert log.env.game == "breakout" and log.ale["game"] == "breakout"
    code, out, err = run_cli("dqn", "replay", "--acts", store, "--episode", "1", "--step", "30",
                             "--verify", "--json")  # fmt: skip
    assert code == 0, err
    # the replayed stacked observation gives the recorded Q-values (same game, same frames)
    from rlsae.agents.dqn import load_agent

    obs = replay_observations(store, 1, [30])[0]
    row = ctx[(ctx["episode"] == 1) & (ctx["step"] == 30)].iloc[0]
    q = load_agent(breakout_agent).q_values(obs)[0].numpy()
    assert np.allclose(q, [row[f"q_{a}"] for a in range(4)], rtol=1e-5, atol=1e-6)
    code, _, err = run_cli("dqn", "record", "--agent", breakout_agent, "--layer", "fc1",
                           "--steps", "5", "--out", tmp_path / "x", "--game", "ms_pacman")  # fmt: skip
    assert code == 2 and "plays breakout (agent.json), not ms_pacman" in err
    assert not (tmp_path / "x").exists()


def test_effects_of_a_non_joystick_game_are_one_row_in_action_order(breakout_agent: Path):
    """Breakout (NOOP, FIRE, RIGHT, LEFT): the effect 'grid' is one row of the 4 action values,
    equal to W_q @ d_j computed by hand; Ms. Pac-Man keeps its 3x3 grid."""
    from rlsae.agents.dqn import load_agent
    from rlsae.agents.effects import action_layout, direct_effect_grid, to_grid
    from rlsae.sae.model import SAE, SAEConfig

    assert action_meanings("breakout") == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    assert action_layout("breakout") is None and action_layout("pong") is None
    agent = load_agent(breakout_agent)
    sae = SAE(SAEConfig(d_in=512, d_sae=16, k=4, hook_name="fc1"), seed=0)
    grid = direct_effect_grid(agent, sae, "fc1", 3)
    hand = agent.head.weight.detach().double() @ sae.W_dec[3].detach().double()
    assert grid.shape == (1, 4) and np.allclose(grid[0], hand.numpy(), rtol=1e-5, atol=1e-7)
    assert to_grid(np.arange(9)).tolist() == [[6, 1, 5], [3, 0, 2], [8, 4, 7]]


def test_an_18_action_joystick_gets_the_button_grid_beside_the_plain_one():
    """Alien's 18 actions: the left 3x3 is the joystick without the button (NOOP centre), the
    right 3x3 the same directions with FIRE (FIRE centre), each placed by its ale-py name."""
    from rlsae.agents.effects import to_grid

    names = action_meanings("alien")
    grid = to_grid(np.arange(18), "alien")
    labels = [[names[a] for a in row] for row in grid.tolist()]
    assert labels == [
        ["UPLEFT", "UP", "UPRIGHT", "UPLEFTFIRE", "UPFIRE", "UPRIGHTFIRE"],
        ["LEFT", "NOOP", "RIGHT", "LEFTFIRE", "FIRE", "RIGHTFIRE"],
        ["DOWNLEFT", "DOWN", "DOWNRIGHT", "DOWNLEFTFIRE", "DOWNFIRE", "DOWNRIGHTFIRE"],
    ]
    with pytest.raises(RlsaeError, match="expected 18 action values"):
        to_grid(np.arange(9), "alien")


def test_splice_of_a_breakout_agent_runs_on_its_four_actions(breakout_agent: Path):
    """splice_metrics plays the agent's own game: an SAE that reconstructs fc1 exactly (a
    ReLU SAE with W_enc = I, W_dec = I, no biases) gives 100% greedy agreement, Q FVU 0 and the
    original returns."""
    from rlsae.agents.splice import splice_metrics
    from rlsae.sae.model import SAE, SAEConfig

    sae = SAE(SAEConfig(d_in=512, d_sae=512, arch="relu", hook_name="fc1"), seed=0)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.eye(512) if p.dim() == 2 else torch.zeros_like(p))
    res = splice_metrics(breakout_agent, sae, episodes=2, epsilon=0.3, max_episode_steps=60)
    assert res.action_agreement == 1.0 == res.action_agreement_spliced
    assert res.q_fvu is not None and res.q_fvu < 1e-10
    assert res.returns_sae == res.returns_original


def _viewer_helper(name: str) -> Any:
    """A helper module of tests/viewer, loaded by path as its conftest does."""
    import importlib.util
    import sys

    path = Path(__file__).parents[1] / "viewer" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"rlsae_games_tests_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_viewer_draws_breakouts_effects_as_labelled_bars(breakout_agent: Path, tmp_path: Path):
    """A Breakout store in the viewer: each top state's effect is one row of 4 values (equal to
    feature_effect on the replayed observation), the page names Breakout's actions, and the
    browser draws one labelled bar chart per state (no 3x3 grid), without errors."""
    from rlsae.agents.dqn import load_agent
    from rlsae.agents.effects import feature_effect
    from rlsae.agents.record import record_activations
    from rlsae.agents.replay import replay_observations
    from rlsae.commands.viewer import viewer_sources
    from rlsae.sae import load_sae
    from rlsae.sae.train import TrainConfig, train_sae
    from rlsae.viewer.export import export_site

    run = tmp_path / "run"
    (run / "agents").mkdir(parents=True)
    (run / "agents" / "a0").symlink_to(breakout_agent)
    store = record_activations(
        breakout_agent, "fc1", 240, run / "acts" / "a0" / "fc1", epsilon=1.0, seed=0, n_envs=2,
        max_episode_steps=60, progress=False,
    )  # fmt: skip
    cfg = TrainConfig(arch="topk", d_sae=32, k=4, steps=20, batch_size=64, seed=0)
    train_sae(store, run / "saes" / "a0" / "fc1" / "topk_32", cfg, progress=False)
    site = export_site(run, tmp_path / "site" / "viewer", top=3, sources=viewer_sources())
    browser = _viewer_helper("viewer_browser")

    def data(path: Path) -> Any:  # RLSAE.put("key", {...});
        text = path.read_text()
        return json.loads(text[text.index(",") + 1 : text.rstrip().rindex(")")])

    summary = data(site.parent / "data" / "saes" / "s0" / "summary.js")
    f = next(i for i, d in enumerate(summary["density"]) if d > 0)
    page = data(site.parent / "data" / "saes" / "s0" / "features" / f"{f}.js")
    index = data(site.parent / "data" / "index.js")
    entries = [e for e in index["saes"] if e["id"] == "s0"]
    assert entries[0]["actions"] == ["NOOP", "FIRE", "RIGHT", "LEFT"]  # the store's game's
    agent, sae = load_agent(breakout_agent), load_sae(run / "saes" / "a0" / "fc1" / "topk_32")
    for t in page["top"]:
        obs = replay_observations(store, t["episode"], [t["step"]])[0]
        want = feature_effect(agent, sae, "fc1", f, obs)
        assert np.array(t["grid"]).shape == (1, 4)
        assert np.allclose(t["grid"][0], want, rtol=1e-3, atol=1e-6)
    with browser.browser_page() as w:
        w.page.goto(site.resolve().as_uri() + f"#sae=s0&f={f}")
        w.page.wait_for_selector("figure.state")
        n = w.page.locator("figure.state").count()
        assert w.page.locator("table.effect-bars").count() == n >= 1
        assert w.page.locator("table.effect-grid").count() == 0
        labels = w.page.locator("table.effect-bars").first.locator("tr td:first-child")
        assert labels.all_text_contents() == ["NOOP", "FIRE", "RIGHT", "LEFT"]
        assert w.errors == []
