"""dqn import: the poster's whole-module pickles (built here the way its training script saved
them: ``torch.save(q)`` in a script whose ``__main__`` defines ``AtariQnet``), state dicts and
safetensors become agent directories whose Q-values and fc1 equal the original network's; files
that would run code, or do not hold the network, are refused in one line with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from rlsae.agents.importer import POSTER_SHAPES, import_agent, poster_forward
from rlsae.agents.results import AgentInfo

# The poster's network as its training script defined it (ReLU in forward, not stored).
_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import torch
    from torch import nn
    import torch.nn.functional as F

    WIDTH = int(os.environ.get("WIDTH", "512"))
    VARIANT = os.environ.get("VARIANT", "")


    class Helper(nn.Module):
        pass


    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + os.environ["MARKER"],))


    class AtariQnet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, kernel_size=9, stride=2)
            self.pool1 = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(16, 32, kernel_size=9, stride=3)
            self.conv3 = nn.Conv2d(32, 64, kernel_size=6, stride=2)
            self.fc1 = nn.Linear(960, WIDTH)
            self.fc2 = nn.Linear(WIDTH, 512)
            self.fc3 = nn.Linear(512, 9)

        def forward(self, x):
            x = self.pool1(F.relu(self.conv1(x)))
            x = F.relu(self.conv3(F.relu(self.conv2(x))))
            h = F.relu(self.fc1(x.view(x.size(0), -1)))
            self.fc1_out = h
            return self.fc3(F.relu(self.fc2(h)))


    torch.manual_seed(int(os.environ.get("SEED", "0")))
    q = AtariQnet()
    if VARIANT == "nan":
        with torch.no_grad():
            q.fc2.weight[3, 7] = float("nan")
    if VARIANT == "missing":
        del q.fc3
    if VARIANT == "unknown":
        q.extra = Helper()
    if VARIANT == "evil":
        q.payload = Evil()
    if VARIANT == "cuda":  # as saved from cuda:0, without needing CUDA here
        import torch.serialization as ser
        ser.location_tag = lambda storage: "cuda:0"
    torch.save(q, sys.argv[1])
    if len(sys.argv) > 2:  # the original's forward on the given frames
        x = torch.as_tensor(np.load(sys.argv[2])).float()
        with torch.no_grad():
            qv = q(x)
        np.save(sys.argv[3], qv.numpy())
        np.save(sys.argv[4], q.fc1_out.numpy())
    """
)


def _save_poster(tmp: Path, name: str, *extra: object, **env: str) -> Path:
    script = tmp / "train_script.py"
    script.write_text(_SCRIPT)
    out = tmp / name
    import os

    subprocess.run(
        [sys.executable, str(script), str(out), *map(str, extra)],
        check=True,
        cwd=tmp,
        env={**os.environ, **env},
    )
    return out


@pytest.fixture(scope="module")
def frames(poster_recording: Path) -> np.ndarray:
    """Recorded observations (uint8, (n, 3, 210, 160)) of a real recording."""
    from rlsae.agents.replay import replay_observations

    return np.stack(replay_observations(poster_recording, 0, [0, 5, 20, 40, 69]))


@pytest.mark.parametrize("variant", ["", "cuda"])
def test_poster_pickle_imports_with_equal_q_and_fc1(variant, frames, tmp_path: Path):
    np.save(tmp_path / "frames.npy", frames)
    src = _save_poster(
        tmp_path, "dqn0.pt", tmp_path / "frames.npy", tmp_path / "q.npy", tmp_path / "fc1.npy",
        VARIANT=variant,
    )  # fmt: skip
    if variant == "cuda":
        assert b"cuda:0" in _pickle_bytes(src)
    from rlsae.agents.dqn import load_agent

    agent = load_agent(import_agent(src, tmp_path / "agent"))
    q, fc1 = agent.forward(frames, "fc1")
    q_ref, fc1_ref = np.load(tmp_path / "q.npy"), np.load(tmp_path / "fc1.npy")
    assert np.abs(q.numpy() - q_ref).max() <= 1e-5 * np.abs(q_ref).max()
    assert np.abs(fc1.numpy() - fc1_ref).max() <= 1e-5 * np.abs(fc1_ref).max()
    assert (fc1_ref > 0).any()  # a check on live units, not on zeros
    info = AgentInfo.read(tmp_path / "agent" / "agent.json")
    assert info.source is not None
    assert (info.source.file, info.source.format) == ("dqn0.pt", "torch-module-pickle")
    assert info.source.module_class == "__main__.AtariQnet"
    import hashlib

    assert info.source.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert info.source.conversion and "255" in info.source.conversion[0]
    assert info.env_id == "ALE/MsPacman-v5" and info.env.repeat_action_probability == 0.25


def _pickle_bytes(path: Path) -> bytes:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


def _poster_tensors(seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=gen) * 0.05 for k, s in POSTER_SHAPES.items()}


def test_state_dicts_pt_and_safetensors_poster_and_rlsae_names(tmp_path: Path):
    from safetensors.torch import save_file

    from rlsae.agents.dqn import load_agent

    t = _poster_tensors()
    x = torch.randint(0, 256, (3, 3, 210, 160), dtype=torch.uint8)
    q_ref = poster_forward(t, x.float())[0]
    torch.save(t, tmp_path / "sd.pt")
    save_file(t, str(tmp_path / "sd.safetensors"))
    for name, fmt in [("sd.pt", "torch-state-dict"), ("sd.safetensors", "safetensors")]:
        agent = load_agent(import_agent(tmp_path / name, tmp_path / f"a_{name}"))
        assert agent.info.source is not None and agent.info.source.format == fmt
        assert agent.info.source.key_names == "poster"
        q = agent.q_values(x)
        assert (q - q_ref).abs().max() <= 1e-5 * q_ref.abs().max()
    # rlsae's own names (an agent's q_net state dict) import unchanged
    first = load_agent(tmp_path / "a_sd.pt")
    own = {f"q_net.{k}": v for k, v in first.q_network.state_dict().items()}
    torch.save(own, tmp_path / "own.pt")
    again = load_agent(import_agent(tmp_path / "own.pt", tmp_path / "a_own"))
    assert again.info.source is not None and again.info.source.key_names == "rlsae"
    assert again.info.source.conversion == []
    assert torch.equal(again.q_values(x), first.q_values(x))


def _run_refused(run_cli, src: Path, out: Path, *more: str) -> str:
    code, stdout, err = run_cli("dqn", "import", "--from", src, "--out", out, *more)
    assert code == 2 and stdout == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*"))  # no temporary left either
    return err


def test_malicious_pickle_refused_and_never_runs(run_cli, tmp_path: Path):
    marker = tmp_path / "MARKER"
    src = _save_poster(tmp_path, "evil.pt", VARIANT="evil", MARKER=str(marker))
    assert b"system" in _pickle_bytes(src)
    err = _run_refused(run_cli, src, tmp_path / "out")
    assert "refusing to load" in err and "system" in err
    assert not marker.exists()
    # a bare pickle (no torch zip) with the same payload
    import pickle

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    bare = tmp_path / "bare.pt"
    bare.write_bytes(pickle.dumps(Evil(), protocol=2))
    _run_refused(run_cli, bare, tmp_path / "out")
    assert not marker.exists()


@pytest.mark.parametrize(
    "variant, env, expect",
    [
        ("unknown", {}, "second unknown class __main__.Helper"),
        ("missing", {}, "missing tensors fc3.weight, fc3.bias"),
        ("", {"WIDTH": "256"}, "fc1.out_features is 256, the poster network has 512"),
        ("nan", {}, "fc2.weight holds non-finite values"),
    ],
)
def test_bad_poster_files_refused_in_one_line(run_cli, tmp_path, variant, env, expect):
    src = _save_poster(tmp_path, "bad.pt", VARIANT=variant, **env)
    err = _run_refused(run_cli, src, tmp_path / "out")
    assert expect in err, err


def test_wrong_shapes_and_truncated_files_refused(run_cli, tmp_path: Path):
    t = _poster_tensors()
    t["fc1.weight"] = torch.zeros(256, 960)
    torch.save(t, tmp_path / "wide.pt")
    err = _run_refused(run_cli, tmp_path / "wide.pt", tmp_path / "out")
    assert "fc1.weight has shape [256, 960], the poster network needs [512, 960]" in err
    src = _save_poster(tmp_path, "whole.pt")
    data = src.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    _run_refused(run_cli, tmp_path / "cut.pt", tmp_path / "out")
    from safetensors.torch import save_file

    save_file(_poster_tensors(), str(tmp_path / "w.safetensors"))
    raw = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[: len(raw) - 1000])
    _run_refused(run_cli, tmp_path / "cut.safetensors", tmp_path / "out")
    # a nature file named as poster: the names say which network it is not
    _run_refused(run_cli, tmp_path / "wide.pt", tmp_path / "out", "--arch", "nature")


def test_import_cli_prints_the_source(run_cli, tmp_path: Path):
    src = _save_poster(tmp_path, "dqn3.pt")
    code, out, _ = run_cli("dqn", "import", "--from", src, "--out", tmp_path / "a", "--json")
    assert code == 0
    res = json.loads(out)
    assert res["source"]["file"] == "dqn3.pt" and res["arch"] == "poster"
    code, out, _ = run_cli("dqn", "layers", "--agent", tmp_path / "a", "--json")
    assert code == 0 and json.loads(out)["layers"]["fc1"] == 512


# An SB3 agent saved by SB3 itself (rl-zoo3's set-up: make_atari_env + 4 stacked frames), in a
# folder of its own, by a process that never imports rlsae.
_SB3_SCRIPT = textwrap.dedent(
    """
    import sys
    import ale_py, gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    assert "rlsae" not in sys.modules
    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env("MsPacmanNoFrameskip-v4", n_envs=1, seed=0), n_stack=4)
    DQN("CnnPolicy", env, buffer_size=100, learning_starts=0, verbose=0, seed=3).save(sys.argv[1])
    """
)


@pytest.fixture(scope="module")
def sb3_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    elsewhere = tmp_path_factory.mktemp("zoo") / "dqn" / "MsPacmanNoFrameskip-v4_1"
    elsewhere.mkdir(parents=True)
    (elsewhere / "make.py").write_text(_SB3_SCRIPT)
    subprocess.run(
        [sys.executable, "make.py", str(elsewhere / "MsPacmanNoFrameskip-v4.zip")],
        check=True, cwd=elsewhere, capture_output=True,
    )  # fmt: skip
    return elsewhere / "MsPacmanNoFrameskip-v4.zip"


def test_sb3_zip_imports_and_plays(sb3_zip: Path, run_cli, tmp_path: Path):
    from stable_baselines3 import DQN

    out = tmp_path / "zoo_agent"
    code, stdout, err = run_cli("dqn", "import", "--from", sb3_zip, "--out", out, "--json")
    assert code == 0, err
    res = json.loads(stdout)
    assert res["arch"] == "nature" and res["env_id"] == "MsPacmanNoFrameskip-v4"
    assert res["sticky_actions"] == 0.0  # v4: no sticky actions, full episodes
    info = AgentInfo.read(out / "agent.json")
    assert info.source is not None and info.source.format == "sb3-zip"
    assert info.env.max_episode_frames == 400_000 and info.env.noop_max == 30
    assert any("AtariWrapper" in n for n in info.source.notes)
    # the imported Q-network is SB3's own, value for value
    from rlsae.agents.dqn import load_agent

    sb3 = DQN.load(str(sb3_zip), device="cpu")
    x = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        q_sb3 = sb3.q_net(x.float())  # SB3 scales images itself
    assert torch.allclose(load_agent(out).q_values(x), q_sb3, rtol=1e-5, atol=1e-6)
    code, stdout, _ = run_cli(
        "dqn", "eval", "--agent", out, "--episodes", "1", "--max-episode-steps", "30", "--json"
    )
    assert code == 0 and json.loads(stdout)["lengths"] == [30]
    # a v5 id: sticky actions 0.25, recorded
    code, stdout, _ = run_cli(
        "dqn", "import", "--from", sb3_zip, "--out", tmp_path / "v5", "--env-id",
        "ALE/MsPacman-v5", "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(stdout)["sticky_actions"] == 0.25


def test_sb3_zip_wrong_game_or_arch_refused(sb3_zip: Path, run_cli, tmp_path: Path):
    err = _run_refused(run_cli, sb3_zip, tmp_path / "out", "--game", "pong")
    assert "the network has 9 actions, but pong has 6" in err
    err = _run_refused(run_cli, sb3_zip, tmp_path / "out", "--arch", "poster")
    assert "holds a nature network" in err
    err = _run_refused(run_cli, sb3_zip, tmp_path / "out", "--env-id", "ALE/Pong-v5")
    assert "not a ms_pacman environment" in err


def test_folder_import_all_or_nothing(run_cli, tmp_path: Path):
    dqns = tmp_path / "dqns"
    dqns.mkdir()
    for i in (0, 1):
        _save_poster(tmp_path, f"dqns/dqn{i}.pt", SEED=str(i))
    (dqns / "README.md").write_text("not an agent")
    code, out, err = run_cli("dqn", "import", "--from", dqns, "--out", tmp_path / "a", "--json")
    assert code == 0, err
    assert json.loads(out)["agents"] == ["dqn0", "dqn1"]
    assert AgentInfo.read(tmp_path / "a" / "dqn1" / "agent.json").source.file == "dqn1.pt"
    # one bad file: nothing is published
    _save_poster(tmp_path, "dqns/dqn2.pt", VARIANT="nan")
    _run_refused(run_cli, dqns, tmp_path / "b")
