"""QR-DQN zips (sb3-contrib, rl-zoo3 ``qrdqn``) import as DQN agents whose Q-value is the mean
over quantiles: checked against a QR-DQN trained here by sb3-contrib itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def qrdqn_zip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, Path]:
    """A NatureCNN QR-DQN (7 quantiles) trained by sb3-contrib for 60 steps (2 gradient updates)
    on Ms. Pac-Man frames, saved by sb3-contrib in its own folder; and 64 observations of play
    to compare on."""
    from sb3_contrib import QRDQN

    from rlsae.agents.config import EnvConfig
    from rlsae.agents.envs import make_vec_env
    from rlsae.threads import torch_threads

    env = make_vec_env(EnvConfig(mode="nature"), 2, seed=0)
    model = QRDQN(
        "CnnPolicy", env, policy_kwargs=dict(n_quantiles=7), buffer_size=100,
        learning_starts=20, batch_size=8, train_freq=10, seed=0, device="cpu", verbose=0,
    )  # fmt: skip
    with torch_threads(1):  # module fixtures run before the directory's one-thread fixture
        model.learn(60)
    assert model._n_updates == 2  # its weights moved from their initialisation
    folder = tmp_path_factory.mktemp("elsewhere")
    model.save(str(folder / "qrdqn_mspacman.zip"))
    obs = [env.reset()]
    rng = np.random.default_rng(0)
    for _ in range(31):
        obs.append(env.step(rng.integers(0, 9, 2))[0])
    env.close()
    return folder / "qrdqn_mspacman.zip", np.concatenate(obs), folder


def test_qrdqn_zip_imports_with_q_equal_to_the_quantile_means(qrdqn_zip, run_cli, tmp_path):
    from sb3_contrib import QRDQN

    from rlsae.agents.dqn import load_agent

    src, obs, _ = qrdqn_zip
    out = tmp_path / "agent"
    code, stdout, err = run_cli("dqn", "import", "--from", src, "--out", out, "--json")
    assert code == 0, err
    res = json.loads(stdout)
    assert res["source"]["format"] == "sb3-qrdqn-zip"
    assert res["source"]["conversion"][0].startswith("QR-DQN head (7 quantiles x 9 actions)")
    assert res["env_id"] == "MsPacmanNoFrameskip-v4"  # rl-zoo3's id: no sticky actions
    assert res["source"]["max_rel_error"] < 1e-6
    ref = QRDQN.load(str(src), device="cpu")  # sb3-contrib's own model and forward
    with torch.no_grad():
        quantiles = ref.policy.quantile_net(torch.as_tensor(obs).float())  # /255 inside SB3
        q_ref = quantiles.mean(dim=1).numpy()
    assert quantiles.shape == (len(obs), 7, 9)
    q = load_agent(out).q_values(obs).numpy()
    assert np.allclose(q, q_ref, rtol=1e-5, atol=1e-6 * np.abs(q_ref).max())
    greedy, _ = ref.predict(obs, deterministic=True)
    assert np.array_equal(q.argmax(1), greedy)  # acts as the QR-DQN does
    assert len({tuple(r) for r in q_ref.round(6)}) > 1  # the frames give different values


def test_qrdqn_zip_with_a_wrong_game_is_refused(qrdqn_zip, run_cli, tmp_path):
    src, _, _ = qrdqn_zip
    code, _, err = run_cli("dqn", "import", "--from", src, "--out", tmp_path / "o", "--game",
                           "pong")  # fmt: skip
    assert code == 2 and "the network has 9 actions, but pong has 6" in err
    assert not (tmp_path / "o").exists()
