"""The dqn verbs: one JSON object with --json, one-line errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlsae.cli import main


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_layers_and_eval_print_one_json_object(poster_agent: Path, capsys, tmp_path: Path):
    code, out, _ = _run(capsys, "dqn", "layers", "--agent", str(poster_agent), "--json")
    assert code == 0
    res = json.loads(out)
    assert res["layers"] == {"conv3": 960, "fc1": 512, "fc2": 512}
    code, out, _ = _run(
        capsys, "dqn", "eval", "--agent", str(poster_agent / "checkpoints" / "step_100"),
        "--episodes", "1", "--max-episode-steps", "50", "--json",
    )  # fmt: skip
    assert code == 0 and len(out.strip().splitlines()) == 1
    res = json.loads(out)
    assert res["steps_trained"] == 100 and res["episodes"] == 1
    saved = json.loads((poster_agent / "checkpoints" / "step_100" / "eval.json").read_text())
    assert saved["mean_return"] == res["mean_return"]


def test_record_and_replay_verbs(poster_agent: Path, capsys, tmp_path: Path):
    out_dir = tmp_path / "acts"
    code, out, _ = _run(
        capsys, "dqn", "record", "--agent", str(poster_agent), "--layer", "fc2",
        "--steps", "30", "--out", str(out_dir), "--n-envs", "1", "--json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["rows"] == 30
    png = tmp_path / "s.png"
    code, out, _ = _run(
        capsys, "dqn", "replay", "--acts", str(out_dir), "--step", "7", "--out", str(png),
        "--verify", "--json",
    )  # fmt: skip
    res = json.loads(out)
    assert code == 0 and res["checked"] == 30 and res["mismatches"] == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["dqn", "layers", "--agent", "{tmp}/none"], "agent directory"),
        (["dqn", "record", "--agent", "{agent}", "--layer", "fc9", "--steps", "5", "--out", "{tmp}/o"],
         "valid layers: conv3 (960), fc1 (512), fc2 (512)"),
        (["dqn", "record", "--agent", "{agent}", "--layer", "fc1", "--steps", "0", "--out", "{tmp}/o"],
         "steps must be at least 1"),
        (["dqn", "train", "--arch", "poster", "--steps", "5", "--out", "{tmp}/t", "--set", "lr=1"],
         "unknown DQN setting 'lr'"),
        (["dqn", "eval", "--agent", "{agent}", "--episodes", "0"], "episodes must be at least 1"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(poster_agent, capsys, tmp_path, argv, message):
    argv = [a.format(tmp=tmp_path, agent=poster_agent) for a in argv]
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() and not (tmp_path / "t").exists()
