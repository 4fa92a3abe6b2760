"""The CLI verbs end to end: import, train, eval, dead counts and MMCS, each with --json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rlsae.sae import ActivationStore, load_sae
from rlsae.sae.metrics import evaluate_sae, live_feature_count

from .conftest import superposition


def test_import_train_eval_dead_mmcs(tmp_path, capsys, run_cli):
    x, _ = superposition(3000, d=16, n_true=32, seed=3)
    np.save(tmp_path / "acts.npy", x.numpy())
    code, out, err = run_cli(
        "acts",
        "import",
        "--from",
        tmp_path / "acts.npy",
        "--out",
        tmp_path / "acts",
        "--hook",
        "fc1",
        "--shard-rows",
        1000,
        "--json",
    )
    assert code == 0, err
    assert json.loads(out) == {
        "out": str(tmp_path / "acts"),
        "rows": 3000,
        "d_in": 16,
        "dtype": "float32",
        "shards": 3,
    }

    code, out, err = run_cli(
        "sae", "train", "--acts", tmp_path / "acts", "--out", tmp_path / "sae", "--arch", "topk",
        "--expansion", 4, "--k", 3, "--epochs", 3, "--batch-size", 100, "--lr", 3e-3, "--seed", 1, "--json",
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(out)
    assert len(out.strip().splitlines()) == 1  # exactly one JSON object on stdout
    assert "train topk" in err  # progress went to stderr
    assert res["steps"] == 90 and res["d_sae"] == 64 and res["l0"] <= 3

    code, out, err = run_cli(
        "sae", "eval", "--sae", tmp_path / "sae", "--acts", tmp_path / "acts", "--json"
    )
    assert code == 0, err
    ev = json.loads(out)
    # recompute reconstruction and firing counts densely, another way
    sae = load_sae(tmp_path / "sae")
    with torch.no_grad():
        f = sae.encode(x)
        recon = sae.decode(f)
    fvu = float(((recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    counts = (f > 0).sum(0)
    assert abs(ev["fvu"] - fvu) < 1e-4 and abs(ev["explained_variance"] - (1 - fvu)) < 1e-4
    assert ev["mse"] == pytest.approx(float(((recon - x) ** 2).mean()), rel=1e-4)
    assert ev["l0"] == float((f > 0).sum()) / 3000
    assert ev["dead"] == int((counts == 0).sum()) and ev["dense"] == int((counts > 300).sum())

    code, out, err = run_cli(
        "analyze",
        "dead",
        "--sae",
        tmp_path / "sae",
        "--acts",
        tmp_path / "acts",
        "--threshold",
        20,
        "--json",
    )
    assert code == 0, err
    dead = json.loads(out)
    assert dead["live"] == int((counts >= 20).sum()) and dead["dead"] == 64 - dead["live"]
    assert dead["threshold"] == 20 and dead["rows"] == 3000

    code, out, err = run_cli(
        "analyze",
        "mmcs",
        "--sae",
        tmp_path / "sae",
        "--sae",
        tmp_path / "sae",
        "--top-k",
        3,
        "--hungarian",
        "--json",
    )
    assert code == 0, err
    mm = json.loads(out)
    assert (
        abs(mm["mmcs_ab"] - 1) < 1e-5
        and abs(mm["hungarian_mean_cos"] - 1) < 1e-5
        and len(mm["top_k"]) == 3
    )


def test_feature_stats_and_live_count(tmp_path, small_store):
    from rlsae.sae import SAE, FeatureStats, SAEConfig

    sae = SAE(SAEConfig(d_in=16, d_sae=40, arch="relu"), seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(-1.5)  # only strongly aligned rows fire
    res = evaluate_sae(sae, ActivationStore(small_store), batch_size=333).stats
    x = torch.cat(list(ActivationStore(small_store).iter_sequential(1000)))
    with torch.no_grad():
        f = sae.encode(x)
    assert torch.equal(res.firing_counts, (f > 0).sum(0))
    torch.testing.assert_close(res.max_activation, f.max(0).values)
    torch.testing.assert_close(res.mean_activation, f.mean(0))
    assert live_feature_count(res.firing_counts) == int(((f > 0).sum(0) >= 1).sum())
    assert live_feature_count(res.firing_counts, threshold=10) == int(((f > 0).sum(0) >= 10).sum())
    res.write(tmp_path)
    back = FeatureStats.read(tmp_path)
    assert back.firing_counts.dtype == torch.int64 and torch.equal(
        back.firing_counts, res.firing_counts
    )
    assert back.rows == 1000
    from safetensors.torch import load_file

    assert load_file(str(tmp_path / "feature_stats.safetensors"))["rows"].tolist() == [1000]
