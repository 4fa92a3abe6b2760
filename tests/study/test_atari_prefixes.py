"""The dead-features study with a Matryoshka SAE: the ``prefixes`` stage's FVU and spliced
return per nested prefix, checked against values computed another way. Slow tier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rlsae.agents.splice import splice_metrics
from rlsae.configs import from_mapping
from rlsae.study.atari import preset_dict, run_study
from rlsae.study.atari_config import StudyConfig
from rlsae.study.atari_prefixes import PrefixCurves
from rlsae.study.engine import StageMarker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def matryoshka_run(tmp_path_factory) -> tuple[Path, StudyConfig]:
    d = preset_dict("smoke")
    d["population"].update(train_steps=100, checkpoint_every=50)  # two agents
    d["sae"] = {
        "arch": "matryoshka",
        "d_sae": 128,
        "k": 8,
        "train": {"epochs": 4, "batch_size": 32, "matryoshka_groups": [16, 16, 32, 64]},
    }
    cfg = from_mapping(StudyConfig, d, "test")
    run = tmp_path_factory.mktemp("study") / "matryoshka"
    run_study(cfg, run, engine="serial")
    return run, cfg


def test_fvu_per_prefix_is_the_dense_float64_reconstruction_of_each_prefix(matryoshka_run):
    from rlsae.sae import load_sae
    from rlsae.sae.store import ActivationStore

    run, _ = matryoshka_run
    df = pd.read_csv(run / "analysis" / "prefixes.csv")
    assert df["agent"].tolist() == [a for a in ("seed0-step50", "seed0-step100") for _ in range(4)]
    assert df["prefix"].tolist() == [16, 32, 64, 128] * 2
    for agent, rows in df.groupby("agent"):
        store = ActivationStore(run / "acts" / str(agent) / "fc1")
        sae = load_sae(run / "saes" / str(agent) / "fc1" / "matryoshka-128").double()
        x = store.read_rows(np.arange(store.rows)).double()
        with torch.no_grad():
            f = sae.encode(x)
            var = float((x - x.mean(0)).pow(2).sum())
            for _, r in rows.iterrows():
                p = int(r["prefix"])
                err = float((f[:, :p] @ sae.W_dec[:p] + sae.b_dec - x).pow(2).sum())
                assert r["fvu"] == pytest.approx(err / var, rel=1e-4)
                assert r["l0"] == pytest.approx(float((f[:, :p] > 0).sum()) / store.rows)


def test_spliced_return_per_prefix_and_the_whole_prefix_is_the_splice_stage(matryoshka_run):
    run, cfg = matryoshka_run
    df = pd.read_csv(run / "analysis" / "prefixes.csv")
    assert df["return_sae"].notna().all() and df["q_fvu"].notna().all()
    table = pd.read_csv(run / "analysis" / "agents.csv").set_index("agent")
    e = cfg.evaluation
    for agent, rows in df.groupby("agent"):
        whole = rows[rows["prefix"] == 128].iloc[0]
        assert whole["return_sae"] == table.loc[agent, "splice_return_sae"]
        assert whole["q_fvu"] == pytest.approx(table.loc[agent, "splice_q_fvu"], rel=1e-9)
        narrow = rows[rows["prefix"] == 16].iloc[0]
        res = splice_metrics(
            run / "agents" / "seed0" / "checkpoints" / f"step_{str(agent)[len('seed0-step'):]}",
            run / "saes" / str(agent) / "fc1" / "matryoshka-128",
            episodes=e.splice_episodes, seed=e.seed, epsilon=e.epsilon,
            max_episode_steps=e.max_episode_steps, prefix=16,
        )  # fmt: skip
        assert narrow["return_sae"] == res.return_sae
        assert narrow["q_fvu"] == pytest.approx(res.q_fvu, rel=1e-9)


def test_the_report_plots_them_and_the_marker_is_typed(matryoshka_run):
    run, _ = matryoshka_run
    html = (run / "analysis" / "report.html").read_text()
    assert "Matryoshka prefixes" in html and "FVU vs prefix" in html
    assert "spliced return vs prefix" in html
    marker = StageMarker.read(run / "analysis" / "stages" / "prefixes.json")
    curves = PrefixCurves.from_json(marker.result)
    assert len(curves.points) == 8 and curves.path == "analysis/prefixes.csv"


def test_a_topk_study_has_no_prefixes_stage(matryoshka_run):
    from rlsae.study.atari_prefixes import no_prefixes

    _, cfg = matryoshka_run
    assert not no_prefixes(cfg)
    assert no_prefixes(from_mapping(StudyConfig, preset_dict("smoke"), "smoke"))
