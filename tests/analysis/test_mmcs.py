"""MMCS: a hand-worked example, chunking, top-k and Hungarian matching."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlsae.analysis.mmcs import FeatureMatch, compare_dictionaries
from rlsae.errors import RlsaeError


def test_hand_worked_example():
    A = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    B = torch.tensor([[3.0, 0.0], [1.0, -1.0]])
    r = compare_dictionaries(A, B, top_k=2)
    s = 1 / math.sqrt(2)
    # A->B maxima: a0: 1 (b0); a1: max(0, -s) = 0 (b0); a2: max(s, 0) = s (b0)
    assert r.result.mmcs_ab == pytest.approx((1 + 0 + s) / 3)
    # B->A maxima: b0: 1 (a0); b1: max(s, -s, 0) = s (a0)
    assert r.result.mmcs_ba == pytest.approx((1 + s) / 2)
    assert r.result.top_k == [
        FeatureMatch(feature=0, match=0, cosine=pytest.approx(1.0)),
        FeatureMatch(feature=2, match=0, cosine=pytest.approx(s)),
    ]


def test_chunked_equals_full_and_rotation_invariance():
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(300, 24, generator=g), torch.randn(170, 24, generator=g)
    full = compare_dictionaries(A, B, chunk=10_000)
    chunked = compare_dictionaries(A, B, chunk=7)
    assert full.result.mmcs_ab == pytest.approx(chunked.result.mmcs_ab, abs=1e-6)
    assert full.result.mmcs_ba == pytest.approx(chunked.result.mmcs_ba, abs=1e-6)
    assert torch.equal(full.argmax_ab, chunked.argmax_ab)
    Q, _ = torch.linalg.qr(torch.randn(24, 24, generator=g))
    rotated = compare_dictionaries(A @ Q, B @ Q)
    assert rotated.result.mmcs_ab == pytest.approx(full.result.mmcs_ab, abs=1e-5)


def test_permuted_copy_scores_one_and_hungarian_recovers_permutation():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(40, 16, generator=g)
    perm = torch.randperm(40, generator=g)
    B = A[perm] * (torch.rand(40, 1, generator=g) + 0.5)  # scaled rows: cosine ignores norms
    r = compare_dictionaries(A, B, top_k=5, hungarian=True)
    assert r.result.mmcs_ab == pytest.approx(1.0) and r.result.mmcs_ba == pytest.approx(1.0)
    assert r.result.hungarian_mean_cos == pytest.approx(1.0)
    inv = torch.argsort(perm)
    assert all(b == int(inv[a]) for a, b, _ in r.result.hungarian_pairs)


def test_hungarian_is_one_to_one_where_greedy_is_not():
    A = torch.tensor([[1.0, 0.0], [0.9, 0.1]])
    B = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    r = compare_dictionaries(A, B, hungarian=True)
    assert r.argmax_ab.tolist() == [0, 0]  # both of A pick b0 greedily
    assert sorted(b for _, b, _ in r.result.hungarian_pairs) == [0, 1]


def test_width_mismatch_is_an_error():
    with pytest.raises(RlsaeError, match="different spaces"):
        compare_dictionaries(torch.randn(4, 8), torch.randn(4, 9))


def test_top_k_negative_refused_and_zero_lists_none():
    with pytest.raises(RlsaeError, match="--top-k must be a whole number >= 0, got -3"):
        compare_dictionaries(torch.eye(3), torch.eye(3), top_k=-3)
    assert compare_dictionaries(torch.eye(3), torch.eye(3), top_k=0).result.top_k == []


def _cli(capsys, argv):
    from rlsae.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def test_cli_top_k_negative_one_line_before_loading(tmp_path, capsys):
    missing = [str(tmp_path / "a"), str(tmp_path / "b")]  # never opened: --top-k is checked first
    code, out, err = _cli(
        capsys, ["analyze", "mmcs", "--sae", missing[0], "--sae", missing[1], "--top-k", "-3"]
    )
    assert code == 2 and out == "" and err == "error: --top-k must be a whole number >= 0, got -3\n"
    code, out, err = _cli(capsys, ["analyze", "mmcs", "--sae", missing[0], "--sae", missing[1]])
    assert code == 2 and out == "" and err == f"error: SAE directory {missing[0]} not found\n"


def test_cli_json_is_the_mmcs_artifact(tmp_path, capsys):
    from rlsae.analysis.mmcs import MMCSResult
    from rlsae.sae import SAE, SAEConfig, load_sae

    dirs = []
    for i, d_sae in enumerate((6, 10)):
        SAE(SAEConfig(d_in=4, d_sae=d_sae, arch="relu"), seed=i).save(tmp_path / f"s{i}")
        dirs.append(str(tmp_path / f"s{i}"))
    code, out, _ = _cli(
        capsys,
        [
            "analyze",
            "mmcs",
            "--sae",
            dirs[0],
            "--sae",
            dirs[1],
            "--top-k",
            "3",
            "--json",
            "--hungarian",
        ],
    )
    assert code == 0
    res = MMCSResult.from_json(json.loads(out))
    ref = compare_dictionaries(load_sae(dirs[0]).W_dec, load_sae(dirs[1]).W_dec, 3).result
    assert res.mmcs_ab == pytest.approx(ref.mmcs_ab) and res.top_k == ref.top_k
    assert (res.sae_a, res.sae_b, res.n_a, res.n_b) == (dirs[0], dirs[1], 6, 10)
    assert res.hungarian_pairs is not None and len(res.hungarian_pairs) == 6
