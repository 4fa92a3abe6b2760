"""Training: resume is bit-exact, history and files are written, the maths of the step holds."""

from __future__ import annotations

import json

import pytest
import torch

from rlsae.errors import RlsaeError
from rlsae.sae import SAE, ActivationStore, load_sae
from rlsae.sae.train import TrainConfig, lr_factor, train_sae

from .conftest import superposition, write_store


@pytest.fixture
def toy_store(tmp_path):
    x, _ = superposition(4000, d=16, n_true=32)
    return write_store(tmp_path / "acts", x, shard_rows=1000, hook="layer1", source="toy")


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_resume_after_interruption_is_bit_exact(tmp_path, toy_store, arch):
    cfg = TrainConfig(
        arch=arch,
        d_sae=48,
        k=4,
        steps=30,
        batch_size=256,
        checkpoint_every=7,
        aux_k=8,
        dead_rows=512,
        l1=0.05,
        tied=arch == "relu",
    )
    full = train_sae(toy_store, tmp_path / "full", cfg, progress=False)

    def interrupt(step, stats):
        if step == 17:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sae(toy_store, tmp_path / "cut", cfg, progress=False, on_step=interrupt)
    assert not (tmp_path / "cut").exists()  # no half-written SAE directory
    assert (tmp_path / ".cut.partial" / "checkpoints" / "latest.pt").is_file()
    with pytest.raises(RlsaeError, match="--resume"):
        train_sae(toy_store, tmp_path / "cut", cfg, progress=False)
    resumed = train_sae(toy_store, tmp_path / "cut", cfg, resume=True, progress=False)
    for name, p in full.state_dict().items():
        assert torch.equal(p, resumed.state_dict()[name]), name
    h1 = json.loads((tmp_path / "full" / "training.json").read_text())["history"]
    h2 = json.loads((tmp_path / "cut" / "training.json").read_text())["history"]
    assert h1 == h2
    assert not (tmp_path / ".cut.partial").exists()


def test_resume_after_a_stop_between_checkpoint_and_history(tmp_path, toy_store, monkeypatch):
    """A stop that lands between the checkpoint write and the history.json copy (a real SIGINT
    did, in the slow test) still resumes to the uninterrupted run's history: the history rides
    inside the checkpoint, and the lagging copy is not what resumes."""
    import rlsae.sae.train as train_mod

    cfg = TrainConfig(d_sae=32, k=4, steps=30, batch_size=128, checkpoint_every=8, log_every=5)
    train_sae(toy_store, tmp_path / "full", cfg, progress=False)
    full = json.loads((tmp_path / "full" / "training.json").read_text())["history"]
    real_write = train_mod.atomic_write_json

    def write(path, obj):
        if path.name == "history.json" and obj and obj[-1]["step"] == 15:
            raise KeyboardInterrupt  # checkpoint at step 16 written, history copy not
        return real_write(path, obj)

    monkeypatch.setattr(train_mod, "atomic_write_json", write)
    with pytest.raises(KeyboardInterrupt):
        train_sae(toy_store, tmp_path / "cut", cfg, progress=False)
    monkeypatch.setattr(train_mod, "atomic_write_json", real_write)
    work = tmp_path / ".cut.partial"
    on_disk = json.loads((work / "history.json").read_text())
    assert on_disk[-1]["step"] == 5  # the copy lags the checkpoint (step 16)
    train_sae(toy_store, tmp_path / "cut", cfg, resume=True, progress=False)
    assert json.loads((tmp_path / "cut" / "training.json").read_text())["history"] == full


def test_training_writes_sae_dir_and_learns(tmp_path, toy_store):
    cfg = TrainConfig(d_sae=64, k=4, epochs=6, batch_size=128, lr=4e-3, log_every=10)
    sae = train_sae(toy_store, tmp_path / "sae", cfg, progress=False)
    files = sorted(p.name for p in (tmp_path / "sae").iterdir())
    assert files == [
        "cfg.json",
        "feature_stats.safetensors",
        "sae_weights.safetensors",
        "training.json",
    ]
    tj = json.loads((tmp_path / "sae" / "training.json").read_text())
    assert tj["steps"] == 6 * (4000 // 128) and tj["config"]["k"] == 4 and tj["aux_k"] == 8
    hist = tj["history"]
    assert hist[0]["step"] == 10 and hist[-1]["step"] == tj["steps"]
    assert hist[-1]["fvu"] < 0.5 * hist[0]["fvu"]
    assert all(h["l0"] <= 4 for h in hist)
    assert tj["final"]["rows"] == 4000 and tj["final"]["fvu"] < 0.3
    back = load_sae(tmp_path / "sae")
    assert (back.cfg.hook_name, back.cfg.source) == ("layer1", "toy")
    torch.testing.assert_close(back.W_dec.norm(dim=1), torch.ones(64))  # unit-norm decoder kept
    assert torch.equal(back.W_dec, sae.W_dec)


def test_b_dec_starts_at_data_mean(tmp_path, toy_store):
    cfg = TrainConfig(
        d_sae=32,
        k=4,
        steps=1,
        batch_size=64,
        lr=1e-12,
        final_eval=False,
        warmup_frac=0,
        decay_frac=0,
    )
    sae = train_sae(toy_store, tmp_path / "s", cfg, progress=False)
    mean = torch.cat(list(ActivationStore(toy_store).iter_sequential(4000))).mean(0)
    torch.testing.assert_close(sae.b_dec.detach(), mean, atol=1e-6, rtol=1e-5)


def test_decoder_gradient_projection_removes_parallel_part():
    sae = SAE.__new__(SAE)
    from rlsae.sae import SAEConfig

    sae = SAE(SAEConfig(d_in=6, d_sae=10, k=2), seed=0)
    sae.W_dec.grad = torch.randn(10, 6)
    g0 = sae.W_dec.grad.clone()
    sae.remove_parallel_decoder_grad()
    w = sae.W_dec.detach()
    torch.testing.assert_close((sae.W_dec.grad * w).sum(1), torch.zeros(10), atol=1e-6, rtol=0)
    # what was removed is parallel to each row
    removed = g0 - sae.W_dec.grad
    torch.testing.assert_close(removed, (g0 * w).sum(1, keepdim=True) * w)


def test_lr_schedule_by_hand():
    f = [lr_factor(s, 100, 0.1, 0.2) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[50] == 1.0
    assert (
        f[80] == pytest.approx(1.0) and f[90] == pytest.approx(0.5) and f[99] == pytest.approx(0.05)
    )


def test_auxk_trains_dead_latents_on_the_residual(toy_store):
    """AuxK (Gao et al. 2024) gives dead latents a gradient of their own: with it they learn to
    reconstruct the live latents' residual, without it they barely move."""
    import copy

    from rlsae.sae import SAEConfig
    from rlsae.sae.train import TrainState, make_optimizer, train_step

    from .reference import topk_forward

    x = torch.cat(list(ActivationStore(toy_store).iter_sequential(512)))[:512]
    base = SAE(SAEConfig(d_in=16, d_sae=64, k=3), seed=4)
    with torch.no_grad():
        base.b_dec.copy_(x.mean(0))
        base.b_enc[:32] += 2.0  # the first half always wins the top-k: the second half starves
    dead = torch.arange(32, 64)
    cfg = TrainConfig(
        d_sae=64, k=3, lr=3e-3, dead_rows=10**9, warmup_frac=0, decay_frac=0, grad_clip=0
    )

    def run(aux_k: int):
        sae = copy.deepcopy(base)
        opt = make_optimizer(sae, cfg.lr)
        since = torch.zeros(64, dtype=torch.int64)
        state = TrainState(sae, opt, cfg, total=60, base_lr=cfg.lr, aux_k=aux_k, since_fired=since)
        aux_losses = []
        for _ in range(60):
            since[:32] = 0
            since[32:] = cfg.dead_rows  # dead, whatever they do
            with torch.no_grad():  # how well the dead latents explain the residual right now
                recon, vals, idx, aux = topk_forward(
                    x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, 3, dead, 8
                )
                e = x - recon
                aux_losses.append(float(((aux - e) ** 2).sum() / (e**2).sum()))
            train_step(state, x)
        return sae, aux_losses

    no_aux, l_no = run(0)
    with_aux, l_aux = run(8)
    # without AuxK the starved half gets no gradient at all; with it, it does
    # (decoder rows only see the unit-norm rescaling, which moves them by rounding error)
    assert torch.equal(no_aux.b_enc[32:], base.b_enc[32:])
    torch.testing.assert_close(no_aux.W_dec[32:], base.W_dec[32:], atol=1e-6, rtol=0)
    assert (with_aux.W_dec[32:] - base.W_dec[32:]).norm(dim=1).max() > 0.05
    # AuxK lowers its own objective: the starved latents' reconstruction of the residual gets
    # better with it (1.20 -> 1.00 here) and drifts without it (-> 1.35). Whether they then win
    # rows of their own is the next test.
    assert l_aux[-1] < 0.9 * l_aux[0]
    assert l_aux[-1] < 0.8 * l_no[-1]


def test_auxk_leaves_fewer_dead_latents_when_latents_are_starved():
    """Latents killed by their twins: half the latents start as exact copies of the other half with
    a slightly lower bias, so they always lose the top-k and die, while the data (96 planted
    directions, 64 latents) has more features than latents, so there is residual left to learn.
    Without AuxK the starved twins get no gradient and stay dead; AuxK trains them on the
    residual until they win rows of their own (Gao et al. 2024). Same batches, same seed."""
    import copy

    from rlsae.sae import SAEConfig
    from rlsae.sae.train import TrainState, make_optimizer, train_step

    x, _ = superposition(8192, d=32, n_true=96, p=0.03, seed=0)
    base = SAE(SAEConfig(d_in=32, d_sae=64, k=4), seed=1)
    with torch.no_grad():
        base.b_dec.copy_(x.mean(0))
        base.W_dec[32:] = base.W_dec[:32]
        base.W_enc[:, 32:] = base.W_enc[:, :32]
        base.b_enc[32:] = base.b_enc[:32] - 0.01

    def run(aux_k: int) -> tuple[int, float]:
        sae = copy.deepcopy(base)
        lr, B, epochs = 3e-3, 128, 8
        opt = make_optimizer(sae, lr)
        cfg = TrainConfig(d_sae=64, k=4, lr=lr, dead_rows=2048, warmup_frac=0, decay_frac=0)
        since = torch.zeros(64, dtype=torch.int64)
        g = torch.Generator().manual_seed(0)
        total = epochs * len(x) // B
        state = TrainState(sae, opt, cfg, total, base_lr=lr, aux_k=aux_k, since_fired=since)
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=g)
            for s in range(0, len(x), B):
                train_step(state, x[perm[s : s + B]])
        with torch.no_grad():
            vals, idx = sae.encode_topk(x)
            counts = torch.bincount(idx[vals > 0], minlength=64)
            fvu = float(((sae(x) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
        return int((counts == 0).sum()), fvu

    dead_without, fvu_without = run(aux_k=0)
    dead_with, fvu_with = run(aux_k=16)
    assert dead_without >= 8  # the set-up really kills latents (11 here)
    assert dead_with <= dead_without // 2  # AuxK revives most of them (3 here)
    assert fvu_with < fvu_without  # and the revived latents explain more of the data


def test_auxk_leaves_fewer_dead_latents_when_data_lies_in_a_subspace(tmp_path):
    """Latents killed by the data: toy superposition rows (256 planted directions, ~2 active per
    row) that span only a random 32-dimensional subspace of a 256-dimensional space. Latents
    start as random unit vectors in all 256 dimensions, so only ~sqrt(32/256) = 0.35 of each
    encoder row lies in the data's subspace. The latents that win the top-k early are trained into
    it (that part grows to ~0.9) and outbid the rest, which stay at ~0.3, stop winning, get no more
    gradient and stay dead. The same rows in their own 32 dimensions leave no latent dead. With
    256 directions for 128 latents there is residual left to learn, so AuxK has something to
    revive them with. Trained through ``train_sae`` (default LR and schedule); dead = never fires
    on 4096 held-out rows. k_aux = 8, below the number of dead latents: with the default
    d_in/2 = 128 the AuxK term is weighted down by n_dead/k_aux (~0.1 here) and revives fewer
    (5-13 dead instead of 0-3 over seeds 0-7)."""
    from rlsae.sae.metrics import evaluate_sae

    x32, _ = superposition(8192 + 4096, d=32, n_true=256, p=0.008, seed=0)
    basis, _ = torch.linalg.qr(torch.randn(256, 32, generator=torch.Generator().manual_seed(1)))
    x256 = x32 @ basis.T  # the same rows, isometrically embedded in 256 dimensions

    def run(name: str, aux_k: int) -> tuple[int, float]:
        cfg = TrainConfig(
            d_sae=128,
            k=4,
            batch_size=128,
            epochs=8,
            dead_rows=2048,
            aux_k=aux_k,
            final_eval=False,
            checkpoint_every=10**6,
        )
        sae = train_sae(
            tmp_path / f"{name}_train", tmp_path / f"{name}_sae_{aux_k}", cfg, progress=False
        )
        m = evaluate_sae(sae, ActivationStore(tmp_path / f"{name}_test")).metrics
        return m.dead, m.fvu

    for name, x in (("full", x32), ("sub", x256)):  # 8192 rows to train on, 4096 held out
        write_store(tmp_path / f"{name}_train", x[:8192], shard_rows=4096)
        write_store(tmp_path / f"{name}_test", x[8192:], shard_rows=4096)
    dead_full, _ = run("full", aux_k=0)
    dead_without, fvu_without = run("sub", aux_k=0)
    dead_with, fvu_with = run("sub", aux_k=8)
    # measured here (and over data/init seeds 0-7): 0 (0), 10 (9-20), 0 (0-3) dead latents
    assert dead_full <= 1  # in its own 32 dimensions the data kills nothing
    assert dead_without >= 8  # in the subspace it does
    assert dead_with <= 3  # AuxK revives nearly all of them
    # and the revived latents explain more of the data: 0.304 vs 0.316 (lower for all 8 seeds)
    assert fvu_with < fvu_without


@pytest.mark.parametrize("fused", [True, False])
def test_adam_steps_column_major_encoder_like_torch(fused):
    """rlsae's Adam steps a column-major parameter as its contiguous transpose: bit-identical to
    torch's Adam, moments keep the parameter's shape and layout, and its state dict resumes."""
    from rlsae.sae.model import encoder_parameter
    from rlsae.sae.train import Adam

    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 40, generator=g)
    b = torch.randn(40, generator=g)
    runs = {}
    for name, cls in (("ours", Adam), ("torch", torch.optim.Adam)):
        W = encoder_parameter(w)  # (24, 40) stored column-major
        bias = torch.nn.Parameter(b.clone())
        assert not W.is_contiguous() and W.t().is_contiguous()
        opt = cls([W, bias], lr=1e-2, fused=fused)
        gg = torch.Generator().manual_seed(1)
        for step in range(6):
            W.grad = torch.randn(40, 24, generator=gg).t()  # the layout autograd gives it
            bias.grad = torch.randn(40, generator=gg)
            opt.step()
            if step == 2 and name == "ours":  # resume from a state dict half-way
                sd = opt.state_dict()
                opt = cls([W, bias], lr=1e-2, fused=fused)
                opt.load_state_dict(sd)
        runs[name] = (W.detach().clone(), bias.detach().clone(), opt.state[W]["exp_avg"])
        assert W.shape == (24, 40) and W.grad.shape == (24, 40) and not W.is_contiguous()
    (wa, ba, ma), (wb, bb, mb) = runs["ours"], runs["torch"]
    assert torch.equal(wa, wb) and torch.equal(ba, bb) and torch.equal(ma, mb)
    assert ma.shape == (24, 40) and ma.stride() == mb.stride()
