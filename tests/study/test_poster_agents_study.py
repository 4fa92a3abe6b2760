"""The poster's protocol over three imported random-weight agents (written the way the poster's
script saved its agents), end to end through ``rlsae pipeline atari`` with a config file; the
SAE settings are checked in what training saved (``training.json``), the greedy recording on
the recorded context table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

_SCRIPT = Path(__file__).parents[1] / "agents" / "test_import.py"


def _poster_files(folder: Path) -> None:
    """Three poster-format pickles from the import tests' training-script stand-in."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_imp", _SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    script = folder.parent / "train_script.py"
    script.write_text(mod._SCRIPT)
    folder.mkdir()
    for i in range(3):
        subprocess.run(
            [sys.executable, str(script), str(folder / f"dqn{i}.pt")],
            check=True, cwd=folder.parent, env={**os.environ, "SEED": str(i)},
        )  # fmt: skip


def test_poster_protocol_over_imported_agents(tmp_path: Path, run_cli) -> None:
    from rlsae.sae import TrainingRecord

    def cli(*args: str) -> str:
        code, out, err = run_cli(*args)
        assert code == 0, err
        return out

    _poster_files(tmp_path / "dqns")
    cli("dqn", "import", "--from", str(tmp_path / "dqns"), "--out", str(tmp_path / "agents"))
    cfg = {
        "name": "poster-agents",
        "population": {"arch": "poster", "train_steps": 0, "agents": [str(tmp_path / "agents/*")]},
        "recording": {"layer": "fc1", "steps": 2048, "epsilon": 0.0},
        "sae": {
            "arch": "topk",
            "d_sae": 2048,
            "k": 50,
            "train": {"lr": 0.001, "batch_size": 2048, "aux_k": 0, "epochs": 1, "shuffle": False},
        },  # fmt: skip
        "evaluation": {
            "episodes": 1,
            "epsilon": 0.0,
            "splice_episodes": 0,
            "max_episode_steps": 60,
        },  # fmt: skip
        "fit": {"bootstrap": 10},
    }
    (tmp_path / "poster.yaml").write_text(yaml.safe_dump(cfg))
    out = cli("pipeline", "atari", "--preset", str(tmp_path / "poster.yaml"), "--out",
              str(tmp_path / "run"), "--json")  # fmt: skip
    res = json.loads(out)
    assert res["agents"] == 3
    run = tmp_path / "run"
    table = pd.read_csv(run / "analysis" / "agents.csv")
    assert table["agent"].tolist() == ["dqn0", "dqn1", "dqn2"]
    assert "human_normalized" in table.columns
    for name in table["agent"]:
        rec = TrainingRecord.read(run / "saes" / name / "fc1" / "topk-2048-k50" / "training.json")
        c = rec.config
        assert (c.arch, c.d_sae, c.k, c.lr, c.batch_size) == ("topk", 2048, 50, 0.001, 2048)
        assert (c.aux_k, rec.aux_k, c.epochs, c.shuffle) == (0, 0, 1.0, False)
        assert rec.steps == 1 and rec.rows_seen == 2048  # one pass
        ctx = pd.read_parquet(run / "acts" / name / "fc1" / "context.parquet")
        assert (ctx["action"] == ctx["greedy_action"]).all()  # greedy play (epsilon 0)
    log = json.loads((run / "acts" / "dqn0" / "fc1" / "episodes.json").read_text())
    assert log["env"]["repeat_action_probability"] == 0.25  # ALE/MsPacman-v5, as the poster
    report = (run / "analysis" / "report.html").read_text()
    assert "human-normalised" in report
