"""The fast TopK path against a dense reference with plain autograd: outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from rlsae.sae._fast.topk import _group_size, topk_select

from .reference import naive_topk_forward, topk_forward


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
    import rlsae.sae._fast.loss as loss

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
    monkeypatch.setattr(loss, "CHUNK", 16)  # 100 rows -> 7 blocks, the last one short
    blocks = topk_forward(x, W_enc, b_enc, W_dec, b_dec, 4, dead, 6)
    for a, b in zip(whole, blocks, strict=True):
        assert torch.equal(a, b)


def _assert_valid_topk(pre, vals, idx, k):
    """A valid top k: the same values as torch.topk, k distinct columns, each value read from
    its column (index sets may differ only where values tie)."""
    ref = pre.topk(k, dim=-1).values
    assert torch.equal(vals.sort(-1).values, ref.sort(-1).values)
    assert torch.equal(pre.gather(1, idx), vals)
    assert all(len(set(row.tolist())) == k for row in idx)


def _force_path(path: str, monkeypatch) -> None:
    """Route the step's kernels: "native" (C, float32; float64 goes on to numba), "numba" (the
    numba selection, torch elsewhere) or "torch" (pure torch)."""
    from rlsae.sae._fast import _native, _numba

    if path == "native" and _native.lib() is None:
        pytest.fail(f"the native kernels did not build: {_native.status()}")
    if path == "numba" and not _numba.AVAILABLE:
        pytest.fail("numba is not installed (it is a dependency)")
    if path != "native":
        monkeypatch.setattr(_native, "usable", lambda *tensors: False)
    if path == "torch":
        monkeypatch.setattr(_numba, "AVAILABLE", False)


@pytest.fixture(params=["native", "numba", "torch"])
def select_path(request, monkeypatch):
    """topk_select with the C kernel, the numba kernel and the pure-torch fallback."""
    _force_path(request.param, monkeypatch)
    return request.param


@pytest.mark.parametrize(
    ("B", "n", "k"),
    [(64, 2048, 32), (64, 16384, 32), (50, 4096, 50), (33, 2048, 64), (40, 512, 8), (9, 100, 3)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_select_is_torch_topk(B, n, k, dtype, select_path):
    """The grouped selection picks the same entries as torch.topk (same column set per row)."""
    g = torch.Generator().manual_seed(n + k)
    pre = torch.randn(B, n, generator=g, dtype=dtype)
    pre[0] = -pre[0].abs()  # a row with no positive entry
    pre[1, : n // 2] += 10.0  # a row whose top entries crowd into the first half
    pre[2] *= 1e30  # a row spanning a huge range
    vals, idx = topk_select(pre, k)
    _assert_valid_topk(pre, vals, idx, k)
    ref_idx = pre.topk(k, dim=-1).indices  # no ties in these rows: the same columns too
    # the encoder's bias, added inside the selection: the top k of pre + bias, pre untouched
    bias = torch.randn(n, generator=g, dtype=dtype)
    kept = pre.clone()
    vb, ib = topk_select(pre, k, bias=bias)
    assert torch.equal(pre, kept)
    _assert_valid_topk(pre + bias, vb, ib, k)
    assert torch.equal(idx.sort(-1).values, ref_idx.sort(-1).values)
    # leading dimensions: the same selection row by row
    v3, i3 = topk_select(pre.reshape(1, B, n), k)
    assert v3.shape == i3.shape == (1, B, k)
    assert torch.equal(i3[0], idx) and torch.equal(v3[0], vals)


@pytest.mark.parametrize("levels", [2, 6, 1000])
def test_topk_select_with_ties_keeps_the_top_values(levels, select_path):
    """Heavily tied rows (a few integer levels; also a row tied at its maximum): any valid top-k."""
    g = torch.Generator().manual_seed(levels)
    B, n, k = 64, 2048, 32
    assert _group_size(n, k) > 1
    pre = torch.randint(0, levels, (B, n), generator=g).float()
    pre[0] = 1.0  # every entry equal
    vals, idx = topk_select(pre, k)
    _assert_valid_topk(pre, vals, idx, k)


def test_topk_select_non_finite_rows_and_gradient(select_path):
    """NaN/inf rows take torch's path (same result as torch.topk); values carry gradient."""
    g = torch.Generator().manual_seed(3)
    pre = torch.randn(16, 2048, generator=g)
    pre[3, 100] = float("inf")
    pre[5, 7] = float("-inf")
    vals, idx = topk_select(pre, 32)
    assert 100 in idx[3].tolist()
    _assert_valid_topk(pre, vals, idx, 32)
    bias = torch.zeros(2048)
    bias[200] = float("inf")  # the bias makes every row non-finite: torch decides them all
    vb, ib = topk_select(pre, 32, bias=bias)
    assert all(200 in row.tolist() for row in ib)
    _assert_valid_topk(pre + bias, vb, ib, 32)
    pre[7, 9] = float("nan")  # torch.topk ranks NaN first; so does topk_select
    vals, idx = topk_select(pre, 32)
    assert 9 in idx[7].tolist() and vals[7].isnan().sum() == 1
    rest = torch.arange(16) != 7
    _assert_valid_topk(pre[rest], vals[rest], idx[rest], 32)
    leaf = torch.randn(16, 2048, generator=g, requires_grad=True)
    vals, idx = topk_select(leaf * 2, 32)
    vals.sum().backward()
    expected = torch.zeros(16, 2048).scatter_(1, idx, 2.0)
    assert torch.equal(leaf.grad, expected)


@pytest.mark.parametrize("path", ["native", "torch"])
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("with_aux", [False, True])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_topk_loss_matches_dense_reference(path, tied, with_aux, apply_b_dec, monkeypatch):
    """The training path (the loss terms straight from the forward; C kernels in float32) against
    the dense reference: the same squared errors, latents and gradients of a loss using all."""
    from rlsae.sae._fast import Workspace, topk_loss

    _force_path(path, monkeypatch)
    g = torch.Generator().manual_seed(5)
    B, d, n, k = 300, 24, 512, 6  # 300 rows: the kernels split them across threads
    x = torch.randn(B, d, generator=g)
    W_dec = torch.randn(n, d, generator=g).requires_grad_()
    W_enc = None if tied else torch.randn(d, n, generator=g).requires_grad_()
    b_enc = (0.3 * torch.randn(n, generator=g)).requires_grad_()
    b_dec = torch.randn(d, generator=g).requires_grad_()
    dead = torch.arange(3, n, 7) if with_aux else None
    params = [p for p in (W_enc, b_enc, W_dec, b_dec) if p is not None]
    enc = W_dec.t() if tied else W_enc
    ws = Workspace()
    sse, aux_sse, vals, idx = topk_loss(x, enc, b_enc, W_dec, b_dec, k, dead, 5, apply_b_dec, ws)
    loss = 0.6 * sse + 0.3 * aux_sse + 0.1 * vals.pow(3).sum()
    grads = torch.autograd.grad(loss, params)
    # reference, in float64
    p64 = [p.detach().double().requires_grad_() for p in params]
    W_enc64 = p64[1].t() if tied else p64[0]
    b_enc64, W_dec64, b_dec64 = p64[-3], p64[-2], p64[-1]
    recon, v_ref, i_ref, aux = naive_topk_forward(
        x.double(), W_enc64, b_enc64, W_dec64, b_dec64, k, dead, 5, apply_b_dec
    )
    sse_ref = (recon - x.double()).pow(2).sum()
    aux_ref = (aux - (x.double() - recon).detach()).pow(2).sum() if with_aux else 0.0 * sse_ref
    loss_ref = 0.6 * sse_ref + 0.3 * aux_ref + 0.1 * v_ref.pow(3).sum()
    grads_ref = torch.autograd.grad(loss_ref, p64)
    order = idx.argsort(dim=-1)
    assert torch.equal(idx.gather(-1, order), i_ref)
    torch.testing.assert_close(vals.gather(-1, order).double(), v_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sse.double(), sse_ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(aux_sse.double(), aux_ref, rtol=1e-5, atol=1e-4)
    if with_aux:
        assert aux_sse > 0
    else:
        assert aux_sse == 0
    for ga, gb in zip(grads, grads_ref, strict=True):
        assert gb.abs().sum() > 0
        # float32 sums over 300 rows: within 1e-5 of the gradient's scale
        torch.testing.assert_close(ga.double(), gb, rtol=1e-3, atol=1e-5 * float(gb.abs().max()))


def test_topk_loss_workspace_lease():
    """The residual buffer is leased from the forward to the backward: a second forward before
    the first backward gets a fresh buffer, so both backwards see their own residual."""
    from rlsae.sae._fast import Workspace, topk_loss

    g = torch.Generator().manual_seed(9)
    B, d, n, k = 64, 16, 128, 4
    W_dec = torch.randn(n, d, generator=g).requires_grad_()
    W_enc = torch.randn(d, n, generator=g).requires_grad_()
    b_enc, b_dec = torch.zeros(n, requires_grad=True), torch.zeros(d, requires_grad=True)
    xs = [torch.randn(B, d, generator=g) for _ in range(2)]

    def grads(ws, interleave):
        outs = [topk_loss(x, W_enc, b_enc, W_dec, b_dec, k, workspace=ws)[0] for x in xs]
        if not interleave:  # one at a time: forward, backward, forward, backward
            outs = []
            res = []
            for x in xs:
                sse = topk_loss(x, W_enc, b_enc, W_dec, b_dec, k, workspace=ws)[0]
                res.append(torch.autograd.grad(sse, [W_dec, W_enc]))
            return res
        return [torch.autograd.grad(o, [W_dec, W_enc]) for o in outs]

    ref = grads(None, interleave=False)
    for interleave in (False, True):
        for got, want in zip(grads(Workspace(), interleave), ref, strict=True):
            for a, b in zip(got, want, strict=True):
                assert torch.equal(a, b)


def test_native_build_off_and_missing_compiler(monkeypatch, tmp_path):
    """RLSAE_NATIVE=0 and a missing compiler turn the kernels off with the reason; a build goes
    to the cache directory, keyed by source, compiler, flags and CPU."""
    import os
    import tempfile

    from rlsae.sae._fast import _native

    monkeypatch.setenv("RLSAE_NATIVE", "0")
    assert _native._build() == (None, "off (RLSAE_NATIVE=0)")
    monkeypatch.delenv("RLSAE_NATIVE")
    monkeypatch.setenv("CC", "no-such-compiler-here")
    lib, why = _native._build()
    assert lib is None and "no C compiler" in why
    monkeypatch.delenv("CC")
    monkeypatch.setenv("RLSAE_CACHE", str(tmp_path))
    lib, why = _native._build()
    assert lib is not None and why.startswith("on (")
    built = list((tmp_path / "kernels").glob("rlsae_kernels_*.so"))
    assert len(built) == 1 and str(built[0]) in why
    assert not list((tmp_path / "kernels").glob("tmp*"))  # no half-written library left
    # a cache that cannot be written (a read-only home): a per-user temporary directory instead
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    monkeypatch.setenv("RLSAE_CACHE", str(blocked))
    for name in ("own", "shared"):
        (tmp_path / name).mkdir()
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "own"))
    fallback = _native._cache_dir()
    assert fallback == tmp_path / "own" / f"rlsae-kernels-{os.getuid()}"
    assert fallback.stat().st_mode & 0o077 == 0 and fallback.stat().st_uid == os.getuid()
    # ... but never one that others can write to
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "shared"))
    shared = tmp_path / "shared" / f"rlsae-kernels-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)
    assert _native._cache_dir() is None
    assert _native._build() == (None, "off (no writable cache directory for the compiled kernels)")


def test_native_guards(monkeypatch):
    """A library that computes nothing fails the self-test; a build without OpenMP is used only
    where torch runs on one thread; float64 and non-CPU tensors never go to the kernels."""
    from rlsae.sae._fast import _native

    class Inert:  # the entry points exist but do nothing
        def rlsae_openmp(self):
            return 0

        def residual_rows(self, *args):
            return None

        def select_rows(self, *args):
            return 0

    with pytest.raises(AssertionError, match="self-test failed"):
        _native._self_test(Inert())
    _native._self_test(_native.lib())  # the real one passes
    monkeypatch.setattr(_native, "lib", lambda: Inert())
    x = torch.zeros(4, 4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert not _native.usable(x)
        torch.set_num_threads(1)
        assert _native.usable(x)
        assert not _native.usable(x.double())
    finally:
        torch.set_num_threads(threads)
