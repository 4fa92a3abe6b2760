"""JumpReLU's sparse path (``rlsae.sae._fast.jumprelu_loss``): the training step's loss, outputs
and every gradient against a dense float64 reference with plain autograd, with the native
kernels and without; the candidate gather against a direct mask; the cut-over to the dense
path; and a resume that repeats the path choices bit for bit."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from rlsae.sae import SAE, TrainConfig, train_sae
from rlsae.sae._fast import _native
from rlsae.sae.step import TrainState, _jumprelu_terms
from rlsae.sae.train import init_jumprelu

from .conftest import superposition, write_store

jl = importlib.import_module("rlsae.sae._fast.jumprelu_loss")  # the module (the package
# exports its function under the same name)
D, N = 24, 96


def _cfg(**kw):
    base = dict(
        arch="jumprelu",
        d_sae=N,
        batch_size=128,
        steps=10,
        lr=3e-3,
        l0=0.05,
        l0_warmup_frac=0.0,
        bandwidth=0.05,
        init_threshold=0.05,
        dead_rows=100,
    )
    base.update(kw)
    return TrainConfig(**base)


def _state(cfg, dtype=torch.float32, tied=False, apply_b_dec=True):
    sae_cfg = cfg.resolve(D)[0]
    sae_cfg.tied = tied
    sae_cfg.apply_b_dec_to_input = apply_b_dec
    sae = SAE(sae_cfg, seed=1).to(dtype)
    init_jumprelu(sae, cfg)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # a trained-looking state: a spread of thresholds, biases, b_dec
        sae.threshold.copy_(torch.rand(N, generator=g, dtype=dtype) * 0.4 + 0.02)
        sae.b_enc.copy_(torch.randn(N, generator=g, dtype=dtype) * 0.1)
        sae.b_dec.copy_(torch.randn(D, generator=g, dtype=dtype) * 0.05)
        sae.W_dec.mul_(1 + torch.rand(N, 1, generator=g, dtype=dtype))
        if not tied:
            sae.W_enc.mul_(4.0)
    state = TrainState.new(sae, cfg, 10, 1e-3, 0)
    state.since_fired[::5] = 500  # every fifth latent dead (the pre-activation loss)
    return state


def _data(rows=300, dtype=torch.float32):
    x, _ = superposition(rows, d=D, n_true=48, p=0.1, seed=4)
    return x.to(dtype)


def _run(state, x, max_density):
    """The training step's loss terms and every gradient, with the cut-over at max_density."""
    old = jl.MAX_DENSITY
    jl.MAX_DENSITY = max_density
    try:
        out: dict[str, float] = {}
        x64 = x.double()
        tv = ((x64 - x64.mean(0)) ** 2).sum().to(x.dtype)
        loss, fvu, fired, l0 = _jumprelu_terms(state, x, tv, out)
        loss.backward()
    finally:
        jl.MAX_DENSITY = old
    grads = {n: p.grad.detach().clone() for n, p in state.sae.named_parameters()}
    state.sae.zero_grad(set_to_none=True)
    return float(loss.detach()), float(fvu.detach()), fired, l0, out, grads


def _reference(state, x):
    """Dense float64, plain autograd, written out here: no straight-through function of the
    library, the estimators as two surrogate terms whose gradients are the estimators'."""
    cfg = state.cfg
    sae = state.sae
    p = {n: q.detach().double().clone().requires_grad_() for n, q in sae.named_parameters()}
    W_dec = p["W_dec"]
    W_enc = W_dec.t() if sae.cfg.tied else p["W_enc"]
    t, bw = p["threshold"], cfg.bandwidth
    xd = x.double()
    x_in = xd - p["b_dec"] if sae.cfg.apply_b_dec_to_input else xd
    pre = x_in @ W_enc + p["b_enc"]
    above = (pre > t).double().detach()
    rect = (((pre - t) / bw).abs() < 0.5).double().detach()
    # value: z * H(z - t); gradient in z: H; in t: -(t / bw) rect (the straight-through)
    tt = t.detach()
    f = pre * above + (-(tt / bw) * rect) * (t - tt)
    recon = f @ W_dec + p["b_dec"]
    mse = (recon - xd).pow(2).sum(-1).mean()
    if cfg.sparsity_loss == "step":  # value: H; gradient in t only: -(1 / bw) rect
        sparsity = (above + (-(1 / bw) * rect) * (t - tt)).sum(-1).mean()
    else:
        sparsity = torch.tanh(cfg.tanh_scale * f * W_dec.norm(dim=1)).sum(-1).mean()
    loss = mse + cfg.l0 * sparsity
    dead = state.since_fired >= cfg.dead_rows
    if cfg.pre_act_loss is not None:
        gap = (t[dead] - pre[:, dead]).relu()
        loss = loss + cfg.pre_act_loss * (gap * W_dec[dead].norm(dim=1)).sum(-1).mean()
    loss.backward()
    fvu = (recon - xd).pow(2).sum() / ((xd - xd.mean(0)) ** 2).sum()
    grads = {n: q.grad for n, q in p.items()}
    loss, fvu = float(loss.detach()), float(fvu.detach())
    return loss, fvu, (above > 0).any(0), float(above.sum()) / x.shape[0], grads


def _native_off(monkeypatch):
    monkeypatch.setattr(_native, "usable", lambda *t: False)


@pytest.mark.parametrize("path", ["sparse", "dense"])
@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"sparsity_loss": "tanh"},
        {"pre_act_loss": 0.3},
        {"tied": True},
        {"apply_b_dec": False},
    ],
)
def test_both_paths_equal_dense_float64_reference(monkeypatch, path, native, kw):
    """Loss, FVU, L0, the fired latents and every parameter's gradient of the training step,
    on the sparse path (forced) and on the dense one, against plain float64 autograd."""
    if not native:
        _native_off(monkeypatch)
    kw = dict(kw)
    tied, apply = kw.pop("tied", False), kw.pop("apply_b_dec", True)
    cfg = _cfg(**kw)
    x = _data()
    state = _state(cfg, tied=tied, apply_b_dec=apply)
    loss, fvu, fired, l0, out, grads = _run(state, x, max_density=1.0 if path == "sparse" else 0.0)
    if path == "sparse":
        assert "candidates" in out  # the sparse path ran
        assert 0 < out["candidates"] < 0.9  # and the data make it sparse, not all-dense
    else:
        assert "candidates" not in out
    r_loss, r_fvu, r_fired, r_l0, r_grads = _reference(state, x)
    assert abs(loss - r_loss) <= 1e-5 * abs(r_loss)
    assert abs(fvu - r_fvu) <= 1e-5 * r_fvu
    assert l0 == r_l0 and torch.equal(fired, r_fired)
    for name, g in grads.items():
        ref = r_grads[name].float()
        assert ref.abs().sum() > 0, name  # the loss reaches every parameter
        torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("kw", [{}, {"sparsity_loss": "tanh", "pre_act_loss": 0.3}])
def test_sparse_path_in_float64_equals_the_dense_path_closely(kw):
    """In float64 (the torch fallback) both of rlsae's paths agree to rounding: the sparse path
    is the dense path's arithmetic on the candidates."""
    cfg = _cfg(**kw)
    x = _data(dtype=torch.float64)
    runs = []
    for max_density in (1.0, 0.0):
        state = _state(cfg, dtype=torch.float64)
        runs.append(_run(state, x, max_density))
    (ls, fs, fired_s, l0s, out_s, gs), (ld, fd, fired_d, l0d, out_d, gd) = runs
    assert "candidates" in out_s and "candidates" not in out_d  # each path ran
    assert ls == pytest.approx(ld, rel=1e-12) and fs == pytest.approx(fd, rel=1e-12)
    assert l0s == l0d and torch.equal(fired_s, fired_d)
    for k in ("l0_loss", "l0_coeff"):
        assert out_s[k] == pytest.approx(out_d[k], rel=1e-12)
    for name in gs:
        torch.testing.assert_close(gs[name], gd[name], rtol=1e-10, atol=1e-12)


def _direct(block, bias, lo):
    """The candidates by a direct mask, row by row."""
    pre = block + bias
    return [(row[m], m.nonzero().reshape(-1)) for row, m in zip(pre, pre > lo, strict=True)]


@pytest.mark.parametrize("native", [True, False])
def test_candidate_gather_equals_a_direct_mask(monkeypatch, native):
    if not native:
        _native_off(monkeypatch)
    g = torch.Generator().manual_seed(5)
    B, n = 200, 1024  # wide enough that some rows overflow the first gather's n / 4 columns
    block = torch.randn(B, n, generator=g)
    block[:7] += 2.0  # rows with most of their entries above
    bias = torch.randn(n, generator=g) * 0.1
    lo = torch.rand(n, generator=g) + 0.5
    want = _direct(block, bias, lo)
    work = block.clone()
    z, idx, valid, counts = jl.candidates(work, bias, lo, max_density=1.0)
    assert torch.equal(work, block + bias)  # the block now holds the pre-activations
    assert z.shape[1] % 8 == 0 and z.shape[1] >= max(int(c.numel()) for _, c in want)
    assert z.shape[1] > n // 4  # the overflow path ran
    for r, (vals, cols) in enumerate(want):
        m = int(valid[r].sum())
        assert m == cols.numel() == int(counts[r]) and bool(valid[r, :m].all())
        assert torch.equal(z[r, :m], vals) and torch.equal(idx[r, :m], cols)
        assert not z[r, m:].any() and not idx[r, m:].any()
    # the cut-over: too many candidates, or a non-finite row, gives None
    share = sum(int(c.numel()) for _, c in want) / (B * n)
    assert jl.candidates(block.clone(), bias, lo, max_density=share * 0.99) is None
    assert jl.candidates(block.clone(), bias, lo, max_density=share * 1.01) is not None
    bad = block.clone()
    bad[3, 5] = float("nan")
    assert jl.candidates(bad, bias, lo, max_density=1.0) is None


def test_lower_bound_keeps_every_band_entry():
    """An entry right at the band's lower edge, (z - t) / bw just above -1/2 in float32, is a
    candidate, for thresholds small and large."""
    bw = 0.05
    t = torch.tensor([0.0, 1e-3, 0.3, 7.0, 250.0])
    lo = jl._lower_bounds(t, bw)
    for j in range(t.numel()):
        z = torch.tensor(float(t[j]) - bw / 2)
        for _ in range(200):  # walk up to the first float whose (z - t) / bw > -1/2
            if bool((z - t[j]) / bw > -0.5):
                break
            z = torch.nextafter(z, torch.tensor(float("inf")))
        assert bool((z - t[j]) / bw > -0.5) and bool(z > lo[j]), j


def test_cut_over_takes_the_dense_path_from_saelens_start():
    """At SAELens's start (thresholds 0.01, decoder at norm 0.1, unnormalised data) nearly every
    entry sits within the band: the step runs dense; with a settled spread of thresholds over
    the same data it runs sparse."""
    cfg = _cfg(init_threshold=0.01)
    sae = SAE(cfg.resolve(D)[0], seed=1)
    init_jumprelu(sae, cfg)
    state = TrainState.new(sae, cfg, 10, 1e-3, 0)
    _, _, _, _, out, _ = _run(state, _data(), jl.MAX_DENSITY)
    assert "candidates" not in out
    _, _, _, _, out, _ = _run(_state(cfg), _data(), jl.MAX_DENSITY)
    assert out["candidates"] <= jl.MAX_DENSITY


def _store(tmp_path):
    x, _ = superposition(3000, d=D, n_true=48, p=0.1)
    return write_store(tmp_path / "acts", x, shard_rows=700, hook="h", source="toy")


def test_training_takes_both_paths_and_resumes_bit_identically(tmp_path, monkeypatch):
    """A run whose early steps are dense and later ones sparse (the cut-over set so both occur)
    resumes from a checkpoint to the same bits as the uninterrupted run."""
    monkeypatch.setattr(jl, "MAX_DENSITY", 0.5)
    store = _store(tmp_path)
    cfg = _cfg(steps=60, l0=0.02, init_threshold=0.01, checkpoint_every=9, log_every=1)
    whole = train_sae(store, tmp_path / "whole", cfg, progress=False)
    rec = json.loads((tmp_path / "whole" / "training.json").read_text())
    paths = ["candidates" in h for h in rec["history"]]
    assert any(paths) and not all(paths), paths  # both paths ran

    class Stop(Exception):
        pass

    def stop(step_no, _stats):
        if step_no == 31:
            raise Stop

    with pytest.raises(Stop):
        train_sae(store, tmp_path / "cut", cfg, progress=False, on_step=stop)
    resumed = train_sae(store, tmp_path / "cut", cfg, resume=True, progress=False)
    for (name, a), (_, b) in zip(
        whole.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
