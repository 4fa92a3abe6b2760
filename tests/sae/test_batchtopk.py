"""BatchTopK: the fast path against a dense float64 reference, the threshold, SAELens both ways,
training, resume and the CLI."""

from __future__ import annotations

import json
import warnings

import pytest
import sae_lens
import torch

from rlsae.errors import RlsaeError
from rlsae.sae import SAE, SAEConfig, TrainConfig, load_sae, train_sae
from rlsae.sae._fast.loss import _encode_batchtopk

from .conftest import superposition, write_store
from .reference import naive_batchtopk_forward, topk_forward


def _params(g, B, d, n, tied, dtype=torch.float64, skew=False):
    x = torch.randn(B, d, generator=g, dtype=dtype)
    if skew:  # a few loud rows hold far more than 2k of the batch's kept entries: the retry runs
        x[:3] *= 8.0
    W_dec = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    W_enc = None if tied else torch.randn(d, n, generator=g, dtype=dtype).requires_grad_()
    b_enc = (0.3 * torch.randn(n, generator=g, dtype=dtype)).requires_grad_()
    b_dec = torch.randn(d, generator=g, dtype=dtype).requires_grad_()
    return x, W_enc, b_enc, W_dec, b_dec


def _dense(vals, idx, n):
    return torch.zeros(idx.shape[0], n, dtype=vals.dtype).scatter_add(1, idx, vals)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("with_aux", [False, True])
@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("n,skew", [(80, False), (512, False), (512, True)])
def test_batchtopk_matches_dense_reference(tied, with_aux, apply_b_dec, n, skew):
    """Forward (reconstruction, latents, AuxK) and every gradient of the fast path equal SAELens's
    dense BatchTopK in float64, including batches whose rows hold very unequal shares."""
    g = torch.Generator().manual_seed(11)
    B, d, k = 48, 12, 6
    x, W_enc, b_enc, W_dec, b_dec = _params(g, B, d, n, tied, skew=skew)
    dead = torch.tensor([1, 5, 6, 33, 40, 41, 70, 79]) if with_aux else None
    params = [p for p in (W_enc, b_enc, W_dec, b_dec) if p is not None]
    enc = W_dec.t() if tied else W_enc
    recon, vals, idx, aux = topk_forward(
        x, enc, b_enc, W_dec, b_dec, k, dead, 5, apply_b_dec, batch=True
    )
    f = _dense(vals, idx, n)
    recon_r, f_r, aux_r = naive_batchtopk_forward(
        x, enc, b_enc, W_dec, b_dec, k, dead, 5, apply_b_dec
    )
    assert int((f_r > 0).sum()) == B * k  # continuous data: exactly k * rows kept
    if skew:
        assert int((f_r > 0).sum(1).max()) > 2 * k  # some row beyond the first candidate width
    torch.testing.assert_close(f, f_r)
    torch.testing.assert_close(recon, recon_r)
    torch.testing.assert_close(aux, aux_r)

    def loss_of(recon, acts, aux):
        loss = (recon - x).pow(2).sum() + 0.3 * acts.pow(3).sum()
        if with_aux:
            loss = loss + 0.7 * (aux - (x - recon).detach()).pow(2).sum()
        return loss

    grads = torch.autograd.grad(loss_of(recon, vals, aux), params)
    grads_r = torch.autograd.grad(loss_of(recon_r, f_r, aux_r), params)
    for ga, gb in zip(grads, grads_r, strict=True):
        assert gb.abs().sum() > 0
        torch.testing.assert_close(ga, gb)


@pytest.mark.parametrize("path", ["native", "torch"])
def test_batchtopk_training_loss_matches_reference(path, monkeypatch):
    """The training step's loss terms (float32, C kernels or torch) against the float64 reference."""
    from rlsae.sae._fast import Workspace, topk_loss

    from .test_sparse import _force_path

    _force_path(path, monkeypatch)
    g = torch.Generator().manual_seed(5)
    B, d, n, k = 300, 24, 512, 6
    x, W_enc, b_enc, W_dec, b_dec = _params(g, B, d, n, False, torch.float32, skew=True)
    dead = torch.arange(3, n, 7)
    params = [W_enc, b_enc, W_dec, b_dec]
    sse, aux_sse, vals, idx = topk_loss(
        x, W_enc, b_enc, W_dec, b_dec, k, dead, 5, True, Workspace(), batch=True
    )
    grads = torch.autograd.grad(0.6 * sse + 0.3 * aux_sse, params)
    p64 = [p.detach().double().requires_grad_() for p in params]
    recon, f_r, aux = naive_batchtopk_forward(x.double(), *p64, k, dead, 5, True)
    sse_ref = (recon - x.double()).pow(2).sum()
    aux_ref = (aux - (x.double() - recon).detach()).pow(2).sum()
    grads_ref = torch.autograd.grad(0.6 * sse_ref + 0.3 * aux_ref, p64)
    assert torch.equal(_dense(vals, idx, n) > 0, f_r > 0)
    torch.testing.assert_close(sse.double(), sse_ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(aux_sse.double(), aux_ref, rtol=1e-5, atol=1e-4)
    for ga, gb in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(ga.double(), gb, rtol=1e-3, atol=1e-5 * float(gb.abs().max()))


def test_batchtopk_keeps_all_positives_when_fewer_than_k_rows():
    """Fewer than k * rows positive pre-activations: every positive one is kept, nothing else."""
    x = torch.randn(20, 8, dtype=torch.float64)
    W_enc = torch.randn(8, 64, dtype=torch.float64)
    b_enc = torch.full((64,), -4.0, dtype=torch.float64)
    zero = torch.zeros(8, dtype=torch.float64)
    vals, idx, _, _ = _encode_batchtopk(x, W_enc, b_enc, zero, True, 10, None, 0)
    pre = x @ W_enc + b_enc
    torch.testing.assert_close(_dense(vals, idx, 64), pre.relu())


def _toy_store(tmp_path, rows=3000, seed=0):
    x, truth = superposition(rows, d=16, n_true=32, seed=seed)
    return write_store(tmp_path / "acts", x, shard_rows=700, hook="h", source="toy"), x, truth


def _cfg(**kw):
    base = dict(arch="batchtopk", d_sae=64, k=4, batch_size=128, steps=60, lr=3e-3, log_every=5)
    base.update(kw)
    return TrainConfig(**base)


def test_batchtopk_trains_sets_threshold_and_saves_as_jumprelu(tmp_path):
    store, x, _ = _toy_store(tmp_path)
    sae = train_sae(store, tmp_path / "sae", _cfg(), progress=False)
    rec = json.loads((tmp_path / "sae" / "training.json").read_text())
    thresholds = [h["topk_threshold"] for h in rec["history"]]
    assert thresholds[0] > 0 and all(t > 0 for t in thresholds)
    assert sae.threshold is not None
    assert torch.all(sae.threshold == sae.threshold[0])
    assert float(sae.threshold[0]) == pytest.approx(thresholds[-1], rel=1e-6)
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["metadata"]["rlsae"]["arch"] == "batchtopk"
    assert rec["final"]["fvu"] < 0.5
    # inference L0 near k: the threshold stands in for the batch's TopK
    assert 2 <= rec["final"]["l0"] <= 8
    back = load_sae(tmp_path / "sae")
    assert back.cfg.arch == "batchtopk"
    with torch.no_grad():
        torch.testing.assert_close(back(x[:200]), sae(x[:200]))
    # SAELens loads it as the JumpReLU it saves BatchTopK SAEs as, with the same outputs
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"))
    assert type(theirs).__name__ == "JumpReLUSAE"
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x[:200]), sae.encode(x[:200]))
        torch.testing.assert_close(theirs(x[:200]), sae(x[:200]))


def test_batchtopk_resumes_bit_identically(tmp_path):
    store, _, _ = _toy_store(tmp_path)
    whole = train_sae(store, tmp_path / "whole", _cfg(checkpoint_every=7), progress=False)

    class Stop(Exception):
        pass

    def stop(step, _stats):
        if step == 23:
            raise Stop

    with pytest.raises(Stop):
        train_sae(store, tmp_path / "cut", _cfg(checkpoint_every=7), progress=False, on_step=stop)
    resumed = train_sae(
        store, tmp_path / "cut", _cfg(checkpoint_every=7), resume=True, progress=False
    )
    for (name, a), (_, b) in zip(
        whole.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    a = json.loads((tmp_path / "whole" / "training.json").read_text())["history"]
    b = json.loads((tmp_path / "cut" / "training.json").read_text())["history"]
    assert a == b


def test_saelens_batchtopk_trained_loads_here(tmp_path):
    """An SAE trained by SAELens's own BatchTopK trainer, saved for inference (JumpReLU), gives
    SAELens's outputs here."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    x, _ = superposition(2000, d=16, n_true=32)
    torch.manual_seed(0)
    sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=16, d_sae=64, k=4))

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
    assert json.loads((tmp_path / "theirs" / "cfg.json").read_text())["architecture"] == "jumprelu"
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "theirs"))
    ours = load_sae(tmp_path / "theirs")
    assert ours.cfg.arch == "jumprelu"
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-4)
    ours.save(tmp_path / "again")  # and back: a jumprelu directory SAELens reads the same
    again = sae_lens.SAE.load_from_disk(str(tmp_path / "again"))
    with torch.no_grad():
        torch.testing.assert_close(again(x), theirs(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("tied", [False, True])
def test_jumprelu_sae_loads_in_saelens(tmp_path, tied):
    sae = SAE(SAEConfig(d_in=16, d_sae=64, arch="jumprelu", tied=tied), seed=3)
    with torch.no_grad():
        sae.b_enc.uniform_(-0.2, 0.2)
        sae.threshold.uniform_(0.0, 0.5)
    sae.save(tmp_path / "sae")
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"))
    x = torch.randn(50, 16) * 2
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), sae.encode(x))
        torch.testing.assert_close(theirs(x), sae(x))
    torch.testing.assert_close(load_sae(tmp_path / "sae").threshold, sae.threshold)


def test_cli_trains_batchtopk(tmp_path, run_cli):
    store, _, _ = _toy_store(tmp_path)
    args = ["sae", "train", "--acts", store, "--out", tmp_path / "s", "--arch", "batchtopk"]
    args += ["--d-sae", 64, "--k", 4, "--steps", 20, "--batch-size", 128, "--json"]
    code, out, err = run_cli(*args, "--topk-threshold-lr", 0.05)
    assert code == 0, err
    assert json.loads(out)["steps"] == 20
    assert load_sae(tmp_path / "s").cfg.arch == "batchtopk"


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(topk_threshold_lr=0.0), "topk_threshold_lr"),
        (dict(topk_threshold_lr=1.5), "topk_threshold_lr"),
        (dict(arch="topk", topk_threshold_lr=0.1), "a batchtopk or matryoshka setting"),
        (dict(k=0), "k"),
        (dict(k=65), "k must be between 1 and d_sae=64"),
    ],
)
def test_batchtopk_bad_settings_one_line(tmp_path, kw, msg):
    with pytest.raises(RlsaeError) as e:
        train_sae(tmp_path / "nowhere", tmp_path / "out", _cfg(**kw), progress=False)
    assert msg in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


@pytest.mark.parametrize("chunk", [16, 4096])
def test_batchtopk_blockwise_equals_one_block(monkeypatch, chunk):
    """Batches above CHUNK rows (the encoder in blocks, widths doubled on a short row) keep the
    same entries as the one-block path and the dense reference."""
    import rlsae.sae._fast.loss as loss_mod

    g = torch.Generator().manual_seed(4)
    x, W_enc, b_enc, W_dec, b_dec = _params(g, 60, 10, 512, False, skew=True)
    dead = torch.arange(0, 512, 9)
    monkeypatch.setattr(loss_mod, "CHUNK", chunk)
    with torch.no_grad():  # as inside the autograd function's forward
        vals, idx, a_vals, a_idx = _encode_batchtopk(x, W_enc, b_enc, b_dec, True, 6, dead, 5)
    _, f_r, _ = naive_batchtopk_forward(x, W_enc, b_enc, W_dec, b_dec, 6)
    torch.testing.assert_close(_dense(vals.detach(), idx, 512), f_r.detach())
    assert a_vals is not None and a_idx is not None and bool(torch.isin(a_idx, dead).all())


@pytest.mark.parametrize("k", [2.5, 3.75, 0.5])
def test_fractional_k_keeps_int_k_rows_as_saelens_batchtopk(k):
    """A fractional k (SAELens's float k): int(k x rows) entries kept over the batch. Latents,
    reconstruction and every gradient equal SAELens's own ``BatchTopK(k)`` activation applied
    to the dense pre-activations, with plain autograd, in float64."""
    from sae_lens.saes.batchtopk_sae import BatchTopK

    g = torch.Generator().manual_seed(5)
    B, d, n = 48, 12, 80
    x, W_enc, b_enc, W_dec, b_dec = _params(g, B, d, n, tied=False)
    params = [W_enc, b_enc, W_dec, b_dec]
    recon, vals, idx, _ = topk_forward(x, W_enc, b_enc, W_dec, b_dec, k, None, 0, True, batch=True)
    f = _dense(vals, idx, n)
    f_r = BatchTopK(k)((x - b_dec) @ W_enc + b_enc)
    recon_r = f_r @ W_dec + b_dec
    assert int((f_r > 0).sum()) == int(k * B) == int((f > 0).sum())
    torch.testing.assert_close(f, f_r)
    torch.testing.assert_close(recon, recon_r)
    grads = torch.autograd.grad((recon - x).pow(2).sum() + vals.pow(3).sum(), params)
    grads_r = torch.autograd.grad((recon_r - x).pow(2).sum() + f_r.pow(3).sum(), params)
    for ga, gb in zip(grads, grads_r, strict=True):
        torch.testing.assert_close(ga, gb)


def test_fractional_k_trains_resumes_and_round_trips(tmp_path):
    x, _ = superposition(2000, d=16, n_true=32)
    store = write_store(tmp_path / "acts", x, shard_rows=700, hook="h", source="toy")
    cfg = dict(arch="batchtopk", d_sae=64, k=2.5, batch_size=128, steps=30, checkpoint_every=7)
    whole = train_sae(store, tmp_path / "whole", TrainConfig(**cfg), progress=False)
    assert load_sae(tmp_path / "whole").cfg.k == 2.5
    rec = json.loads((tmp_path / "whole" / "training.json").read_text())
    assert rec["config"]["k"] == 2.5 and rec["history"][-1]["l0"] == pytest.approx(2.5, abs=0.01)

    class Stop(Exception):
        pass

    def stop(step, _stats):
        if step == 12:
            raise Stop

    with pytest.raises(Stop):
        train_sae(store, tmp_path / "cut", TrainConfig(**cfg), progress=False, on_step=stop)
    resumed = train_sae(store, tmp_path / "cut", TrainConfig(**cfg), resume=True, progress=False)
    for (name, a), (_, b) in zip(
        whole.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "whole"))
    with torch.no_grad():
        torch.testing.assert_close(theirs(x[:200]), whole(x[:200]))
    with pytest.raises(RlsaeError, match="k: expected an integer"):
        TrainConfig(arch="topk", k=2.5).validate()


def test_cli_fractional_k(tmp_path, run_cli):
    x, _ = superposition(1000, d=16, n_true=32)
    store = write_store(tmp_path / "acts", x, shard_rows=700, hook="h", source="toy")
    args = ["sae", "train", "--acts", store, "--d-sae", 64, "--steps", 3, "--batch-size", 128]
    code, _, err = run_cli(*args, "--out", tmp_path / "a", "--arch", "batchtopk", "--k", 1.5)
    assert code == 0, err
    assert load_sae(tmp_path / "a").cfg.k == 1.5
    code, out, err = run_cli(*args, "--out", tmp_path / "b", "--k", 1.5)  # topk
    assert code == 2 and "k: expected an integer" in err and not (tmp_path / "b").exists()
