"""Matryoshka BatchTopK: the prefix losses against a dense float64 reference, training, per-prefix
evaluation, SAELens, resume, the CLI and bad settings."""

from __future__ import annotations

import json

import pytest
import sae_lens
import torch

from rlsae.errors import RlsaeError
from rlsae.sae import SAE, SAEConfig, TrainConfig, load_sae, train_sae
from rlsae.sae._fast import Workspace, topk_loss
from rlsae.sae.config import default_groups
from rlsae.sae.step import TrainState, _prefix_losses

from .conftest import superposition, write_store
from .reference import naive_batchtopk_forward


def test_matryoshka_loss_and_gradients_match_dense_reference():
    """The training loss (full BatchTopK FVU + every inner prefix's FVU) and all its gradients on
    the sparse path equal the dense float64 computation: sum over prefixes of
    |f[:, :w] @ W_dec[:w] + b_dec - x|^2 / total variance."""
    g = torch.Generator().manual_seed(2)
    B, d, n, k, groups = 64, 12, 96, 5, [8, 24, 64]
    sae = SAE(SAEConfig(d_in=d, d_sae=n, arch="matryoshka", k=k, matryoshka_groups=groups), seed=1)
    sae = sae.double()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3, generator=g)
        sae.b_dec.normal_(generator=g)
    x = torch.randn(B, d, generator=g, dtype=torch.float64)
    var = (x - x.mean(0)).pow(2).sum()
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]
    sse, _, vals, idx = topk_loss(
        x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, k, None, 0, True, Workspace(), batch=True
    )
    out: dict[str, float] = {}
    loss = sse / var + _prefix_losses(sae, x, vals, idx, var, out)
    grads = torch.autograd.grad(loss, params)
    assert sorted(out) == ["fvu_prefix_32", "fvu_prefix_8"]

    p64 = [p.detach().clone().requires_grad_() for p in params]
    recon, f, _ = naive_batchtopk_forward(x, *p64, k)
    loss_ref = (recon - x).pow(2).sum() / var
    for w in (8, 32):
        loss_ref = loss_ref + (f[:, :w] @ p64[2][:w] + p64[3] - x).pow(2).sum() / var
    grads_ref = torch.autograd.grad(loss_ref, p64)
    torch.testing.assert_close(loss, loss_ref)
    for ga, gb in zip(grads, grads_ref, strict=True):
        assert gb.abs().sum() > 0
        torch.testing.assert_close(ga, gb)


def _store(tmp_path):
    x, _ = superposition(3000, d=16, n_true=32)
    return write_store(tmp_path / "acts", x, shard_rows=700, hook="h", source="toy"), x


def _cfg(**kw):
    base = dict(
        arch="matryoshka",
        d_sae=64,
        k=4,
        matryoshka_groups=[8, 24, 32],
        batch_size=128,
        steps=60,
        lr=3e-3,
        log_every=5,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_matryoshka_trains_and_eval_reports_every_prefix(tmp_path, capsys, run_cli):
    store, x = _store(tmp_path)
    sae = train_sae(store, tmp_path / "sae", _cfg(), progress=False)
    rec = json.loads((tmp_path / "sae" / "training.json").read_text())
    assert "fvu_prefix_8" in rec["history"][-1] and "fvu_prefix_32" in rec["history"][-1]
    prefixes = rec["final"]["prefixes"]
    assert [p["width"] for p in prefixes] == [8, 32, 64]
    assert prefixes[-1]["fvu"] == pytest.approx(rec["final"]["fvu"], rel=1e-6)
    assert prefixes[-1]["l0"] == pytest.approx(rec["final"]["l0"])
    fvus = [p["fvu"] for p in prefixes]
    assert fvus[0] > fvus[-1]  # the narrowest prefix reconstructs worst
    # the same figures by hand from the dense latents
    with torch.no_grad():
        f = sae.encode(x)
        var = float((x - x.mean(0)).pow(2).sum())
        for p in prefixes:
            w = p["width"]
            err = float((f[:, :w] @ sae.W_dec[:w] + sae.b_dec - x).pow(2).sum())
            assert p["fvu"] == pytest.approx(err / var, rel=1e-4)
            assert p["l0"] == pytest.approx(float((f[:, :w] > 0).sum()) / x.shape[0])
    code, out, err = run_cli("sae", "eval", "--sae", tmp_path / "sae", "--acts", store, "--json")
    assert code == 0, err
    assert [p["width"] for p in json.loads(out)["prefixes"]] == [8, 32, 64]
    # saved as SAELens saves Matryoshka BatchTopK: a JumpReLU with the threshold
    back = load_sae(tmp_path / "sae")
    assert back.cfg.arch == "matryoshka" and back.cfg.matryoshka_groups == [8, 24, 32]
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"))
    assert type(theirs).__name__ == "JumpReLUSAE"
    with torch.no_grad():
        torch.testing.assert_close(theirs(x[:300]), sae(x[:300]))


def test_matryoshka_resumes_bit_identically(tmp_path):
    store, _ = _store(tmp_path)
    whole = train_sae(store, tmp_path / "whole", _cfg(checkpoint_every=8), progress=False)

    class Stop(Exception):
        pass

    def stop(step, _stats):
        if step == 21:
            raise Stop

    with pytest.raises(Stop):
        train_sae(store, tmp_path / "cut", _cfg(checkpoint_every=8), progress=False, on_step=stop)
    resumed = train_sae(
        store, tmp_path / "cut", _cfg(checkpoint_every=8), resume=True, progress=False
    )
    for (name, a), (_, b) in zip(
        whole.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_cli_matryoshka_and_default_groups(tmp_path, run_cli):
    store, _ = _store(tmp_path)
    args = ["sae", "train", "--acts", store, "--arch", "matryoshka", "--d-sae", 64, "--k", 4]
    args += ["--steps", 10, "--batch-size", 128, "--json"]
    code, _, err = run_cli(*args, "--out", tmp_path / "a", "--matryoshka-groups", "16,48")
    assert code == 0, err
    assert load_sae(tmp_path / "a").cfg.matryoshka_groups == [16, 48]
    code, _, err = run_cli(*args, "--out", tmp_path / "b")
    assert code == 0, err
    assert load_sae(tmp_path / "b").cfg.matryoshka_groups == default_groups(64) == [4, 4, 8, 16, 32]
    code, _, err = run_cli(*args, "--out", tmp_path / "c", "--matryoshka-groups", "16,x")
    assert code == 2 and "--matryoshka-groups: expected integers" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "c").exists()
    # groups that do not add up to the d_sae resolved from the store: refused before any write
    bad = ["sae", "train", "--acts", store, "--arch", "matryoshka", "--expansion", 4]
    code, _, err = run_cli(*bad, "--out", tmp_path / "d", "--matryoshka-groups", "16,16")
    assert code == 2 and "add up to 32, not d_sae=64" in err, err
    assert not (tmp_path / "d").exists() and not (tmp_path / ".d.partial").exists()


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(matryoshka_groups=[8, 24, 30]), "[8, 24, 30] add up to 62, not d_sae=64"),
        (dict(matryoshka_groups=[0, 64]), "sizes must be positive integers"),
        (dict(matryoshka_groups=[]), "expected a list of group sizes"),
        (
            dict(arch="batchtopk"),
            "matryoshka_groups: a matryoshka setting, given to arch batchtopk",
        ),
        (dict(k=0), "k"),
    ],
)
def test_matryoshka_bad_settings_one_line(tmp_path, kw, msg):
    with pytest.raises(RlsaeError) as e:
        train_sae(tmp_path / "nowhere", tmp_path / "out", _cfg(**kw), progress=False)
    assert msg in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_state_carries_threshold_for_matryoshka(tmp_path):
    """Matryoshka estimates the same inference threshold as BatchTopK."""
    store, _ = _store(tmp_path)
    sae = train_sae(store, tmp_path / "sae", _cfg(steps=20), progress=False)
    assert sae.threshold is not None and float(sae.threshold[0]) > 0
    assert TrainState.__dataclass_fields__["topk_threshold"].default == 0.0


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka", "jumprelu"])
def test_tied_kinds_train_and_load_in_saelens(tmp_path, arch):
    """Tied weights for the new kinds: trained, W_enc stays W_dec.T, SAELens gives our outputs."""
    store, x = _store(tmp_path)
    kw = {"matryoshka_groups": [16, 48]} if arch == "matryoshka" else {}
    cfg = TrainConfig(arch=arch, d_sae=64, k=4, tied=True, batch_size=128, steps=15, lr=3e-3, **kw)
    sae = train_sae(store, tmp_path / "sae", cfg, progress=False)
    assert sae.cfg.tied and "W_enc" not in dict(sae.named_parameters())
    back = load_sae(tmp_path / "sae")
    assert back.cfg.tied
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"))
    with torch.no_grad():
        torch.testing.assert_close(theirs(x[:200]), sae(x[:200]))


def test_saelens_matryoshka_trained_loads_here(tmp_path):
    """SAELens's own Matryoshka BatchTopK trainer, saved for inference (JumpReLU): the same
    outputs here."""
    import warnings

    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import (
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
    )
    from sae_lens.training.sae_trainer import SAETrainer

    x, _ = superposition(2000, d=16, n_true=32)
    torch.manual_seed(0)
    cfg = MatryoshkaBatchTopKTrainingSAEConfig(
        d_in=16, d_sae=64, k=4, matryoshka_widths=[8, 32, 64]
    )
    sae = MatryoshkaBatchTopKTrainingSAE(cfg)

    def batches():
        g = torch.Generator().manual_seed(0)
        while True:
            yield x[torch.randint(0, x.shape[0], (128,), generator=g)]

    trainer_cfg = SAETrainerConfig(
        total_training_samples=128 * 40, train_batch_size_samples=128, lr=3e-3, lr_end=3e-3
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trained = SAETrainer(trainer_cfg, sae, batches()).fit()
    trained.save_inference_model(str(tmp_path / "theirs"))
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "theirs"))
    ours = load_sae(tmp_path / "theirs")
    assert ours.cfg.arch == "jumprelu"
    with torch.no_grad():
        assert (theirs.encode(x) > 0).any()
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-4)


def test_per_level_auxk_equals_saelens_matryoshka_aux_loss_and_its_gradients():
    """``matryoshka_aux_loss`` (total variance set to the row count, so it is SAELens's mean over
    rows) equals SAELens's own ``calculate_matryoshka_aux_loss`` in float64, value and every
    gradient; dead latents are given positive pre-activations, where rlsae's ReLU of the
    auxiliary activations and SAELens's raw pre-activations agree."""
    from sae_lens.saes.matryoshka_batchtopk_sae import (
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
    )

    from rlsae.sae.step import matryoshka_aux_loss

    g = torch.Generator().manual_seed(4)
    B, d, n, k, groups = 48, 12, 64, 4, [8, 24, 32]
    sae = SAE(SAEConfig(d_in=d, d_sae=n, arch="matryoshka", k=k, matryoshka_groups=groups), seed=1)
    sae = sae.double()
    dead = torch.zeros(n, dtype=torch.bool)
    dead[[1, 3, 9, 10, 11, 12, 13, 14, 15, 16, 40, 41, 50]] = True  # 2, 8 and 3 per group
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3, generator=g)
        sae.b_enc[dead] += 4.0  # dead latents' pre-activations above 0
        sae.b_dec.normal_(generator=g)
    x = torch.randn(B, d, generator=g, dtype=torch.float64)
    _, _, vals, idx = topk_loss(
        x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, k, None, 0, True, None, batch=True
    )
    vals = vals.detach()
    aux_k = d // 2
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]
    ours = matryoshka_aux_loss(sae, x, vals, idx, dead, aux_k, torch.tensor(float(B)).double())
    grads = torch.autograd.grad(ours, params)

    cfg = MatryoshkaBatchTopKTrainingSAEConfig(
        d_in=d, d_sae=n, k=k, matryoshka_widths=[8, 32, 64], use_matryoshka_aux_loss=True,
        aux_loss_coefficient=1.0, dtype="float64", rescale_acts_by_decoder_norm=False,
    )  # fmt: skip
    theirs = MatryoshkaBatchTopKTrainingSAE(cfg).double()
    with torch.no_grad():
        for name, p in zip(("W_enc", "b_enc", "W_dec", "b_dec"), params, strict=True):
            getattr(theirs, name).copy_(p)
    hidden_pre = (x - theirs.b_dec) @ theirs.W_enc + theirs.b_enc
    acts = torch.zeros(B, n, dtype=torch.float64).scatter_add_(1, idx, vals)
    ref = theirs.calculate_matryoshka_aux_loss(x, acts @ theirs.W_dec + theirs.b_dec, acts,
                                               hidden_pre, dead)  # fmt: skip
    assert float(ref.detach()) > 0
    # (SAELens's default rescale_acts_by_decoder_norm divides by the decoder norms: on unit-norm
    # rows the same value, and the same gradient once rlsae removes its parallel component)
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-12, atol=0)
    ref_grads = torch.autograd.grad(ref, [theirs.W_enc, theirs.b_enc, theirs.W_dec, theirs.b_dec])
    for name, ga, gb in zip(("W_enc", "b_enc", "W_dec", "b_dec"), grads, ref_grads, strict=True):
        assert gb.abs().sum() > 0, name
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)
    # a dense float64 sum written out by hand, level by level: value and gradients to 1e-12
    p64 = [p.detach().clone().requires_grad_() for p in params]
    W_enc, b_enc, W_dec, b_dec = p64
    pre = (x - b_dec) @ W_enc + b_enc
    hand = x.new_zeros(())
    for s, e in ((0, 8), (8, 32), (32, 64)):
        cols = dead[s:e].nonzero().reshape(-1) + s
        residual = (x - (acts[:, :e] @ W_dec[:e] + b_dec)).detach()
        v, pos = pre[:, cols].topk(min(aux_k, len(cols)), dim=-1)
        dense = torch.zeros(B, n, dtype=torch.float64).scatter(1, cols[pos], v.relu())
        hand = hand + min(1.0, len(cols) / aux_k) * (dense @ W_dec - residual).pow(2).sum() / B
    torch.testing.assert_close(ours.detach(), hand.detach(), rtol=1e-12, atol=0)
    for ga, gb in zip(grads, torch.autograd.grad(hand, p64), strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_matryoshka_per_level_auxk_trains_and_resumes_bit_identically(tmp_path):
    store, _ = _store(tmp_path)
    kw = dict(checkpoint_every=8, matryoshka_aux=True, dead_rows=128)
    whole = train_sae(store, tmp_path / "whole", _cfg(**kw), progress=False)
    rec = json.loads((tmp_path / "whole" / "training.json").read_text())
    assert any(h.get("aux_loss", 0) > 0 for h in rec["history"])

    class Stop(Exception):
        pass

    def stop(step, _stats):
        if step == 21:
            raise Stop

    with pytest.raises(Stop):
        train_sae(store, tmp_path / "cut", _cfg(**kw), progress=False, on_step=stop)
    resumed = train_sae(store, tmp_path / "cut", _cfg(**kw), resume=True, progress=False)
    for (name, a), (_, b) in zip(
        whole.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    with pytest.raises(RlsaeError, match="matryoshka_aux: a matryoshka setting, given to arch"):
        TrainConfig(arch="batchtopk", matryoshka_aux=True).validate()


def test_cli_matryoshka_aux(tmp_path, run_cli):
    store, _ = _store(tmp_path)
    args = ["sae", "train", "--acts", store, "--arch", "matryoshka", "--d-sae", 64, "--k", 4]
    code, _, err = run_cli(*args, "--out", tmp_path / "a", "--steps", 3, "--matryoshka-aux")
    assert code == 0, err
    assert json.loads((tmp_path / "a" / "training.json").read_text())["config"]["matryoshka_aux"]


@pytest.mark.parametrize("path", ["native", "torch"])
def test_matryoshka_prefix_terms_float32_match_reference(path, monkeypatch):
    """The prefix terms' fused sparse path in float32 (C kernels or torch) against the dense
    float64 reference: loss and every gradient."""
    from .test_sparse import _force_path

    _force_path(path, monkeypatch)
    g = torch.Generator().manual_seed(7)
    B, d, n, k, groups = 300, 24, 256, 6, [16, 16, 32, 64, 128]
    sae = SAE(SAEConfig(d_in=d, d_sae=n, arch="matryoshka", k=k, matryoshka_groups=groups), seed=2)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3, generator=g)
        sae.b_dec.normal_(generator=g)
    x = torch.randn(B, d, generator=g)
    var = (x - x.mean(0)).pow(2).sum()
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]
    sse, _, vals, idx = topk_loss(
        x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, k, None, 0, True, Workspace(), batch=True
    )
    loss = sse / var + _prefix_losses(sae, x, vals, idx, var, {})
    grads = torch.autograd.grad(loss, params)
    p64 = [p.detach().double().requires_grad_() for p in params]
    x64, var64 = x.double(), var.double()
    recon, f, _ = naive_batchtopk_forward(x64, *p64, k)
    ref = (recon - x64).pow(2).sum() / var64
    for w in (16, 32, 64, 128):
        ref = ref + (f[:, :w] @ p64[2][:w] + p64[3] - x64).pow(2).sum() / var64
    grads_ref = torch.autograd.grad(ref, p64)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    for ga, gb in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(ga.double(), gb, rtol=1e-3, atol=1e-5 * float(gb.abs().max()))


def test_tied_matryoshka_loss_and_gradients_match_dense_reference():
    """A tied Matryoshka SAE (encoder = decoder transpose): the prefix terms' decoder gradient
    adds to the encoder's through the one weight matrix, as in the dense float64 reference."""
    g = torch.Generator().manual_seed(2)
    B, d, n, k, groups = 64, 12, 96, 5, [8, 24, 64]
    cfg = SAEConfig(d_in=d, d_sae=n, arch="matryoshka", k=k, matryoshka_groups=groups, tied=True)
    sae = SAE(cfg, seed=1).double()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3, generator=g)
        sae.b_dec.normal_(generator=g)
    x = torch.randn(B, d, generator=g, dtype=torch.float64)
    var = (x - x.mean(0)).pow(2).sum()
    params = [sae.b_enc, sae.W_dec, sae.b_dec]
    sse, _, vals, idx = topk_loss(
        x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, k, None, 0, True, Workspace(), batch=True
    )
    loss = sse / var + _prefix_losses(sae, x, vals, idx, var, {})
    grads = torch.autograd.grad(loss, params)
    b_enc, W_dec, b_dec = [p.detach().clone().requires_grad_() for p in params]
    recon, f, _ = naive_batchtopk_forward(x, W_dec.t(), b_enc, W_dec, b_dec, k)
    ref = (recon - x).pow(2).sum() / var
    for w in (8, 32):
        ref = ref + (f[:, :w] @ W_dec[:w] + b_dec - x).pow(2).sum() / var
    torch.testing.assert_close(loss, ref)
    for ga, gb in zip(grads, torch.autograd.grad(ref, [b_enc, W_dec, b_dec]), strict=True):
        assert gb.abs().sum() > 0
        torch.testing.assert_close(ga, gb)
