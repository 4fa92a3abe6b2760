"""``acts synth`` and ``sae eval --ground-truth``: planted features, their statistics, and the
recovery figures against direct computations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rlsae.errors import RlsaeError
from rlsae.sae import SAE, SAEConfig
from rlsae.sae.groundtruth import GroundTruth, ground_truth_metrics, read_ground_truth
from rlsae.sae.store import ActivationStore
from rlsae.sae.synth import SynthConfig, firing_probabilities, synthesize


def test_synth_store_equals_its_ground_truth(tmp_path):
    cfg = SynthConfig(rows=5000, d_in=16, n_features=48, mean_active=3.0, parents=4, children=3)
    path = synthesize(cfg, tmp_path / "s", shard_rows=1500)
    t = load_file(str(path))
    st = ActivationStore(tmp_path / "s")
    x = torch.cat(list(st.iter_sequential(4096)))
    a = torch.zeros(5000, 48)
    a[t["act_rows"], t["act_features"]] = t["act_values"]
    torch.testing.assert_close(x, a @ t["directions"], atol=1e-5, rtol=1e-5)  # the store is D^T a
    torch.testing.assert_close(t["directions"].norm(dim=1), torch.ones(48))
    assert float((a > 0).sum(1).float().mean()) == pytest.approx(3.0, rel=0.05)
    assert bool(((t["act_values"] >= 0.5) & (t["act_values"] <= 1.5)).all())
    parent = t["parent"]
    assert parent[:4].tolist() == [-1] * 4 and parent[4:16].tolist() == sum(
        [[i] * 3 for i in range(4)], []
    )
    kids = parent >= 0
    assert not bool(((a[:, kids] > 0) & ~(a[:, parent[kids]] > 0)).any())  # never without parent
    # the same seed gives the same store
    path2 = synthesize(cfg, tmp_path / "s2", shard_rows=1500)
    assert torch.equal(load_file(str(path2))["act_values"], t["act_values"])


def test_zipf_firing_probabilities():
    p, parent = firing_probabilities(SynthConfig(n_features=100, mean_active=5.0, firing="zipf"))
    assert float(p.sum()) == pytest.approx(5.0, rel=1e-5)
    torch.testing.assert_close(p[:10] * torch.arange(1, 11), p[0].expand(10))  # p_i ~ 1/(i+1)
    assert bool((parent == -1).all())


def _direct(truth, W_dec):
    d = truth / truth.norm(dim=1, keepdim=True)
    w = W_dec / W_dec.norm(dim=1, keepdim=True)
    return d @ w.t()


def test_metrics_equal_direct_computation(tmp_path):
    cfg = SynthConfig(rows=3000, d_in=16, n_features=40, mean_active=3.0, parents=3, children=2)
    path = synthesize(cfg, tmp_path / "s")
    truth = read_ground_truth(path)
    st = ActivationStore(tmp_path / "s")
    sae = SAE(SAEConfig(d_in=16, d_sae=64, arch="relu"), seed=1)
    with torch.no_grad():  # plant 30 of the 40 true directions (noisy) in the decoder and encoder
        noisy = truth.directions[:30] + 0.05 * torch.randn(30, 16)
        sae.W_dec[:30] = noisy
        sae.W_enc[:, :30] = truth.directions[:30].t()
        sae.b_dec.zero_()
        sae.b_enc.fill_(-0.1)
    m = ground_truth_metrics(sae, truth, st, batch_size=700)
    cos = _direct(truth.directions, sae.W_dec.detach())
    assert m.mmcs_truth == pytest.approx(float(cos.max(1).values.mean()), abs=1e-6)
    assert m.mmcs_sae == pytest.approx(float(cos.max(0).values.mean()), abs=1e-6)
    assert m.recovered == pytest.approx(float((cos.max(1).values >= 0.9).float().mean()))
    assert 0.6 < m.recovered <= 0.75
    # MCC by hand: Pearson correlation per feature with its matched latent, mean over features
    x = torch.cat(list(st.iter_sequential(4096)))
    a = torch.zeros(3000, 40, dtype=torch.float64)
    a[truth.act_rows, truth.act_features] = truth.act_values.double()
    f = sae.encode(x).detach().double()[:, cos.argmax(1)]
    corrs = []
    for j in range(40):
        c = np.corrcoef(a[:, j].numpy(), f[:, j].numpy())[0, 1]
        corrs.append(0.0 if not np.isfinite(c) else c)
    assert m.mcc == pytest.approx(float(np.mean(corrs)), abs=1e-6)
    assert m.rows == 3000 and m.absorption is not None and 0 <= m.absorption <= 1
    # absorption by hand: parent and a child on, the parent's matched latent off
    on, lat = a > 0, f > 0
    both = off = 0
    for p in range(3):
        kids = (truth.parent == p).nonzero().reshape(-1)
        rows = on[:, p] & on[:, kids].any(1)
        both += int(rows.sum())
        off += int((rows & ~lat[:, p]).sum())
    assert m.absorption == pytest.approx(off / both)


def test_directions_only_and_bad_files(tmp_path):
    truth = torch.randn(10, 8)
    np.save(tmp_path / "t.npy", truth.numpy())
    sae = SAE(SAEConfig(d_in=8, d_sae=10, arch="relu"), seed=0)
    with torch.no_grad():
        sae.W_dec.copy_(truth)
    m = ground_truth_metrics(sae, read_ground_truth(tmp_path / "t.npy"))
    assert m.recovered == 1.0 and m.mmcs_truth == pytest.approx(1.0) and m.mcc is None
    with pytest.raises(RlsaeError, match="not found"):
        read_ground_truth(tmp_path / "missing.npy")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(RlsaeError, match="cannot be read"):
        read_ground_truth(tmp_path / "bad.npy")
    with pytest.raises(RlsaeError, match="d_in=5"):
        ground_truth_metrics(sae, GroundTruth(torch.randn(3, 5)))


def test_cli_synth_and_eval_ground_truth(tmp_path, capsys, run_cli):
    code, out, err = run_cli(
        "acts", "synth", "--out", tmp_path / "s", "--rows", 4000, "--d-in", 16,
        "--n-features", 32, "--mean-active", 2, "--json",
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(out)
    assert res["rows"] == 4000 and res["ground_truth"] == str(
        tmp_path / "s" / "ground_truth.safetensors"
    )
    code, out, err = run_cli(
        "sae", "train", "--acts", tmp_path / "s", "--out", tmp_path / "sae",
        "--arch", "batchtopk", "--d-sae", 32, "--k", 2, "--steps", 300, "--batch-size", 256,
        "--lr", 3e-3, "--json",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli(
        "sae", "eval", "--sae", tmp_path / "sae", "--acts", tmp_path / "s",
        "--ground-truth", tmp_path / "s" / "ground_truth.safetensors", "--json",
    )  # fmt: skip
    assert code == 0, err
    gt = json.loads(out)["ground_truth"]
    assert gt["format"] == "rlsae.ground_truth_metrics" and gt["rows"] == 4000
    assert gt["recovered"] >= 0.9 and gt["mcc"] > 0.7


@pytest.mark.parametrize(
    "args,msg",
    [
        (("--firing", "normal"), "firing: expected poisson or zipf"),
        (("--mean-active", 0), "mean_active"),
        (("--rows", 0), "rows"),
        (("--parents", 20, "--children", 4, "--n-features", 64), "more than n_features=64"),
        (("--child-prob", 1.5), "child_prob"),
    ],
)
def test_synth_bad_settings_one_line(tmp_path, run_cli, args, msg):
    code, out, err = run_cli("acts", "synth", "--out", tmp_path / "s", *args)
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


def test_eval_ground_truth_refusals(tmp_path, capsys, run_cli):
    synthesize(SynthConfig(rows=500, d_in=8, n_features=12), tmp_path / "s")
    SAE(SAEConfig(d_in=8, d_sae=16, k=2), seed=0).save(tmp_path / "sae")
    np.save(tmp_path / "wide.npy", np.zeros((4, 9), dtype=np.float32))
    for truth, msg in ((tmp_path / "nope.npy", "not found"), (tmp_path / "wide.npy", "d_in=9")):
        code, _, err = run_cli(
            "sae", "eval", "--sae", tmp_path / "sae", "--acts", tmp_path / "s",
            "--ground-truth", truth, "--any-hook",
        )  # fmt: skip
        assert code == 2 and msg in err, err
        assert not (tmp_path / "sae" / "feature_stats.safetensors").exists()
