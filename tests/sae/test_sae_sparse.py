"""The fast TopK path against a dense reference with plain autograd: outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from rlsae.sae.sparse import _group_size, naive_topk_forward, topk_forward, topk_select


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("with_aux", [False, True])
@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("n", [80, 512])  # 512 latents, k 6: the grouped TopK selection runs
def test_sparse_matches_dense_reference(tied, with_aux, apply_b_dec, n):
    g = torch.Generator().manual_seed(7)
    B, d, k = 48, 12, 6
    x = torch.randn(B, d, generator=g, dtype=torch.float64)
    W_dec = torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_()
    W_enc = None if tied else torch.randn(d, n, generator=g, dtype=torch.float64).requires_grad_()
    b_enc = (0.3 * torch.randn(n, generator=g, dtype=torch.float64)).requires_grad_()
    b_dec = torch.randn(d, generator=g, dtype=torch.float64).requires_grad_()
    dead = torch.tensor([1, 5, 6, 33, 40, 41, 70, 79]) if with_aux else None
    assert (_group_size(n, k) > 1) == (n == 512)
    results = []
    for fn in (topk_forward, naive_topk_forward):
        enc = W_dec.t() if tied else W_enc
        recon, vals, idx, aux = fn(x, enc, b_enc, W_dec, b_dec, k, dead, 5, apply_b_dec)
        # a loss that uses every output, with weights so no gradient is trivially symmetric
        loss = (recon - x).pow(2).sum() + 0.3 * vals.pow(3).sum()
        if with_aux:
            loss = loss + 0.7 * (aux - (x - recon).detach()).pow(2).sum()
        else:
            assert aux.numel() == 0
        order = idx.argsort(dim=-1)  # compare latents in index order
        idx, vals = idx.gather(-1, order), vals.gather(-1, order)
        params = [p for p in (W_enc, b_enc, W_dec, b_dec) if p is not None]
        results.append((recon, vals, idx, aux, torch.autograd.grad(loss, params)))
    (r1, v1, i1, a1, g1), (r2, v2, i2, a2, g2) = results
    assert torch.equal(i1, i2)
    torch.testing.assert_close(r1, r2)
    torch.testing.assert_close(v1, v2)
    torch.testing.assert_close(a1, a2)
    if with_aux:
        assert a1.abs().sum() > 0  # the aux path really ran
    for ga, gb in zip(g1, g2, strict=True):
        assert gb.abs().sum() > 0
        torch.testing.assert_close(ga, gb)


def test_sparse_matches_model_encode_decode():
    from rlsae.sae import SAE, SAEConfig

    sae = SAE(SAEConfig(d_in=16, d_sae=64, k=5), seed=3)
    with torch.no_grad():
        sae.b_enc.uniform_(-0.1, 0.1)
        sae.b_dec.normal_()
    x = torch.randn(20, 16)
    recon, vals, idx, _ = topk_forward(x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, 5)
    torch.testing.assert_close(recon, sae(x))
    dense = torch.zeros(20, 64).scatter_(1, idx, vals)
    torch.testing.assert_close(dense, sae.encode(x))


def test_blockwise_encoder_equals_one_block(monkeypatch):
    import rlsae.sae.sparse as sparse

    g = torch.Generator().manual_seed(11)
    x = torch.randn(100, 8, generator=g, dtype=torch.float64)
    W_dec = torch.randn(40, 8, generator=g, dtype=torch.float64)
    W_enc = torch.randn(8, 40, generator=g, dtype=torch.float64)
    b_enc, b_dec = (
        torch.randn(40, generator=g, dtype=torch.float64),
        torch.randn(8, generator=g, dtype=torch.float64),
    )
    dead = torch.arange(0, 40, 3)
    whole = topk_forward(x, W_enc, b_enc, W_dec, b_dec, 4, dead, 6)
    monkeypatch.setattr(sparse, "CHUNK", 16)  # 100 rows -> 7 blocks, the last one short
    blocks = topk_forward(x, W_enc, b_enc, W_dec, b_dec, 4, dead, 6)
    for a, b in zip(whole, blocks, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("B", "n", "k"),
    [(64, 2048, 32), (64, 16384, 32), (50, 4096, 50), (33, 2048, 64), (40, 512, 8), (9, 100, 3)],
)
def test_topk_select_is_torch_topk(B, n, k):
    """The grouped selection picks the same entries as torch.topk (same column set per row)."""
    g = torch.Generator().manual_seed(n + k)
    pre = torch.randn(B, n, generator=g)
    pre[0] = -pre[0].abs()  # a row with no positive entry
    pre[1, : n // 2] += 10.0  # a row whose top entries crowd into the first half
    vals, idx = topk_select(pre, k)
    ref_vals, ref_idx = pre.topk(k, dim=-1)
    assert torch.equal(idx.sort(-1).values, ref_idx.sort(-1).values)
    assert torch.equal(vals, pre.gather(1, idx))


def test_topk_select_with_ties_keeps_the_top_values():
    """Heavily tied rows (small integers): any valid top-k, i.e. the same multiset of values,
    k distinct columns, each value read from its column."""
    g = torch.Generator().manual_seed(0)
    B, n, k = 32, 2048, 32
    assert _group_size(n, k) > 1
    pre = torch.randint(0, 6, (B, n), generator=g).float()
    vals, idx = topk_select(pre, k)
    assert torch.equal(vals.sort(-1).values, pre.topk(k, dim=-1).values.sort(-1).values)
    assert torch.equal(pre.gather(1, idx), vals)
    assert all(len(set(row.tolist())) == k for row in idx)
