"""The crosscoder core (issue 14): its losses and gradients against a dense float64 reference
written in the crosscoder's own layout, Latent Scaling's betas against least squares solved
another way, bit-identical resume, the file layout, and bad input refused in one line with
nothing left behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlsae.errors import RlsaeError
from rlsae.sae._fast import topk_loss
from rlsae.sae.config import SAEConfig
from rlsae.sae.crosscoder import Crosscoder, CrosscoderSpec, load_crosscoder
from rlsae.sae.crosscoder_config import CrosscoderConfig, LatentConfig
from rlsae.sae.crosscoder_train import CrosscoderRecord, l1_loss, train_crosscoder
from rlsae.sae.latents import analyse_latents, betas, classify, scaling_sums
from rlsae.sae.model import SAE, load_sae
from rlsae.sae.paired import PairedStore
from rlsae.sae.store import ActivationWriter

from .conftest import superposition, write_store

D = 8


@pytest.fixture
def pair(tmp_path):
    """Two aligned stores of 1200 rows (the tuned one: the base one changed a little)."""
    xb, _ = superposition(1200, d=D, n_true=24, seed=0)
    g = torch.Generator().manual_seed(1)
    xt = xb @ (torch.eye(D) + 0.3 * torch.randn(D, D, generator=g))
    ctx = {"document": np.arange(1200) // 40, "position": np.arange(1200) % 40}
    paths = []
    for name, x in (("base", xb), ("tuned", xt)):
        with ActivationWriter(tmp_path / name, D, shard_rows=400, hook="h", source=name) as w:
            w.append(x, ctx)
        paths.append(tmp_path / name)
    return paths


def _concat_sae(seed: int, dtype: str = "float64", arch: str = "batchtopk") -> SAE:
    sae = SAE(SAEConfig(d_in=2 * D, d_sae=24, k=3, arch=arch, dtype=dtype), seed=seed)
    with torch.no_grad():  # non-trivial biases
        g = torch.Generator().manual_seed(seed + 1)
        sae.b_enc.copy_(0.1 * torch.randn(24, generator=g))
        sae.b_dec.copy_(0.1 * torch.randn(2 * D, generator=g))
        sae.W_dec.mul_(torch.rand(24, 1, generator=g).to(sae.W_dec.dtype) + 0.5)
    return sae


def _crosscoder_leaves(sae: SAE, sparsity: str) -> dict[str, torch.Tensor]:
    """The SAE's weights in the crosscoder layout, as float64 leaves of a new autograd graph."""
    spec = CrosscoderSpec(d_in=D, d_sae=24, sparsity=sparsity, dtype="float64")  # type: ignore[arg-type]
    sd = {k: v.detach() for k, v in sae.state_dict().items()}
    sd["W_enc"] = sae.W_enc.detach()
    if sparsity == "batchtopk":
        sd["threshold"] = torch.zeros(24, dtype=torch.float64)
    cc = Crosscoder.from_concat(spec, sd)
    return {
        k: getattr(cc, k).detach().double().requires_grad_()
        for k in ("W_enc", "b_enc", "W_dec", "b_dec")
    }


def _dense_pre(p: dict[str, torch.Tensor], xb: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """The crosscoder's encoder, written per model: sum_m (x_m - b_dec[m]) @ W_enc[m] + b_enc."""
    return (xb - p["b_dec"][0]) @ p["W_enc"][0] + (xt - p["b_dec"][1]) @ p["W_enc"][1] + p["b_enc"]


def _dense_sse(p, f, xb, xt) -> torch.Tensor:
    return sum((f @ p["W_dec"][m] + p["b_dec"][m] - x).pow(2).sum() for m, x in enumerate((xb, xt)))


def _grads_in_crosscoder_layout(sae: SAE) -> dict[str, torch.Tensor]:
    n = 24
    return {
        "W_enc": sae.W_enc.grad.reshape(2, D, n),
        "b_enc": sae.b_enc.grad,
        "W_dec": sae.W_dec.grad.reshape(n, 2, D).transpose(0, 1),
        "b_dec": sae.b_dec.grad.reshape(2, D),
    }


def test_batchtopk_loss_and_gradients_equal_a_dense_float64_crosscoder(pair):
    """The training step's loss (the SAE's fast BatchTopK path on [base | tuned]) and its
    gradients, mapped to the crosscoder layout, equal a dense float64 crosscoder written per
    model with plain autograd: BatchTopK keeps the k x rows largest ReLU'd pre-activations."""
    x = PairedStore(*pair).read_rows(np.arange(256)).double()
    xb, xt = x[:, :D], x[:, D:]
    sae = _concat_sae(0)
    sse, _, _, _ = topk_loss(x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, 3, batch=True)
    sse.backward()
    p = _crosscoder_leaves(sae, "batchtopk")
    r = torch.relu(_dense_pre(p, xb, xt))
    t = r.reshape(-1).topk(3 * 256).values.min()
    f = r * (r >= t)
    ref = _dense_sse(p, f, xb, xt)
    ref.backward()
    assert torch.allclose(sse, ref, rtol=1e-10)
    for name, g in _grads_in_crosscoder_layout(sae).items():
        assert torch.allclose(g, p[name].grad, rtol=1e-8, atol=1e-10), name


def test_l1_loss_and_gradients_equal_a_dense_float64_crosscoder(pair):
    """The L1 crosscoder's loss, mean over rows of the squared error of both models plus
    l1 * sum_j f_j (||d_j base|| + ||d_j tuned||), and its gradients, against the dense
    per-model reference."""
    x = PairedStore(*pair).read_rows(np.arange(300)).double()
    xb, xt = x[:, :D], x[:, D:]
    sae = _concat_sae(3, arch="relu")
    loss, _, _, _ = l1_loss(sae, x, 0.05)
    loss.backward()
    p = _crosscoder_leaves(sae, "l1")
    f = torch.relu(_dense_pre(p, xb, xt))
    norms = p["W_dec"].norm(dim=2)  # (2, d_sae)
    ref = _dense_sse(p, f, xb, xt) / 300 + 0.05 * (f * (norms[0] + norms[1])).sum() / 300
    ref.backward()
    assert torch.allclose(loss, ref, rtol=1e-10)
    for name, g in _grads_in_crosscoder_layout(sae).items():
        assert torch.allclose(g, p[name].grad, rtol=1e-8, atol=1e-10), name


def test_latent_scaling_betas_equal_least_squares_solved_another_way(pair, tmp_path):
    """Each beta is the least-squares scale of the stacked vectors f_j(x) v_j to the stacked
    targets: solved here by numpy's lstsq on the explicit (rows x d) system, per latent."""
    cc = train_crosscoder(
        *pair, tmp_path / "cc", CrosscoderConfig(d_sae=24, k=3, steps=40, batch_size=128),
        progress=False,
    )  # fmt: skip
    ps = PairedStore(*pair)
    got = betas(cc, scaling_sums(cc, ps, batch_size=500))  # several batches
    x = ps.read_rows(np.arange(ps.rows)).double()
    xs = (x[:, :D], x[:, D:])
    with torch.no_grad():
        f = cc.encode(*xs).double()
        W, b = cc.W_dec.double(), cc.b_dec.double()
    own = (W[1].norm(dim=1) >= W[0].norm(dim=1)).long()
    checked = 0
    for j in range(cc.d_sae):
        if not (f[:, j] > 0).any():
            assert torch.isnan(got["error_base"][j])
            continue
        v = W[own[j], j]
        a = (f[:, j : j + 1] * v).reshape(-1, 1).numpy()  # (rows * d, 1)
        for m, name in enumerate(("base", "tuned")):
            recon = f @ W[m]
            err = xs[m] - recon - b[m] + f[:, j : j + 1] * W[m, j]
            for kind, y in (("reconstruction", recon), ("error", err)):
                beta = np.linalg.lstsq(a, y.reshape(-1).numpy(), rcond=None)[0][0]
                assert got[f"{kind}_{name}"][j].item() == pytest.approx(beta, rel=1e-9, abs=1e-12)
        checked += 1
    assert checked >= 10


def test_classes_follow_the_thresholds():
    cfg = LatentConfig(tuned_only_ratio=0.9, base_only_ratio=0.1, nu_error_max=0.2,
                       nu_reconstruction_max=0.2)  # fmt: skip
    assert classify(0, 0.95, 0.0, 0.0, cfg) == "dead"
    assert classify(5, 0.5, 0.9, 0.9, cfg) == "shared"
    assert classify(5, 0.95, 0.05, 0.1, cfg) == "tuned_only"
    assert classify(5, 0.05, 0.05, 0.1, cfg) == "base_only"
    assert classify(5, 0.95, 0.35, 0.0, cfg) == "artefact"  # Complete Shrinkage
    assert classify(5, 0.05, 0.0, 0.5, cfg) == "artefact"  # Latent Decoupling
    assert classify(5, 0.95, None, 0.0, cfg) == "artefact"  # undefined: not confirmed


@pytest.mark.parametrize("arch", ["batchtopk", "l1"])
def test_resume_is_bit_identical(pair, tmp_path, arch):
    cfg = CrosscoderConfig(arch=arch, d_sae=24, k=3, steps=30, batch_size=128, checkpoint_every=7)
    whole = train_crosscoder(*pair, tmp_path / "whole", cfg, progress=False)

    def stop(step, stats):
        if step == 17:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_crosscoder(*pair, tmp_path / "cut", cfg, progress=False, on_step=stop)
    assert not (tmp_path / "cut").exists() and (tmp_path / ".cut.partial").is_dir()
    resumed = train_crosscoder(*pair, tmp_path / "cut", cfg, resume=True, progress=False)
    for name, t in whole.state_dict().items():
        assert torch.equal(t, resumed.state_dict()[name]), name
    a = CrosscoderRecord.read(tmp_path / "whole" / "training.json")
    b = CrosscoderRecord.read(tmp_path / "cut" / "training.json")
    assert a.history == b.history and a.final == b.final
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == [
        "cfg.json", "crosscoder_weights.safetensors", "training.json",
    ]  # fmt: skip
    assert not (tmp_path / ".cut.partial").exists()
    # a resume with other settings is refused in one line
    other = CrosscoderConfig(arch=arch, d_sae=24, k=4, steps=30, batch_size=128)
    with pytest.raises(RlsaeError, match=r"other settings \(k 3 -> 4\)"):
        train_crosscoder(*pair, tmp_path / "cut", other, resume=True, progress=False)
    # and so is one on other stores (here the pair swapped), interrupted or finished
    with pytest.raises(RlsaeError, match=r"trained on other stores than .*; use those stores"):
        train_crosscoder(*pair[::-1], tmp_path / "cut", cfg, resume=True, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_crosscoder(*pair, tmp_path / "cut2", cfg, progress=False, on_step=stop)
    with pytest.raises(RlsaeError, match=r"trained on other stores than .*; use those stores"):
        train_crosscoder(*pair[::-1], tmp_path / "cut2", cfg, resume=True, progress=False)
    assert (tmp_path / ".cut2.partial").is_dir()  # the refused resume left the run as it was


def test_files_load_back_and_are_refused_by_the_sae_loader(pair, tmp_path):
    cfg = CrosscoderConfig(d_sae=24, k=3, steps=5, batch_size=128)
    cc = train_crosscoder(*pair, tmp_path / "cc", cfg, progress=False)
    back = load_crosscoder(tmp_path / "cc")
    assert back.spec == cc.spec and back.spec.architecture == "crosscoder"
    for name, t in cc.state_dict().items():
        assert torch.equal(t, back.state_dict()[name])
    assert torch.equal(Crosscoder.from_concat(cc.spec, cc.to_concat()).W_dec, cc.W_dec)
    with pytest.raises(RlsaeError) as e:
        load_sae(tmp_path / "cc")
    assert "crosscoder" in str(e.value) and "\n" not in str(e.value)
    SAE(SAEConfig(d_in=D, d_sae=16, k=2)).save(tmp_path / "sae")
    with pytest.raises(RlsaeError, match="is an SAE .* not a crosscoder"):
        load_crosscoder(tmp_path / "sae")
    info = analyse_latents(cc, PairedStore(*pair))
    assert info.n_latents == 24 and sum(info.counts.values()) == 24


def _store(path, x, **ctx):
    with ActivationWriter(path, x.shape[1], shard_rows=400, hook="h", source="s") as w:
        w.append(x, ctx or None)
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("rows", "has 1200 rows, tuned .* 800"),
        ("width", "different widths"),
        ("context", r"row 0 is document 0 in base .* but 1 in tuned"),
        ("shards", "split into shards differently"),
    ],
)
def test_misaligned_stores_are_refused_in_one_line_with_nothing_left(pair, tmp_path, case, message):
    base = pair[0]
    x = torch.randn(1200, D)
    ctx = {"document": np.arange(1200) // 40 + 1, "position": np.arange(1200) % 40}
    other = {
        "rows": lambda: _store(tmp_path / "o", torch.randn(800, D)),
        "width": lambda: _store(tmp_path / "o", torch.randn(1200, D + 1)),
        "context": lambda: _store(tmp_path / "o", x, **ctx),
        "shards": lambda: write_store(tmp_path / "o", x, shard_rows=300),
    }[case]()
    with pytest.raises(RlsaeError, match=message) as e:
        train_crosscoder(base, other, tmp_path / "cc", CrosscoderConfig(steps=2), progress=False)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "o", "tuned"]


def test_k_above_the_latents_is_refused_before_any_write(pair, tmp_path):
    with pytest.raises(RlsaeError, match="k must be between 1 and d_sae=16, got k=20"):
        train_crosscoder(*pair, tmp_path / "cc", CrosscoderConfig(expansion=2, k=20))
    assert not (tmp_path / "cc").exists() and not (tmp_path / ".cc.partial").exists()
