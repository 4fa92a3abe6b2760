"""Training, checkpoints, resume, loading and bad agent directories (real SB3, tiny budgets)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rlsae.agents.dqn import build_configs, default_config, list_checkpoints, load_agent, train_dqn
from rlsae.agents.envs import make_vec_env
from rlsae.errors import RlsaeError

from .conftest import TINY


def test_agent_dir_has_model_agent_json_checkpoints_and_tensorboard(poster_agent: Path):
    info = json.loads((poster_agent / "agent.json").read_text())
    assert info["arch"] == "poster" and info["steps_trained"] == 200
    assert info["env_id"] == "ALE/MsPacman-v5"
    assert info["hyperparameters"]["buffer_size"] == TINY["buffer_size"]
    assert info["hyperparameters"]["gamma"] == 0.98  # the poster's, not overridden
    assert info["env"]["reward_transform"] == "scale" and info["env"]["reward_scale"] == 100
    ckpts = list_checkpoints(poster_agent)
    assert [p.name for p in ckpts] == ["step_100", "step_200"]
    first = load_agent(ckpts[0])
    assert first.info["steps_trained"] == 100
    # checkpoints are different agents: the weights moved between 100 and 200 steps
    w0 = first.head.weight.detach()
    w1 = load_agent(ckpts[1]).head.weight.detach()
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
    # simulate an interruption after the step-40 checkpoint: drop the finished state
    (out / "agent.json").unlink()
    (out / "model.zip").unlink()
    shutil.rmtree(out / "checkpoints" / "step_80")
    with pytest.raises(RlsaeError, match="interrupted run; pass --resume"):
        train_dqn("nature", 120, out, **kw)
    with pytest.raises(RlsaeError, match="cannot resume it as poster"):
        train_dqn("poster", 120, out, resume=True, **kw)
    train_dqn("nature", 120, out, resume=True, **kw)
    agent = load_agent(out)
    assert agent.info["steps_trained"] == 120
    assert [p.name for p in list_checkpoints(out)] == ["step_40", "step_80", "step_120"]
    assert not (out / "resume").exists()  # the resume state is dropped once finished
    with pytest.raises(RlsaeError, match="already holds a finished agent"):
        train_dqn("nature", 120, out, **kw)
    # a finished run can be extended
    train_dqn("nature", 160, out, resume=True, **kw)
    assert load_agent(out).info["steps_trained"] == 160
    assert list_checkpoints(out)[-1].name == "step_160"


def test_defaults_are_rl_zoo3_for_nature_and_the_posters_for_poster():
    nature = default_config("nature")
    assert (nature.learning_rate, nature.buffer_size, nature.batch_size) == (1e-4, 100_000, 32)
    assert (nature.learning_starts, nature.exploration_final_eps) == (100_000, 0.01)
    poster = default_config("poster")
    assert (poster.learning_rate, poster.gamma, poster.buffer_size) == (5e-4, 0.98, 50_000)
    assert (poster.batch_size, poster.exploration_initial_eps, poster.exploration_final_eps) == (
        256, 0.2, 0.05,
    )  # fmt: skip
    cfg, env = build_configs("poster", {"buffer_size": 1000, "repeat_action_probability": 0.0})
    assert cfg.buffer_size == 1000 and env.repeat_action_probability == 0.0


def test_unknown_settings_and_bad_budgets_are_refused(tmp_path: Path):
    with pytest.raises(RlsaeError, match=r"unknown DQN setting 'lr'; valid: .*learning_rate"):
        train_dqn("poster", 10, tmp_path / "a", lr=0.1)
    with pytest.raises(RlsaeError, match="unknown architecture"):
        train_dqn("impala", 10, tmp_path / "b")
    with pytest.raises(RlsaeError, match="steps must be at least 1"):
        train_dqn("poster", 0, tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


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
    with pytest.raises(RlsaeError, match="inconsistent"):
        load_agent(mixed)


def test_training_is_reproducible_from_its_seed(tmp_path: Path):
    kw = dict(progress=False, **TINY)
    a = load_agent(train_dqn("nature", 120, tmp_path / "a", seed=3, **kw)).q_network.state_dict()
    b = load_agent(train_dqn("nature", 120, tmp_path / "b", seed=3, **kw)).q_network.state_dict()
    c = load_agent(train_dqn("nature", 120, tmp_path / "c", seed=4, **kw)).q_network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
