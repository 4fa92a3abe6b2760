"""A corrupt JSON file in an artifact a command reads is refused in one line (issue 18).

Each case truncates (or replaces with a JSON list) one metadata file of a small real artifact --
an activation store's meta.json, an SAE's cfg.json, an agent's agent.json, a study's run.json --
and runs the commands that read it: exit status 2, one ``error:`` line naming the file, no
traceback, nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlsae.cli import main


def _run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except Exception as e:  # noqa: BLE001 - reported as the traceback the user would see
        code, cap = -1, capsys.readouterr()
        return code, cap.out, f"Traceback: {type(e).__name__}: {e}"
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    }


@pytest.fixture
def artifacts(tmp_path: Path) -> dict[str, Path]:
    import torch

    from rlsae.agents.config import DQNConfig, EnvConfig
    from rlsae.agents.dqn import AgentInfo
    from rlsae.sae import SAE, SAEConfig
    from rlsae.sae.store import ActivationWriter

    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    with ActivationWriter(tmp_path / "store", 16, shard_rows=100, hook="fc1") as w:
        w.append(x)
    SAE(SAEConfig(d_in=16, d_sae=32, k=4, hook_name="fc1"), seed=0).save(tmp_path / "sae")
    agent = tmp_path / "agent"
    agent.mkdir()
    (agent / "model.zip").write_bytes(b"")
    AgentInfo(arch="poster", seed=0, steps_trained=1, n_envs=1, hyperparameters=DQNConfig(),
              env=EnvConfig(mode="poster")).write(agent / "agent.json")  # fmt: skip
    from rlsae.study.atari import ATARI, preset_config
    from rlsae.study.engine import open_run

    open_run(ATARI, preset_config("smoke"), tmp_path / "run", "preset:smoke", resume=False)
    return {"store": tmp_path / "store", "sae": tmp_path / "sae", "agent": agent,
            "run": tmp_path / "run", "root": tmp_path}  # fmt: skip


CASES = [
    ("store", "meta.json", ["sae", "train", "--acts", "{store}", "--out", "{root}/o", "--steps", "2"]),
    ("store", "meta.json", ["sae", "eval", "--sae", "{sae}", "--acts", "{store}"]),
    ("store", "meta.json", ["analyze", "dead", "--sae", "{sae}", "--acts", "{store}"]),
    ("sae", "cfg.json", ["sae", "eval", "--sae", "{sae}", "--acts", "{store}"]),
    ("sae", "cfg.json", ["analyze", "mmcs", "--sae", "{sae}", "--sae", "{sae}"]),
    ("agent", "agent.json", ["dqn", "eval", "--agent", "{agent}", "--no-save"]),
    ("agent", "agent.json", ["dqn", "layers", "--agent", "{agent}"]),
    ("agent", "agent.json", ["dqn", "record", "--agent", "{agent}", "--layer", "fc1", "--steps",
                             "4", "--out", "{root}/rec"]),
    ("run", "run.json", ["pipeline", "atari", "--preset", "smoke", "--out", "{run}", "--resume"]),
]  # fmt: skip


@pytest.mark.parametrize("damage", ["truncated", "list"])
@pytest.mark.parametrize(
    ("kind", "name", "argv"), CASES, ids=[" ".join(c[2][:2]) + " " + c[1] for c in CASES]
)
def test_a_corrupt_metadata_file_is_one_line(artifacts, capsys, kind, name, argv, damage):
    path = artifacts[kind] / name
    text = path.read_text()
    path.write_text(text[: len(text) // 2] if damage == "truncated" else json.dumps([1, 2]))
    before = _tree(artifacts["root"])
    fmt = {k: str(v) for k, v in artifacts.items()}
    code, out, err = _run(capsys, *[a.format(**fmt) for a in argv])
    lines = err.strip().splitlines()
    assert code == 2 and out == "", (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert name in lines[0] or kind in lines[0], lines[0]
    assert _tree(artifacts["root"]) == before
