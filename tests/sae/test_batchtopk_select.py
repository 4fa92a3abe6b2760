"""BatchTopK's threshold search and its native kernels against plain torch computations: the
short rows' gather, the radix k-th largest, the compaction, the whole selection (rows keeping
far more than 2k entries, ties at the threshold, fewer positives than k * rows), and the
residual and latent grouping that skip entries of value 0."""

from __future__ import annotations

import pytest
import torch

from rlsae.sae._fast import _native
from rlsae.sae._fast.loss import _encode_batchtopk

from .test_sparse import _force_path


@pytest.fixture
def native(monkeypatch):
    _force_path("native", monkeypatch)
    return _native


def _gathered(g_vals, g_idx, g_counts, s):
    c = int(g_counts[s])
    return g_vals[s, :c], g_idx[s, :c]


@pytest.mark.parametrize("t0", [0.0, 0.7, 2.5])
@pytest.mark.parametrize("with_bias", [True, False])
def test_gather_ge_matches_torch(native, t0, with_bias):
    """Each listed row's entries v >= t0 and v > 0 of pre (+ bias), in column order."""
    g = torch.Generator().manual_seed(1)
    pre = torch.randn(37, 300, generator=g)
    bias = torch.randn(300, generator=g) if with_bias else None
    rows = torch.tensor([36, 0, 5, 17, 18, 2])
    g_vals, g_idx, g_counts = native.gather_ge(pre, bias, rows, t0)
    full = pre + bias if bias is not None else pre
    for s, r in enumerate(rows.tolist()):
        want = ((full[r] >= t0) & (full[r] > 0)).nonzero().reshape(-1)
        v, i = _gathered(g_vals, g_idx, g_counts, s)
        assert torch.equal(i, want)
        assert torch.equal(v, full[r, want])
    assert native.gather_ge(pre, bias, rows[:0], t0)[2].numel() == 0


@pytest.mark.parametrize("kind", ["normal", "relu", "ties", "equal", "tiny", "inf"])
def test_kth_largest_matches_sort(native, kind):
    """The radix select equals the sorted values' k-th, for every k tried, with and without
    gathered rows, on continuous values, many ties, all-equal values, subnormals and infinities."""
    g = torch.Generator().manual_seed(2)
    a = torch.randn(5000, generator=g)
    if kind == "relu":
        a = a.relu()
    elif kind == "ties":
        a = torch.randint(-3, 4, (5000,), generator=g).float() / 4
    elif kind == "equal":
        a = torch.full((5000,), 0.375)
    elif kind == "tiny":
        a = a * 1e-41  # subnormal floats
    elif kind == "inf":
        a[::97] = float("inf")
        a[5::89] = float("-inf")
    rows = torch.randn(3, 40, generator=g).relu()
    counts = torch.tensor([40, 0, 17])
    every = torch.cat([a, rows[0], rows[2, :17]]).sort(descending=True).values
    for k in [1, 2, 17, 1000, 2500, 4999, 5000]:
        assert native.kth_largest(a, k) == float(a.sort(descending=True).values[k - 1])
    for k in [1, 57, 3000, every.numel()]:
        assert native.kth_largest(a, k, rows, counts) == float(every[k - 1])


def test_batchtopk_assemble_matches_torch(native):
    """Each row's kept entries (v >= t, v > 0) from its candidates or its gathered row, in source
    order, then value-0 padding at distinct latents the row does not keep; the counts alone
    without an output width; a width below a row's count is refused."""
    g = torch.Generator().manual_seed(3)
    B, m, n = 12, 6, 40
    cand_v = torch.randn(B, m, generator=g).relu()
    cand_i = torch.stack([torch.randperm(n, generator=g)[:m] for _ in range(B)])
    pre = torch.randn(3, n, generator=g)
    rows = torch.tensor([4, 0, 11])
    g_vals, g_idx, g_counts = native.gather_ge(pre, None, torch.arange(3), 0.1)
    src = torch.full((B,), -1, dtype=torch.long)
    src[rows] = torch.arange(3)
    t = 0.4
    args = (cand_v, cand_i, src, g_vals, g_idx, g_counts, t, n)
    counts = native.batchtopk_assemble(*args, None)[2]
    w = int(counts.max()) + 3
    out_v, out_i, counts2 = native.batchtopk_assemble(*args, w)
    assert torch.equal(counts, counts2)
    for r in range(B):
        if src[r] >= 0:
            v, i = _gathered(g_vals, g_idx, g_counts, int(src[r]))
        else:
            v, i = cand_v[r], cand_i[r]
        keep = (v >= t) & (v > 0)
        c = int(keep.sum())
        assert int(counts[r]) == c
        assert torch.equal(out_v[r, :c], v[keep]) and torch.equal(out_i[r, :c], i[keep])
        assert not out_v[r, c:].any()
        assert len(set(out_i[r].tolist())) == w  # padding: latents the row does not keep
        assert int(out_i[r].min()) >= 0 and int(out_i[r].max()) < n
    with pytest.raises(ValueError, match="more entries than the output width"):
        native.batchtopk_assemble(*args, int(counts.max()) - 1)


def _block(case, g):
    """(x, W_enc, b_enc, b_dec, k) float32 for a selection case."""
    B, d, n, k = 64, 16, 256, 4
    x = torch.randn(B, d, generator=g)
    W = torch.randn(d, n, generator=g) / 4
    b_enc = 0.1 * torch.randn(n, generator=g)
    if case == "skew":  # two rows hold far more than 2k = 8 of the batch's kept entries
        x[:2] *= 6.0
    elif case == "ties":  # small integers: exact products and sums, many equal values at t
        x = torch.randint(-2, 3, (B, d), generator=g).float()
        W = torch.randint(-1, 2, (d, n), generator=g).float()
        b_enc = torch.randint(-2, 3, (n,), generator=g).float() / 4
    elif case == "few":  # fewer than k * rows positive pre-activations
        b_enc = torch.full((n,), -4.0)
    elif case == "fractional":
        k = 2.5
    return x, W, b_enc, torch.zeros(d), k


def _dense(vals, idx, n):
    return torch.zeros(idx.shape[0], n, dtype=vals.dtype).scatter_add(1, idx, vals)


def _reference(x, W, b_enc, k):
    """Every ReLU'd pre-activation >= the (k * rows)-th largest of the batch (ties kept), in
    float64 (exact for the integer case)."""
    acts = (x.double() @ W.double() + b_enc.double()).relu()
    keep = max(1, int(k * x.shape[0]))
    t = acts.flatten().sort(descending=True).values[keep - 1]
    return acts * (acts >= t)


@pytest.mark.parametrize("case", ["skew", "ties", "few", "fractional", "plain"])
@pytest.mark.parametrize("path", ["native", "numba", "torch"])
def test_selection_keeps_reference_entries(case, path, monkeypatch):
    """The whole selection, native or torch, keeps exactly the reference's entries: rows holding
    many more than 2k kept entries, ties at the threshold (all kept), fewer positives than
    k * rows (every positive kept)."""
    _force_path(path, monkeypatch)
    g = torch.Generator().manual_seed(6)
    x, W, b_enc, b_dec, k = _block(case, g)
    n = W.shape[1]
    with torch.no_grad():
        vals, idx, _, _ = _encode_batchtopk(x, W, b_enc, b_dec, True, k, None, 0)
    ref = _reference(x, W, b_enc, k)
    kept = ref > 0
    if case == "skew":
        assert int(kept.sum(1).max()) > 8 * 2 * k  # far beyond the first candidates
    if case == "ties":
        assert int(kept.sum()) > int(k * x.shape[0])  # ties at t: more than k * rows kept
    if case == "few":
        assert 0 < int(kept.sum()) < int(k * x.shape[0])
    dense = _dense(vals, idx, n)
    torch.testing.assert_close(dense.double(), ref, rtol=1e-6, atol=1e-6)
    assert torch.equal(dense > 0, kept)
    assert all(len(set(row)) == idx.shape[1] for row in idx.tolist())  # no latent twice
    if path == "native":  # kept entries first, then value-0 padding
        c = (vals > 0).sum(1, keepdim=True)
        assert torch.equal(vals > 0, torch.arange(vals.shape[1]) < c)
        assert vals.shape[1] == min(n, max(8, -(-int(c.max()) // 8) * 8))


def test_selection_is_deterministic_across_threads(native):
    """The native selection gives the same bits whatever the thread count and on a repeat."""
    g = torch.Generator().manual_seed(8)
    x, W, b_enc, b_dec, k = _block("skew", g)
    x = x.repeat(40, 1)  # 2560 rows: the kernels split rows across threads
    threads = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2, 2):
            torch.set_num_threads(t)
            with torch.no_grad():
                outs.append(_encode_batchtopk(x, W, b_enc, b_dec, True, k, None, 0)[:2])
    finally:
        torch.set_num_threads(threads)
    for v, i in outs[1:]:
        assert torch.equal(v, outs[0][0]) and torch.equal(i, outs[0][1])


def test_residual_skips_zero_entries(native):
    """Entries of value 0 decode to nothing and get gdot 0; the rest as a float64 computation."""
    g = torch.Generator().manual_seed(9)
    B, d, n, w = 70, 24, 90, 13
    x, W, b = torch.randn(B, d, generator=g), torch.randn(n, d, generator=g), torch.randn(d)
    idx = torch.stack([torch.randperm(n, generator=g)[:w] for _ in range(B)])
    vals = torch.rand(B, w, generator=g) * (torch.rand(B, w, generator=g) > 0.5)
    vals[0] = 0.0  # a row without entries
    e, sse, gdot = native.residual(x, W, b, idx, vals)
    Wd = W.double()
    e_ref = (vals.double().unsqueeze(-1) * Wd[idx]).sum(1) + b.double() - x.double()
    torch.testing.assert_close(e.double(), e_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sse.double(), e_ref.pow(2).sum(1), rtol=1e-5, atol=1e-4)
    gd_ref = (Wd[idx] * e_ref.unsqueeze(1)).sum(-1) * (vals > 0)
    torch.testing.assert_close(gdot.double(), gd_ref, rtol=1e-5, atol=1e-4)
    assert bool((gdot[vals == 0] == 0).all())


def test_group_by_latent_leaves_out_zero_entries(native):
    """Entries whose two values are 0 are left out (offsets[n] counts the rest); the products
    over the grouping equal the dense S^T dense and G^T x, and the column sums of G."""
    g = torch.Generator().manual_seed(10)
    B, k, ka, n, d = 50, 9, 4, 40, 7
    idx = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(B)])
    dec = torch.randn(B, k, generator=g) * (torch.rand(B, k, generator=g) > 0.4)
    enc = torch.randn(B, k, generator=g) * (dec != 0)
    enc[0, 0] = 0.5 if dec[0, 0] == 0 else enc[0, 0]  # an entry with only its enc value
    a_idx = torch.randint(0, n, (B, ka), generator=g)
    a_dec = torch.randn(B, ka, generator=g).relu()
    a_enc = torch.randn(B, ka, generator=g) * (a_dec > 0)
    offsets, enc_rows, dec_rows, dec_s, enc_s, sums = native.group_by_latent(
        idx, dec, enc, n, (a_idx, a_dec, a_enc)
    )
    live = int(((dec != 0) | (enc != 0)).sum() + ((a_dec != 0) | (a_enc != 0)).sum())
    assert int(offsets[n]) == live == enc_rows.numel() == dec_s.numel()
    dense_dec, xx = torch.randn(2 * B, d, generator=g), torch.randn(B, d, generator=g)
    bag = torch.nn.functional.embedding_bag
    got_dec = bag(dec_rows, dense_dec, offsets[:n], mode="sum", per_sample_weights=dec_s)
    got_enc = bag(enc_rows, xx, offsets[:n], mode="sum", per_sample_weights=enc_s)
    S = torch.zeros(2 * B, n, dtype=torch.float64)
    S[:B].scatter_add_(1, idx, dec.double())
    S[B:].scatter_add_(1, a_idx, a_dec.double())
    G = torch.zeros(B, n, dtype=torch.float64).scatter_add_(1, idx, enc.double())
    G.scatter_add_(1, a_idx, a_enc.double())
    torch.testing.assert_close(got_dec.double(), S.t() @ dense_dec.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_enc.double(), G.t() @ xx.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sums.double(), G.sum(0), rtol=1e-5, atol=1e-5)
