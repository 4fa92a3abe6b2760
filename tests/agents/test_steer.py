"""Steering and ablating SAE features in play: known answers, bad input, the command, and the
ablation sweep (each row equals steer with ablate; live features; ranking)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rlsae.agents.dqn import load_agent
from rlsae.agents.results import AblationSweep, SteerResult
from rlsae.agents.rollout import play
from rlsae.agents.steer import action_shift, steer_features
from rlsae.agents.sweep import ablation_sweep
from rlsae.errors import RlsaeError
from rlsae.sae import SAE, SAEConfig, save_sae

KW = dict(episodes=2, seed=1, max_episode_steps=30)


def _sae(layer: str, d_in: int = 512, d_sae: int = 32, k: int = 8) -> SAE:
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, k=k, hook_name=layer), seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(0.05)  # features fire on the small activations of a tiny agent
    return sae


def _reading_agent(nature_agent: Path):
    """A head that reads fc1 through random weights (the tiny agent's own greedy action hardly
    varies), so steering the reconstruction changes what the agent does."""
    agent = load_agent(nature_agent)
    w = torch.randn(agent.head.weight.shape, generator=torch.Generator().manual_seed(0)) * 50
    with torch.no_grad():
        agent.head.weight.copy_(w)
        agent.head.bias.zero_()
    return agent


def test_relative_scale_one_is_the_spliced_agent_exactly(nature_agent: Path):
    agent = _reading_agent(nature_agent)
    res = steer_features(agent, _sae("fc1"), [0, 3], 1.0, relative=True, **KW)
    assert res.returns_steered == res.returns_spliced
    assert [e.actions for e in res.episodes_steered] == [e.actions for e in res.episodes_spliced]
    assert res.changed_states == 0 and res.greedy_changed == 0.0
    assert res.action_tv == 0.0 and res.action_kl == 0.0
    assert res.delta_return == 0.0 and res.delta_return_ci == [0.0, 0.0]
    assert res.states == sum(len(e.actions) for e in res.episodes_spliced) == 60
    # typed artifact: the --json object reads back as the same result
    assert SteerResult.from_json(json.loads(json.dumps(res.to_json()))) == res


def test_ablating_every_feature_is_the_layer_set_to_the_decoder_bias(nature_agent: Path):
    agent = _reading_agent(nature_agent)
    sae = _sae("fc1")
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(512, generator=torch.Generator().manual_seed(2)).abs())
    res = steer_features(agent, sae, list(range(32)), ablate=True, **KW)

    def bias_policy(obs):
        h = sae.b_dec.detach().expand(len(obs), 512)
        return agent.forward_from("fc1", h).numpy(), None

    actions: dict[int, list[int]] = {}
    rewards: dict[int, float] = {}
    for b in play(agent.env_config, bias_policy, seed=1, episodes=2, max_episode_steps=30):
        for i, e in enumerate(b.episode.tolist()):
            actions.setdefault(e, []).append(int(b.action[i]))
            rewards[e] = rewards.get(e, 0.0) + float(b.reward[i])
    assert [e.actions for e in res.episodes_steered] == [actions[0], actions[1]]
    assert res.returns_steered == [rewards[0], rewards[1]]
    assert res.values == [0.0] * 32 and res.scale is None


def _hand_built(nature_agent: Path):
    """fc1 unit ``u`` alone decides: feature 0 = relu(h_u - t) is decoded onto unit u, the head
    gives RIGHT (2) the value h'_u and UP (1) zero, every other action -1. Feature 0 active:
    RIGHT; inactive: a tie, and argmax takes the first, UP. Feature 1 never fires."""
    agent = load_agent(nature_agent)
    acts = []

    def pol(obs):
        q, a = agent.forward(obs, "fc1")
        acts.append(a)
        return q.numpy(), None

    list(play(agent.env_config, pol, seed=1, episodes=2, max_episode_steps=30))
    h = torch.cat(acts)
    u = int(h.var(0).argmax())
    t = float(h[:, u].median())
    sae = SAE(SAEConfig(d_in=512, d_sae=2, arch="relu", hook_name="fc1"), seed=0)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[u, 0] = 1.0
        sae.b_enc.copy_(torch.tensor([-t, -1.0]))
        sae.W_dec.zero_()
        sae.W_dec[0, u] = 1.0
        sae.b_dec.zero_()
        agent.head.weight.zero_()
        agent.head.weight[2, u] = 1.0
        agent.head.bias.fill_(-1.0)
        agent.head.bias[1] = 0.0
        agent.head.bias[2] = 0.0
    return agent, sae


def test_ablating_the_deciding_feature_flips_the_action_exactly_where_it_fired(nature_agent):
    agent, sae = _hand_built(nature_agent)
    res = steer_features(agent, sae, [0], ablate=True, **KW)
    assert 0 < res.states_firing < res.states
    assert res.changed_states == res.states_firing == res.changed_states_firing
    assert res.greedy_changed_firing == 1.0
    # the steered agent only ever presses UP
    assert {a for e in res.episodes_steered for a in e.actions} == {1}
    tv, _ = action_shift(np.array([1, 2]), np.array([1, 1]), 9)
    assert tv == 0.5 and res.action_tv_firing == 1.0


def test_action_shift_and_bootstrap_by_hand():
    from rlsae.agents.steer import bootstrap_ci

    tv, kl = action_shift(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0]), 9)
    assert tv == pytest.approx(0.5)
    pa = (np.array([2, 2, 0, 0, 0, 0, 0, 0, 0]) + 0.5) / 8.5
    pb = (np.array([4, 0, 0, 0, 0, 0, 0, 0, 0]) + 0.5) / 8.5
    assert kl == pytest.approx(float((pa * np.log(pa / pb)).sum()))
    # Breakout's four actions: the half counts spread over four, not nine
    tv4, kl4 = action_shift(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0]), 4)
    qa, qb = (np.array([2, 2, 0, 0]) + 0.5) / 6.0, (np.array([4, 0, 0, 0]) + 0.5) / 6.0
    assert tv4 == pytest.approx(0.5) and kl4 == pytest.approx(float((qa * np.log(qa / qb)).sum()))
    lo, hi = bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0]), 2000, 0)
    assert 1.0 <= lo < 2.5 < hi <= 4.0


def test_steer_refuses_bad_input_in_one_line(
    nature_agent: Path, poster_agent: Path, poster_recording: Path, tmp_path: Path
):
    agent = load_agent(nature_agent)
    with pytest.raises(RlsaeError, match="out of range: the SAE has 32 features"):
        steer_features(agent, _sae("fc1"), [32], ablate=True, **KW)
    with pytest.raises(RlsaeError, match="trained on layer 'conv3', not 'fc1'"):
        steer_features(agent, _sae("conv3"), [0], ablate=True, layer="fc1", **KW)
    with pytest.raises(RlsaeError, match="3136 wide"):
        steer_features(agent, _sae("conv3"), [0], ablate=True, **KW)
    with pytest.raises(RlsaeError, match="either a scale or ablate"):
        steer_features(agent, _sae("fc1"), [0], 2.0, ablate=True, **KW)
    with pytest.raises(RlsaeError, match="needs --acts"):
        steer_features(agent, _sae("fc1"), [0], 2.0, **KW)
    # a store recorded from a poster agent (same layer name, same width) does not fit a nature one
    with pytest.raises(RlsaeError, match="recorded from a poster agent; this agent is nature"):
        steer_features(agent, _sae("fc1"), [0], 2.0, acts=poster_recording, **KW)
    dead = _sae("fc1")
    with torch.no_grad():
        dead.b_enc[5] = -1e6
    with pytest.raises(RlsaeError, match=r"feature 5 is dead: it never fired over the 240 rows"):
        steer_features(load_agent(poster_agent), dead, [5], 2.0, acts=poster_recording, **KW)


def test_steer_scales_to_a_multiple_of_the_store_maximum(poster_agent: Path, poster_recording):
    from rlsae.agents.steer import feature_range

    sae = _sae("fc1")
    rng = feature_range(sae, poster_recording)
    assert rng is not None
    j = int(np.argmax(rng.firing_counts))
    res = steer_features(poster_agent, sae, [j], 3.0, acts=poster_recording, episodes=1,
                         max_episode_steps=10)  # fmt: skip
    assert res.feature_max == [pytest.approx(float(rng.max_activation[j]))]
    assert res.values == [pytest.approx(3.0 * float(rng.max_activation[j]))]
    assert res.states == 10 and len(res.episodes_steered[0].actions) == 10


def test_dqn_steer_command(nature_agent: Path, tmp_path: Path, run_cli):
    sae_dir = tmp_path / "sae"
    save_sae(_sae("fc1"), sae_dir)
    code, out, err = run_cli(
        "dqn", "steer", "--agent", nature_agent, "--sae", sae_dir, "--feature", "1,2",
        "--ablate", "--episodes", "1", "--max-episode-steps", "12", "--json",
    )  # fmt: skip
    assert code == 0, err
    res = SteerResult.from_json(json.loads(out))
    assert res.features == [1, 2] and res.states == 12 and res.scale is None
    code, out, err = run_cli(
        "dqn", "steer", "--agent", nature_agent, "--sae", sae_dir, "--feature", "1,x", "--ablate"
    )
    assert code == 2 and "--feature: expected feature indices" in err and out == ""
    code, _, err = run_cli(
        "dqn", "steer", "--agent", nature_agent, "--sae", sae_dir, "--feature", "1", "--scale",
        "nan",
    )  # fmt: skip
    assert code == 2 and "scale" in err and len(err.strip().splitlines()) == 1


def _sae_dir(tmp_path: Path, d_sae: int = 8) -> tuple[SAE, Path]:
    sae = SAE(SAEConfig(d_in=512, d_sae=d_sae, k=4, hook_name="fc1"), seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
        sae.b_enc[d_sae - 1] = -1e6  # dead
    return sae, save_sae(sae, tmp_path / "sae")


def test_each_row_is_steer_with_ablate_and_rows_are_ranked(nature_agent: Path, tmp_path: Path):
    agent = _reading_agent(nature_agent)
    _, sdir = _sae_dir(tmp_path)
    kw = dict(episodes=2, seed=1, max_episode_steps=20)
    sw = ablation_sweep(agent, sdir, features=[0, 1, 2], **kw)
    assert sorted(r.feature for r in sw.rows) == [0, 1, 2]
    deltas = [abs(r.delta_return) for r in sw.rows]
    assert deltas == sorted(deltas, reverse=True)
    for row in sw.rows:
        one = steer_features(agent, sdir, [row.feature], ablate=True, **kw)
        assert row.returns == one.returns_steered
        assert sw.returns_spliced == one.returns_spliced
        assert row.delta_return == one.delta_return
        assert row.delta_return_ci == one.delta_return_ci
        assert row.states_firing == one.states_firing
        assert row.greedy_changed == pytest.approx(one.greedy_changed, abs=1 / sw.states)
        assert row.action_tv == pytest.approx(one.action_tv, abs=1 / sw.states)
    assert sw.states == 40 and sw.features_per_minute > 0
    assert AblationSweep.from_json(json.loads(json.dumps(sw.to_json()))) == sw


def test_the_sweep_takes_the_live_features_of_the_store(
    poster_agent: Path, poster_recording: Path, tmp_path: Path
):
    _, sdir = _sae_dir(tmp_path)
    sw = ablation_sweep(poster_agent, sdir, poster_recording, episodes=1, max_episode_steps=4)
    got = sorted(r.feature for r in sw.rows)
    assert 7 not in got and got and set(got) <= set(range(7))


def test_an_sae_of_another_agent_arch_or_layer_is_refused_without_the_store(
    nature_agent: Path, poster_agent: Path, tmp_path: Path
):
    """The SAE's training.json records the store's agent arch and layer, so steering (and the
    sweep) refuse an SAE of a nature agent's fc1 on a poster agent's fc1 (same name, same
    width), and one of another layer, with no --acts; the store may be gone."""
    import shutil

    from rlsae.agents.record import record_activations
    from rlsae.sae.config import TrainConfig
    from rlsae.sae.train import TrainingRecord, train_sae

    store = record_activations(
        nature_agent, "fc1", 64, tmp_path / "acts", seed=3, max_episode_steps=40, progress=False
    )
    sdir = tmp_path / "sae"
    train_sae(store, sdir, TrainConfig(d_sae=16, k=4, steps=3, batch_size=32), progress=False)
    rec = TrainingRecord.read(sdir / "training.json")
    assert rec.origin == {"provider": "atari", "arch": "nature", "layer": "fc1"}
    shutil.rmtree(store)  # the check needs only the SAE folder
    kw = dict(episodes=1, max_episode_steps=5)
    with pytest.raises(RlsaeError, match="activations of a nature agent; this agent is poster"):
        steer_features(poster_agent, sdir, [0], ablate=True, **kw)
    with pytest.raises(RlsaeError, match="activations of a nature agent; this agent is poster"):
        ablation_sweep(poster_agent, sdir, features=[0], **kw)
    # the same SAE on its own arch plays; one that says another layer is refused
    assert steer_features(nature_agent, sdir, [0], ablate=True, **kw).states == 5
    rec.origin["layer"] = "fc0"
    rec.write(sdir / "training.json")
    with pytest.raises(RlsaeError, match="activations of layer 'fc0', not 'fc1'"):
        steer_features(nature_agent, sdir, [0], ablate=True, **kw)
    # an SAE from before origins were recorded: read from the meta of the store it names
    old = tmp_path / "old_store"
    old.mkdir()
    (old / "meta.json").write_text(json.dumps({"extra": {"arch": "nature", "layer": "fc1"}}))
    rec.origin, rec.store_path = {}, str(old)
    rec.write(sdir / "training.json")
    with pytest.raises(RlsaeError, match="activations of a nature agent; this agent is poster"):
        steer_features(poster_agent, sdir, [0], ablate=True, **kw)
    # ... and with neither, nothing is known: it plays
    rec.store_path = str(tmp_path / "gone")
    rec.write(sdir / "training.json")
    assert steer_features(poster_agent, sdir, [0], ablate=True, **kw).states == 5


def test_the_sweep_names_the_state_where_the_action_changed_most(nature_agent: Path, tmp_path):
    """On the hand-built net, ablating feature 0 turns RIGHT into UP wherever it fires, and the
    preference shift there is the feature's own activation (Q[RIGHT] - Q[UP] = f0 before, 0
    after): the state named is where f0 was largest, found here by replaying the spliced
    agent with its activations recorded another way."""
    agent, sae = _hand_built(nature_agent)
    sdir = save_sae(sae, tmp_path / "sae")
    sw = ablation_sweep(agent, sdir, features=[0], **KW)
    f0: dict[tuple[int, int], float] = {}

    @torch.no_grad()
    def pol(obs):
        _, h = agent.forward(obs, "fc1")
        f = sae.encode(h.float())
        return agent.forward_from("fc1", sae.decode(f)).numpy(), f[:, 0].numpy()

    for b in play(agent.env_config, pol, seed=1, episodes=2, max_episode_steps=30):
        for i in range(len(b.episode)):
            f0[(int(b.episode[i]), int(b.step[i]))] = float(b.extra[i])
    best = max(f0, key=lambda k: (f0[k], -k[0], -k[1]))
    ch = sw.rows[0].most_changed
    assert ch is not None and (ch.episode, ch.step) == best
    assert (ch.action_spliced, ch.action_ablated) == (2, 1)
    assert ch.q_gap == pytest.approx(f0[best], rel=1e-5)
    # the spliced episodes are in the sweep (replayable), the same as steer's
    one = steer_features(agent, sdir, [0], ablate=True, **KW)
    assert [e.actions for e in sw.episodes_spliced] == [e.actions for e in one.episodes_spliced]


def test_live_features_keeps_the_most_firing():
    from rlsae.agents.sweep import live_features

    counts = np.array([5, 0, 9, 9, 1, 0, 7])
    assert live_features(counts) == [0, 2, 3, 4, 6]
    assert live_features(counts, 3) == [2, 3, 6]  # 9, 9, 7
    assert live_features(counts, 4) == [0, 2, 3, 6]
    assert live_features(counts, 10) == [0, 2, 3, 4, 6]


def test_dqn_sweep_command(nature_agent: Path, tmp_path: Path, run_cli):
    from rlsae.agents import sweep
    from rlsae.commands import dqn_sweep

    assert dqn_sweep.ABLATION_FILE == sweep.ABLATION_FILE
    _, sdir = _sae_dir(tmp_path)
    code, out, err = run_cli(
        "dqn", "sweep", "--agent", nature_agent, "--sae", sdir, "--features", "0,2",
        "--episodes", "1", "--max-episode-steps", "8", "--bootstrap", "50", "--json",
    )  # fmt: skip
    assert code == 0, err
    res = AblationSweep.from_json(json.loads(out))
    assert sorted(r.feature for r in res.rows) == [0, 2] and res.states == 8
    assert AblationSweep.read(sdir / sweep.ABLATION_FILE) == res
    code, out, err = run_cli(
        "dqn", "sweep", "--agent", nature_agent, "--sae", sdir, "--features", "1",
        "--episodes", "1", "--max-episode-steps", "4", "--out", tmp_path / "s.json",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("1 features ablated at fc1 over 1 episodes (4 states")
    assert "  feature 1: delta " in out and out.strip().endswith(f"wrote {tmp_path / 's.json'}")
    # bad input: one line, nothing written
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for args, msg in (
        (["--features", "1,x"], "--feature: expected feature indices"),
        (["--features", "8"], "feature 8 out of range: the SAE has 8 features"),
        (["--max-features", "0"], "max_features: must be at least 1"),
        (["--episodes", "0"], "episodes: must be at least 1"),
    ):
        code, out, err = run_cli("dqn", "sweep", "--agent", nature_agent, "--sae", sdir, *args)
        assert code == 2 and out == "" and err.count("\n") == 1 and msg in err, err
    # a dead feature is named dead (over the store's rows)
    from rlsae.agents.record import record_activations

    store = record_activations(
        nature_agent, "fc1", 32, tmp_path / "acts", seed=2, max_episode_steps=20, progress=False
    )
    code, out, err = run_cli(
        "dqn", "sweep", "--agent", nature_agent, "--sae", sdir, "--acts", store, "--features", "7"
    )
    assert code == 2 and "feature 7 is dead: it never fired over the 32 rows" in err
    assert sorted(p.name for p in tmp_path.rglob("*") if "acts" not in p.parts) == before


def test_the_study_sweep_stage(poster_agent: Path, poster_recording: Path, tmp_path: Path):
    """The dead-features study's ``sweep`` stage is off in the presets (reported off by the
    engine), and on with evaluation.sweep_episodes it writes SAE_DIR/ablation_sweep.json, the
    same sweep ablation_sweep gives, for the most-firing live features."""
    import shutil
    from dataclasses import replace

    from rlsae.agents import sweep as sweep_mod
    from rlsae.sae.config import TrainConfig
    from rlsae.sae.train import train_sae
    from rlsae.study import atari
    from rlsae.study.atari_sweep import AgentSweep
    from rlsae.study.engine import Context

    smoke = atari.preset_config("smoke")
    stage = atari.ATARI.stage("sweep")
    assert stage.per == "agent" and stage.off(smoke)
    assert all(stage.off(atari.preset_config(p)) for p in ("demo", "paper"))
    ev = replace(smoke.evaluation, sweep_episodes=1, sweep_features=3, max_episode_steps=6)
    cfg = replace(smoke, evaluation=ev)
    assert not stage.off(cfg)
    acts = atari.acts_dir(tmp_path, cfg, "poster")
    acts.parent.mkdir(parents=True)
    shutil.copytree(poster_recording, acts)
    sdir = atari.sae_dir(tmp_path, cfg, "poster")
    train_sae(acts, sdir, TrainConfig(d_sae=16, k=4, steps=3, batch_size=64), progress=False)
    spec = atari.AgentSpec(name="poster", agent_dir=str(poster_agent))
    res = stage.run(Context(atari.ATARI, cfg, tmp_path), spec)
    assert isinstance(res, AgentSweep) and res.path == str(
        sdir.relative_to(tmp_path) / sweep_mod.ABLATION_FILE
    )
    written = AblationSweep.read(tmp_path / res.path)
    direct = sweep_mod.ablation_sweep(
        poster_agent, sdir, acts, episodes=1, seed=ev.seed, epsilon=ev.epsilon,
        max_episode_steps=6, max_features=3,
    )  # fmt: skip
    assert [r.feature for r in written.rows] == [r.feature for r in direct.rows]
    assert [r.returns for r in written.rows] == [r.returns for r in direct.rows]
    assert res.features == 3 == len(written.rows) and res.top_features == [
        r.feature for r in written.rows
    ]
    assert AgentSweep.from_json(json.loads(json.dumps(res.to_json()))) == res
