"""The per-feature scan against brute force over the full activation matrix."""

from __future__ import annotations

import numpy as np
import torch

from rlsae.sae import SAE, ActivationStore, ActivationWriter, SAEConfig
from rlsae.viewer.scan import ScanConfig, decoder_neighbours, gather_activations, scan_features


def _store(tmp_path, rows=700, d=8, groups=23, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, d, generator=g)
    grp = np.random.default_rng(seed).integers(0, groups, rows)  # not contiguous
    with ActivationWriter(tmp_path / "acts", d, shard_rows=256) as w:
        w.append(x, {"episode": grp})
    return ActivationStore(tmp_path / "acts"), x, grp


def test_scan_matches_brute_force(tmp_path):
    store, x, grp = _store(tmp_path)
    sae = SAE(SAEConfig(d_in=8, d_sae=12, arch="topk", k=3), seed=1)
    with torch.no_grad():
        sae.b_enc[5] = -100.0  # feature 5 can never be chosen with a positive value: dead
    cfg = ScanConfig(
        top=5, batch_size=100, hist_bins=4, intervals=((0.0, 0.5),), samples_per_interval=3
    )
    scan = scan_features(sae, store, grp, cfg)
    with torch.no_grad():
        a = sae.encode(x).numpy()
    assert scan.rows == 700
    np.testing.assert_array_equal(scan.firing_counts, (a > 0).sum(0))
    np.testing.assert_allclose(scan.max_act, a.max(0), rtol=1e-6)
    assert scan.dead[5] and scan.dead.sum() == (a.max(0) <= 0).sum()
    for f in range(12):
        col = a[:, f]
        # brute force: best row of each group, groups ranked by their best activation
        best = {}
        for r in np.nonzero(col > 0)[0]:
            if grp[r] not in best or col[r] > col[best[grp[r]]]:
                best[grp[r]] = r
        ranked = sorted(best.values(), key=lambda r: -col[r])[:5]
        got = [r for r in scan.top_rows[f] if r >= 0]
        np.testing.assert_allclose(col[got], col[ranked], rtol=1e-6)
        assert len({grp[r] for r in got}) == len(got)  # distinct episodes
        if col.max() > 0:
            counts, _ = np.histogram(col[col > 0], bins=4, range=(0, col.max()))
            np.testing.assert_array_equal(scan.hist[f], counts)
            rows = scan.interval_rows[f, 0]
            rows = rows[rows >= 0]
            n_in = ((col > 0) & (col <= 0.5 * col.max())).sum()
            assert len(rows) == min(3, n_in)
            assert np.all((col[rows] > 0) & (col[rows] <= 0.5 * col.max()))
    recon = sae.decode(torch.as_tensor(a)).detach().numpy()
    fvu = ((x.numpy() - recon) ** 2).sum() / ((x.numpy() - x.numpy().mean(0)) ** 2).sum()
    assert abs(scan.metrics["fvu"] - fvu) < 1e-4
    assert abs(scan.metrics["l0"] - (a > 0).sum(1).mean()) < 1e-9


def test_scan_without_groups_is_plain_topk(tmp_path):
    store, x, _ = _store(tmp_path, rows=300)
    sae = SAE(SAEConfig(d_in=8, d_sae=6, arch="relu"), seed=2)
    scan = scan_features(sae, store, None, ScanConfig(top=7, batch_size=64))
    a = sae.encode(x).detach().numpy()
    for f in range(6):
        np.testing.assert_allclose(scan.top_vals[f], np.sort(a[:, f])[::-1][:7], rtol=1e-6)


def test_gather_and_neighbours(tmp_path):
    store, x, _ = _store(tmp_path, rows=300)
    sae = SAE(SAEConfig(d_in=8, d_sae=6, arch="relu"), seed=2)
    a = sae.encode(x).detach().numpy()
    rows = np.array([299, 0, 150, 0, 7])
    feats = np.array([1, 2, 5, 0, 3])
    got = gather_activations(sae, store, rows, feats, batch_size=64)
    np.testing.assert_allclose(got, a[rows, feats], rtol=1e-6)
    w = torch.eye(4)
    w[3] = torch.tensor([1.0, 1.0, 0, 0])
    idx, cos = decoder_neighbours(w, 2, chunk=3)
    assert set(idx[3]) == {0, 1} and np.allclose(cos[3], 2**-0.5)
    assert idx[0, 0] == 3


def test_round_relative_keeps_digits_of_the_scale():
    from rlsae.llm.viewer_source import round_relative

    v = np.array([0.0123456, 0.0000123, 123.456, -0.5])
    got = round_relative(v, np.array([0.0123456, 0.0123456, 500.0, 2.0]))
    assert got.tolist() == [0.01235, 0.00001, 123.5, -0.5]
    assert [repr(x) for x in got.tolist()] == ["0.01235", "1e-05", "123.5", "-0.5"]
