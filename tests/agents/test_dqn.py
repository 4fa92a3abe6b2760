"""Training, checkpoints, resume, loading and bad agent directories (real SB3, tiny budgets)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rlsae.agents.agent_dir import list_checkpoints, read_agent_info
from rlsae.agents.config import (
    DQNConfig,
    DQNTrainConfig,
    EnvConfig,
    build_configs,
    default_config,
    train_config,
)
from rlsae.agents.dqn import load_agent, train_dqn
from rlsae.agents.envs import make_vec_env
from rlsae.agents.results import AgentInfo
from rlsae.configs import from_mapping, to_mapping
from rlsae.errors import RlsaeError

from .conftest import TINY


def test_agent_dir_has_model_agent_json_checkpoints_and_tensorboard(poster_agent: Path):
    info = json.loads((poster_agent / "agent.json").read_text())
    assert info["arch"] == "poster" and info["steps_trained"] == 200
    assert info["env_id"] == "ALE/MsPacman-v5"
    assert info["hyperparameters"]["buffer_size"] == TINY["buffer_size"]
    assert info["hyperparameters"]["gamma"] == 0.98  # the poster's, not overridden
    assert info["env"]["reward_transform"] == "scale" and info["env"]["reward_scale"] == 100
    assert (info["format"], info["version"]) == ("rlsae.dqn_agent", 1)
    assert read_agent_info(poster_agent) == AgentInfo.from_json(info)  # one typed reader
    assert AgentInfo.from_json(info).to_json() == info  # the file is the artifact, exactly
    ckpts = list_checkpoints(poster_agent)
    assert [(c.step, c.path.name) for c in ckpts] == [(100, "step_100"), (200, "step_200")]
    first = load_agent(ckpts[0].path)
    assert first.info.steps_trained == 100
    # checkpoints are different agents: the weights moved between 100 and 200 steps
    w0 = first.head.weight.detach()
    w1 = load_agent(ckpts[1].path).head.weight.detach()
    assert not torch.equal(w0, w1)
    assert any((poster_agent / "tensorboard").rglob("events.out.tfevents.*"))


def test_forward_from_a_layer_reproduces_the_q_values(poster_agent: Path, nature_agent: Path):
    for path, mode in [(poster_agent, "poster"), (nature_agent, "nature")]:
        agent = load_agent(path)
        env = make_vec_env(mode, 2, seed=4)
        obs = env.reset()
        obs, *_ = env.step(np.array([1, 2]))
        q = agent.q_values(obs)
        # the same numbers through SB3's own policy
        sb3_q = agent.model.policy.q_net(torch.as_tensor(obs)).detach()
        assert torch.allclose(q, sb3_q, atol=1e-5)
        assert torch.equal(agent.q_net(obs), q)
        for layer, width in agent.layers().items():
            q2, acts = agent.forward(obs, layer)
            assert acts.shape == (2, width)
            assert torch.allclose(agent.forward_from(layer, acts), q, atol=1e-5)
        env.close()


def test_resume_continues_an_interrupted_run_from_its_last_checkpoint(tmp_path: Path):
    out = tmp_path / "run"
    kw = dict(seed=1, checkpoint_every=40, progress=False, **{**TINY, "learning_starts": 40})
    train_dqn("nature", 80, out, **kw)
    # simulate an interruption after the step-40 checkpoint: drop the finished state (there is
    # no resume/ state left either, so the resume starts over and redoes the same checkpoints;
    # the exact resume from a saved state is tested below and in test_dqn_kill.py)
    (out / "agent.json").unlink()
    (out / "model.zip").unlink()
    shutil.rmtree(out / "checkpoints" / "step_80")
    with pytest.raises(RlsaeError, match="interrupted run; pass --resume"):
        train_dqn("nature", 120, out, **kw)
    with pytest.raises(RlsaeError, match="cannot resume it as poster"):
        train_dqn("poster", 120, out, resume=True, **kw)
    # a resume with other settings is refused, naming them, and leaves the run as it was
    saved = (out / "train.json").read_text()
    with pytest.raises(RlsaeError, match=r"hyperparameters\.learning_rate 0\.0001 \(now 0\.001\)"):
        train_dqn("nature", 120, out, resume=True, **{**kw, "learning_rate": 1e-3})
    with pytest.raises(RlsaeError, match=r"env\.repeat_action_probability 0\.25 \(now 0\.0\)"):
        train_dqn("nature", 120, out, resume=True, **{**kw, "repeat_action_probability": 0.0})
    with pytest.raises(RlsaeError, match=r"seed 1 \(now 2\)"):
        train_dqn("nature", 120, out, resume=True, **{**kw, "seed": 2})
    assert (out / "train.json").read_text() == saved
    assert [c.step for c in list_checkpoints(out)] == [40]
    # what writes killed half-way leave behind never reaches the finished agent
    (out / ".model.tmp.zip").write_bytes(b"PK half a model")
    (out / ".agent.json.k3j2x").write_text('{"arch": ')
    (out / "checkpoints" / ".step_80.tmp-abc").mkdir()
    (out / "resume").mkdir(exist_ok=True)
    (out / "resume" / ".replay_buffer.tmp.pkl").write_bytes(b"half")
    train_dqn("nature", 120, out, resume=True, **kw)
    assert [p for p in out.rglob("*") if p.name.startswith(".")] == []
    agent = load_agent(out)
    assert agent.info.steps_trained == 120
    assert [c.step for c in list_checkpoints(out)] == [40, 80, 120]
    assert not (out / "resume").exists()  # the resume state is dropped once finished
    with pytest.raises(RlsaeError, match="already holds a finished agent"):
        train_dqn("nature", 120, out, **kw)
    # a finished run can be extended
    train_dqn("nature", 160, out, resume=True, **kw)
    assert load_agent(out).info.steps_trained == 160
    assert list_checkpoints(out)[-1].path.name == "step_160"


# rl-baselines3-zoo v2.8.0, hyperparams/dqn.yml, the ``atari:`` entry (unchanged since commit
# f1064a7, "Update DQN/QRDQN Atari hyperparams (#271)", 2022):
# https://github.com/DLR-RM/rl-baselines3-zoo/blob/master/hyperparams/dqn.yml
RL_ZOO3_ATARI_DQN = {
    "buffer_size": 100000,
    "learning_rate": 1e-4,
    "batch_size": 32,
    "learning_starts": 100000,
    "target_update_interval": 1000,
    "train_freq": 4,
    "gradient_steps": 1,
    "exploration_fraction": 0.1,
    "exploration_final_eps": 0.01,
    "optimize_memory_usage": False,
}
# The poster (DESIGN.md, study 1): Adam lr 5e-4, gamma 0.98, buffer 50k, batch 256, epsilon
# 0.2 -> 0.05.
POSTER_DQN = {
    "learning_rate": 5e-4,
    "gamma": 0.98,
    "buffer_size": 50_000,
    "batch_size": 256,
    "exploration_initial_eps": 0.2,
    "exploration_final_eps": 0.05,
}


def _sb3_dqn_defaults() -> dict:
    import inspect

    from stable_baselines3 import DQN

    sig = inspect.signature(DQN.__init__).parameters
    return {n: p.default for n, p in sig.items() if p.default is not inspect.Parameter.empty}


def test_nature_defaults_are_rl_zoo3s_published_atari_hyperparameters():
    nature = default_config("nature")
    assert {k: getattr(nature, k) for k in RL_ZOO3_ATARI_DQN} == RL_ZOO3_ATARI_DQN
    # what rl-zoo3 leaves out is SB3's own default (gamma, tau, epsilon start, clipping)
    sb3 = _sb3_dqn_defaults()
    for name in ("gamma", "tau", "exploration_initial_eps", "max_grad_norm"):
        assert getattr(nature, name) == sb3[name], name
    # every field but our own switch is an SB3 DQN argument
    assert set(DQNConfig.__dataclass_fields__) - {"save_replay_buffer"} <= set(sb3)


def test_poster_defaults_are_the_posters_and_overrides_apply():
    poster = default_config("poster")
    assert {k: getattr(poster, k) for k in POSTER_DQN} == POSTER_DQN
    cfg, env = build_configs("poster", {"buffer_size": 1000, "repeat_action_probability": 0.0})
    assert cfg.buffer_size == 1000 and env.repeat_action_probability == 0.0
    assert cfg.gamma == POSTER_DQN["gamma"] and env.mode == "poster"


def test_unknown_settings_and_bad_budgets_are_refused(tmp_path: Path):
    with pytest.raises(RlsaeError, match=r"unknown DQN setting 'lr'; valid: .*learning_rate"):
        train_dqn("poster", 10, tmp_path / "a", lr=0.1)
    with pytest.raises(RlsaeError, match="unknown architecture"):
        train_dqn("impala", 10, tmp_path / "b")
    with pytest.raises(RlsaeError, match="steps: must be at least 1, got 0"):
        train_dqn("poster", 0, tmp_path / "c")
    with pytest.raises(RlsaeError, match="checkpoint_every: must be at least 1, got 0"):
        train_dqn("poster", 10, tmp_path / "d", checkpoint_every=0)  # was a ZeroDivisionError
    with pytest.raises(RlsaeError, match="learning_rate: must be above 0, got -0.001"):
        train_dqn("poster", 10, tmp_path / "e", learning_rate=-1e-3)  # was the optimiser's
    with pytest.raises(RlsaeError, match="learning_rate: expected a float, got 'abc'"):
        train_dqn("poster", 10, tmp_path / "f", learning_rate="abc")
    assert list(tmp_path.iterdir()) == []


def test_configs_validate_in_one_place_for_files_and_the_python_api():
    """The study's YAML path (from_mapping) and direct construction share validate()."""
    with pytest.raises(RlsaeError, match=r"^study.yaml: gamma: must be between 0 and 1, got 2.0$"):
        from_mapping(DQNConfig, {"gamma": 2}, "study.yaml")
    with pytest.raises(RlsaeError, match=r"^train.json: hyperparameters\.tau: must be above 0"):
        from_mapping(DQNTrainConfig, {"arch": "nature", "steps": 5, "hyperparameters": {"tau": 0}},
                     "train.json")  # fmt: skip
    with pytest.raises(RlsaeError, match=r"^train.json: env\.frameskip: expected an integer"):
        from_mapping(DQNTrainConfig, {"arch": "poster", "steps": 5, "env": {"frameskip": "4"}},
                     "train.json")  # fmt: skip
    with pytest.raises(RlsaeError, match=r"^x: env.mode: must equal arch \(nature\)"):
        DQNTrainConfig("nature", 5, env=EnvConfig(mode="poster")).validate("x")
    with pytest.raises(RlsaeError, match=r"^api: batch_size: must be at least 1, got 0$"):
        DQNConfig(batch_size=0).validate("api")
    with pytest.raises(RlsaeError, match=r"^api: reward_scale: must be above 0, got 0.0$"):
        EnvConfig(reward_scale=0.0).validate("api")
    # the saved config is what the next run would build: a round trip through train.json
    cfg = train_config("poster", 300, seed=4, checkpoint_every=100, buffer_size=1000)
    back = from_mapping(DQNTrainConfig, to_mapping(cfg), "train.json")
    assert back == cfg and back.hyperparameters.buffer_size == 1000


def test_a_foreign_agent_json_is_refused_in_one_line(poster_agent: Path, tmp_path: Path):
    bad = tmp_path / "agent"
    shutil.copytree(poster_agent, bad, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    (bad / "agent.json").write_text(json.dumps({"format": "rlsae.dqn_eval", "version": 1}))
    with pytest.raises(RlsaeError, match=r"is a 'rlsae.dqn_eval' file, not 'rlsae.dqn_agent'"):
        load_agent(bad)
    info = json.loads((poster_agent / "agent.json").read_text())
    (bad / "agent.json").write_text(json.dumps({**info, "version": 2}))
    with pytest.raises(RlsaeError, match=r"rlsae.dqn_agent version 2; this rlsae reads version 1"):
        load_agent(bad)


def test_missing_corrupt_and_wrong_arch_agents_give_one_line_errors(
    poster_agent: Path, nature_agent: Path, tmp_path: Path
):
    with pytest.raises(RlsaeError, match="not found"):
        load_agent(tmp_path / "nothing")
    bad = tmp_path / "corrupt"
    shutil.copytree(poster_agent, bad, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    (bad / "model.zip").write_bytes(b"PK\x03\x04 this is not a model")
    with pytest.raises(RlsaeError, match="cannot load") as e:
        load_agent(bad)
    assert "\n" not in str(e.value)
    (bad / "model.zip").unlink()
    with pytest.raises(RlsaeError, match="model.zip not found"):
        load_agent(bad)
    with pytest.raises(RlsaeError, match="holds a nature agent, but a poster agent"):
        load_agent(nature_agent, expect_arch="poster")
    # agent.json says poster but the model is a nature one
    mixed = tmp_path / "mixed"
    shutil.copytree(
        nature_agent, mixed, ignore=shutil.ignore_patterns("checkpoints", "tensorboard")
    )
    info = json.loads((mixed / "agent.json").read_text())
    (mixed / "agent.json").write_text(json.dumps({**info, "arch": "poster"}))
    with pytest.raises(
        RlsaeError, match="env.mode: 'nature' does not match arch 'poster'; .*incons"
    ):
        load_agent(mixed)
    # agent.json consistent in itself, but the model was trained on other observations
    env = {**info["env"], "mode": "poster"}
    (mixed / "agent.json").write_text(json.dumps({**info, "arch": "poster", "env": env}))
    with pytest.raises(RlsaeError, match=r"trained on observations \(4, 84, 84\).*inconsistent"):
        load_agent(mixed)
    (mixed / "agent.json").write_text(json.dumps({**info, "arch": "impala"}))
    with pytest.raises(RlsaeError, match="arch: expected one of nature, poster, got 'impala'"):
        load_agent(mixed)


def test_training_is_reproducible_from_its_seed(tmp_path: Path):
    kw = dict(progress=False, **TINY)
    a = load_agent(train_dqn("nature", 120, tmp_path / "a", seed=3, **kw)).q_network.state_dict()
    b = load_agent(train_dqn("nature", 120, tmp_path / "b", seed=3, **kw)).q_network.state_dict()
    c = load_agent(train_dqn("nature", 120, tmp_path / "c", seed=4, **kw)).q_network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_an_interrupted_run_resumes_to_the_uninterrupted_run_exactly(tmp_path, monkeypatch):
    """Training stopped right after its second saved state (an exception, as a SIGINT would)
    and resumed ends with the uninterrupted run's weights and training log, bit for bit; the
    state holds no pickle. (The SIGKILL version is tests/agents/test_dqn_kill.py.)"""
    import rlsae.agents.dqn as dqn_mod

    kw = dict(seed=1, checkpoint_every=80, n_envs=2, progress=False, **TINY)
    train_dqn("nature", 480, tmp_path / "a", **kw)

    class Stop(Exception):
        pass

    real, calls = dqn_mod.save_state, []

    def save_then_stop(*args, **kwargs):
        path = real(*args, **kwargs)
        calls.append(path)
        if len(calls) == 2:
            raise Stop
        return path

    monkeypatch.setattr(dqn_mod, "save_state", save_then_stop)
    with pytest.raises(Stop):
        train_dqn("nature", 480, tmp_path / "b", **kw)
    state = calls[-1]
    assert sorted(p.name for p in state.parent.iterdir()) == [state.name]  # older ones dropped
    names = {p.relative_to(state).as_posix() for p in state.rglob("*") if p.is_file()}
    assert {"state.json", "torch.pt", "actions.npy", "last_obs.npy"} <= names
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".zip"))]
    monkeypatch.setattr(dqn_mod, "save_state", real)
    train_dqn("nature", 480, tmp_path / "b", resume=True, **kw)
    a, b = (load_agent(tmp_path / x).model.policy.state_dict() for x in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    log_a, log_b = ((tmp_path / x / "train_log.json").read_bytes() for x in "ab")
    assert log_a == log_b and json.loads(log_a)["steps"] == 480


def test_a_resume_whose_replayed_emulators_differ_is_refused(tmp_path, monkeypatch):
    """The emulators are rebuilt by replaying the saved actions; if the replay does not reach
    the saved observation (another ale-py, a damaged file) the resume is refused in one line."""
    import rlsae.agents.dqn as dqn_mod

    kw = dict(seed=1, checkpoint_every=40, progress=False, **TINY)

    class Stop(Exception):
        pass

    def save_then_stop(*args, **kwargs):
        path = dqn_mod_real(*args, **kwargs)
        if int(path.name[5:]) >= 200:  # past the game's intro, where actions change nothing
            raise Stop(path)
        return path

    dqn_mod_real = dqn_mod.save_state
    monkeypatch.setattr(dqn_mod, "save_state", save_then_stop)
    with pytest.raises(Stop) as stopped:
        train_dqn("nature", 320, tmp_path / "r", **kw)
    monkeypatch.setattr(dqn_mod, "save_state", dqn_mod_real)
    state = stopped.value.args[0]
    actions = np.load(state / "actions.npy")
    np.save(state / "actions.npy", (actions + 1) % 9)
    with pytest.raises(RlsaeError, match="did not reproduce the saved game state"):
        train_dqn("nature", 320, tmp_path / "r", resume=True, **kw)


def test_replay_buffers_beyond_memory_and_batches_beyond_the_buffer_are_refused(
    tmp_path, monkeypatch
):
    """Counts inside 64 bits that cannot work are refused in one line before anything is
    written: a replay buffer or a training batch larger than memory + swap (numpy's allocation
    failed with a traceback after train.json was written)."""
    from gymnasium import spaces
    from stable_baselines3.common.buffers import ReplayBuffer

    import rlsae.agents.agent_dir as agent_dir_mod

    # the size estimate is SB3's own allocation
    for optimize, n_envs in ((False, 2), (True, 3)):
        cfg = train_config(
            "nature", 100, n_envs=n_envs, buffer_size=101, optimize_memory_usage=optimize
        )
        obs = spaces.Box(0, 255, cfg.env.obs_shape, np.uint8)
        rb = ReplayBuffer(
            101, obs, spaces.Discrete(9), n_envs=n_envs, optimize_memory_usage=optimize,
            handle_timeout_termination=False,
        )  # fmt: skip
        frames = rb.observations.nbytes + (0 if optimize else rb.next_observations.nbytes)
        assert agent_dir_mod.buffer_bytes(cfg) == frames
    monkeypatch.setattr(agent_dir_mod, "_memory_and_swap", lambda: 10**9)
    out = tmp_path / "big"
    with pytest.raises(RlsaeError, match=r"buffer_size: a replay buffer of 20000 .* 1\.1 GiB"):
        train_dqn("nature", 100, out, buffer_size=20_000, progress=False)
    with pytest.raises(RlsaeError, match=r"batch_size: a training batch of 20000 .* 1\.1 GiB"):
        train_dqn("nature", 100, out, buffer_size=100, batch_size=20_000, progress=False)
    assert not out.exists()
