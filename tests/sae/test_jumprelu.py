"""JumpReLU: the straight-through estimators against hand-derived float64 gradients, training
(L0 warm-up, thresholds), resume, SAELens both ways, the CLI and bad settings."""

from __future__ import annotations

import json
import warnings

import pytest
import sae_lens
import torch

from rlsae.errors import RlsaeError
from rlsae.sae import TrainConfig, load_sae, train_sae
from rlsae.sae.jumprelu import jumprelu, step

from .conftest import superposition, write_store


def test_ste_gradients_equal_hand_derived_reference():
    """loss = sum(a * jumprelu(z, t)) + sum(b * step(z, t)): d/dz = a * H(z - t) and
    d/dt_j = -sum_rows [a t_j / eps + b / eps] * 1{|z - t_j| < eps / 2}, written out by hand."""
    g = torch.Generator().manual_seed(3)
    B, n, eps = 400, 30, 0.3
    z = torch.randn(B, n, generator=g, dtype=torch.float64, requires_grad=True)
    t = (0.5 * torch.rand(n, generator=g, dtype=torch.float64)).requires_grad_()
    a = torch.randn(B, n, generator=g, dtype=torch.float64)
    b = torch.randn(B, n, generator=g, dtype=torch.float64)
    f, s = jumprelu(z, t, eps), step(z, t, eps)
    zd, td = z.detach(), t.detach()
    torch.testing.assert_close(f, zd * (zd > td))
    torch.testing.assert_close(s, (zd > td).double())
    gz, gt = torch.autograd.grad((a * f).sum() + (b * s).sum(), (z, t))
    inside = ((zd - td).abs() < eps / 2).double()
    assert inside.sum() > 50  # the window really catches rows
    expected_gt = torch.zeros(n, dtype=torch.float64)
    for j in range(n):  # by hand, latent by latent
        for r in range(B):
            if inside[r, j]:
                expected_gt[j] -= a[r, j] * td[j] / eps + b[r, j] / eps
    torch.testing.assert_close(gz, a * (zd > td))
    torch.testing.assert_close(gt, expected_gt)
    # step passes nothing to z
    (gz_step,) = torch.autograd.grad((b * step(z, t, eps)).sum(), (z,), allow_unused=True)
    assert gz_step is None


def _store(tmp_path):
    x, truth = superposition(3000, d=16, n_true=32)
    return write_store(tmp_path / "acts", x, shard_rows=700, hook="h", source="toy"), x


def _cfg(**kw):
    base = dict(
        arch="jumprelu",
        d_sae=64,
        batch_size=128,
        steps=80,
        lr=3e-3,
        l0=0.01,
        l0_warmup_frac=0.5,
        bandwidth=0.05,
        init_threshold=0.05,
        log_every=5,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_jumprelu_trains_with_warmup_and_saelens_loads_it(tmp_path):
    store, x = _store(tmp_path)
    sae = train_sae(store, tmp_path / "sae", _cfg(), progress=False)
    rec = json.loads((tmp_path / "sae" / "training.json").read_text())
    for h in rec["history"]:  # linear over the first 40 of 80 steps ("step" counts steps done)
        assert h["l0_coeff"] == pytest.approx(0.01 * min(1.0, h["step"] / 40))
    assert sae.threshold is not None and bool((sae.threshold >= 0).all())
    assert not torch.allclose(sae.threshold, torch.full_like(sae.threshold, 0.05))  # trained
    assert rec["final"]["fvu"] < 0.5
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu"
    back = load_sae(tmp_path / "sae")
    torch.testing.assert_close(back.threshold, sae.threshold)
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"))
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x[:300]), sae.encode(x[:300]))
        torch.testing.assert_close(theirs(x[:300]), sae(x[:300]))


def test_jumprelu_tanh_variant_trains(tmp_path):
    store, _ = _store(tmp_path)
    train_sae(store, tmp_path / "sae", _cfg(sparsity_loss="tanh", steps=30), progress=False)
    rec = json.loads((tmp_path / "sae" / "training.json").read_text())
    assert all(h["l0_loss"] > 0 for h in rec["history"])


def test_jumprelu_resumes_bit_identically(tmp_path):
    store, _ = _store(tmp_path)
    whole = train_sae(store, tmp_path / "whole", _cfg(checkpoint_every=9), progress=False)

    class Stop(Exception):
        pass

    def stop(step_no, _stats):
        if step_no == 31:
            raise Stop

    with pytest.raises(Stop):
        train_sae(store, tmp_path / "cut", _cfg(checkpoint_every=9), progress=False, on_step=stop)
    resumed = train_sae(
        store, tmp_path / "cut", _cfg(checkpoint_every=9), resume=True, progress=False
    )
    for (name, a), (_, b) in zip(
        whole.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_saelens_jumprelu_trained_loads_here(tmp_path):
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    x, _ = superposition(2000, d=16, n_true=32)
    torch.manual_seed(0)
    sae = JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(d_in=16, d_sae=64, l0_coefficient=0.01))

    def batches():
        g = torch.Generator().manual_seed(0)
        while True:
            yield x[torch.randint(0, x.shape[0], (128,), generator=g)]

    cfg = SAETrainerConfig(
        total_training_samples=128 * 40, train_batch_size_samples=128, lr=3e-3, lr_end=3e-3
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trained = SAETrainer(cfg, sae, batches()).fit()
    trained.save_inference_model(str(tmp_path / "theirs"))
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "theirs"))
    ours = load_sae(tmp_path / "theirs")
    assert ours.cfg.arch == "jumprelu"
    with torch.no_grad():
        assert (theirs.encode(x) > 0).any()
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-4)


def test_cli_trains_jumprelu(tmp_path, run_cli):
    store, _ = _store(tmp_path)
    args = ["sae", "train", "--acts", store, "--out", tmp_path / "s", "--arch", "jumprelu"]
    args += ["--d-sae", 64, "--steps", 20, "--batch-size", 128, "--l0", 0.02, "--json"]
    code, out, err = run_cli(*args, "--bandwidth", 0.1, "--sparsity-loss", "tanh")
    assert code == 0, err
    assert load_sae(tmp_path / "s").cfg.arch == "jumprelu"
    rec = json.loads((tmp_path / "s" / "training.json").read_text())
    assert rec["config"]["bandwidth"] == 0.1 and rec["config"]["sparsity_loss"] == "tanh"


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(bandwidth=0.0), "bandwidth"),
        (dict(init_threshold=-1.0), "init_threshold"),
        (dict(l0=-0.1), "l0"),
        (dict(sparsity_loss="quadratic"), "sparsity_loss: expected step or tanh"),
        (dict(arch="topk", l0=0.5), "l0: a jumprelu setting, given to arch topk"),
        (dict(arch="batchtopk", init_threshold=0.1), "init_threshold: a jumprelu"),
        (dict(arch="relu", sparsity_loss="tanh"), "sparsity_loss: a jumprelu"),
    ],
)
def test_jumprelu_bad_settings_one_line(tmp_path, kw, msg):
    cfg = TrainConfig(d_sae=64, **kw) if "arch" in kw else _cfg(**kw)  # other kinds: no base
    with pytest.raises(RlsaeError) as e:
        train_sae(tmp_path / "nowhere", tmp_path / "out", cfg, progress=False)
    assert msg in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_jumprelu_starts_as_saelens_does():
    """Decoder rows at SAELens's decoder_init_norm (read from its config class, 0.1), the encoder
    at their transpose, thresholds at init_threshold."""
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig

    from rlsae.sae import SAE
    from rlsae.sae.train import init_jumprelu

    scfg = JumpReLUTrainingSAEConfig(d_in=16, d_sae=64)
    theirs = JumpReLUTrainingSAE(scfg)
    cfg = _cfg()
    assert cfg.decoder_init_norm == scfg.decoder_init_norm == 0.1
    ours = SAE(cfg.resolve(16)[0], seed=0)
    init_jumprelu(ours, cfg)
    with torch.no_grad():
        torch.testing.assert_close(ours.W_dec.norm(dim=1), theirs.W_dec.norm(dim=1))
        torch.testing.assert_close(ours.W_enc, ours.W_dec.t())
        torch.testing.assert_close(theirs.W_enc, theirs.W_dec.t())
        torch.testing.assert_close(ours.threshold, theirs.threshold.new_full((64,), 0.05))


def test_jumprelu_decoder_is_free_in_training_unless_asked_for_unit_norm(tmp_path):
    store, _ = _store(tmp_path)
    free = train_sae(store, tmp_path / "free", _cfg(steps=30), progress=False)
    norms = free.W_dec.detach().norm(dim=1)
    assert not torch.allclose(norms, torch.full_like(norms, 0.1))  # trained, not renormalised
    assert not torch.allclose(norms, torch.ones_like(norms))
    unit = train_sae(store, tmp_path / "unit", _cfg(steps=30, decoder_init_norm=None),
                     progress=False)  # fmt: skip
    torch.testing.assert_close(unit.W_dec.detach().norm(dim=1), torch.ones(64))


def _pre_act_state(coeff):
    from rlsae.sae import SAE
    from rlsae.sae.train import TrainState, init_jumprelu

    cfg = _cfg(pre_act_loss=coeff, dead_rows=100, init_threshold=0.3, steps=10)
    sae = SAE(cfg.resolve(16)[0], seed=1).double()
    init_jumprelu(sae, cfg)
    with torch.no_grad():
        sae.threshold.uniform_(0.05, 0.6, generator=torch.Generator().manual_seed(2))
    state = TrainState.new(sae, cfg, 10, 1e-3, 0)
    state.since_fired[::3] = 500  # every third latent dead
    return state


def test_pre_activation_loss_and_its_gradients_equal_a_dense_float64_reference():
    """The training loss with the pre-activation term, minus the loss without it, equals
    coeff * mean_rows sum_dead relu(t - pre) * ||W_dec[i]|| written out in float64 (and SAELens's
    own ``calculate_pre_act_loss``), and so do the gradients of every parameter."""
    from sae_lens.saes.jumprelu_sae import calculate_pre_act_loss

    from rlsae.sae.step import _jumprelu_terms

    x, _ = superposition(300, d=16, n_true=32)
    x = x.double()
    coeff = 0.7
    grads, losses = [], []
    for c in (coeff, None):
        state = _pre_act_state(c)
        sae = state.sae
        out: dict[str, float] = {}
        loss, *_ = _jumprelu_terms(state, x, torch.tensor(1.0, dtype=torch.float64), out)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in sae.named_parameters()})
        sae.zero_grad()
    # the reference, dense and by hand, on a fresh copy of the same parameters
    ref = _pre_act_state(coeff).sae
    dead = (torch.arange(64) % 3 == 0).double()
    pre = (x - ref.b_dec) @ ref.W_enc + ref.b_enc
    per_row = ((ref.threshold - pre).relu() * dead * ref.W_dec.norm(dim=1)).sum(-1)
    want = coeff * per_row.mean()
    assert float(want.detach()) > 0
    torch.testing.assert_close(losses[0] - losses[1], want.detach(), rtol=1e-12, atol=1e-12)
    theirs = calculate_pre_act_loss(coeff, ref.threshold, pre, dead.bool(), ref.W_dec.norm(dim=1))
    torch.testing.assert_close(theirs.detach(), want.detach(), rtol=1e-12, atol=1e-12)
    want.backward()
    for name, p in ref.named_parameters():
        torch.testing.assert_close(grads[0][name] - grads[1][name], p.grad, rtol=1e-9, atol=1e-12)
        if name in ("threshold", "b_enc", "W_dec"):
            assert p.grad.abs().sum() > 0, name  # the term reaches it


def test_jumprelu_with_pre_activation_loss_resumes_bit_identically(tmp_path):
    store, _ = _store(tmp_path)
    kw = dict(checkpoint_every=9, pre_act_loss=3e-2, dead_rows=128, init_threshold=0.3)
    whole = train_sae(store, tmp_path / "whole", _cfg(**kw), progress=False)
    rec = json.loads((tmp_path / "whole" / "training.json").read_text())
    assert any(h.get("pre_act_loss", 0) > 0 for h in rec["history"])  # some latents died

    class Stop(Exception):
        pass

    def stop(step_no, _stats):
        if step_no == 31:
            raise Stop

    with pytest.raises(Stop):
        train_sae(store, tmp_path / "cut", _cfg(**kw), progress=False, on_step=stop)
    resumed = train_sae(store, tmp_path / "cut", _cfg(**kw), resume=True, progress=False)
    for (name, a), (_, b) in zip(
        whole.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_cli_pre_activation_loss(tmp_path, run_cli):
    store, _ = _store(tmp_path)
    args = ["sae", "train", "--acts", store, "--out", tmp_path / "s", "--arch", "jumprelu"]
    code, _, err = run_cli(*args, "--d-sae", 64, "--steps", 5, "--pre-act-loss", 3e-6, "--json")
    assert code == 0, err
    rec = json.loads((tmp_path / "s" / "training.json").read_text())
    assert rec["config"]["pre_act_loss"] == 3e-6
    code, out, err = run_cli("sae", "train", "--acts", store, "--out", tmp_path / "t",
                             "--pre-act-loss", 0.1)  # fmt: skip
    assert code == 2 and "pre_act_loss: a jumprelu setting, given to arch topk" in err
    assert not (tmp_path / "t").exists()
