"""SAELens interop: our files load in SAELens with the same outputs; SAELens-trained SAEs work here."""

from __future__ import annotations

import json
import warnings

import pytest
import sae_lens
import torch

from rlsae.analysis.mmcs import compare_dictionaries
from rlsae.sae import SAE, SAEConfig, load_sae

from .conftest import superposition, write_store


@pytest.mark.parametrize("arch", ["topk", "relu"])
@pytest.mark.parametrize("tied", [False, True])
def test_ours_loads_in_saelens_with_same_outputs(tmp_path, arch, tied):
    sae = SAE(
        SAEConfig(
            d_in=16, d_sae=64, arch=arch, k=5, tied=tied, hook_name="blocks.1.hook_resid_post"
        ),
        seed=2,
    )
    with torch.no_grad():
        sae.b_enc.uniform_(-0.2, 0.2)
        sae.b_dec.normal_()
        if arch == "relu":  # ReLU decoders are not unit norm
            sae.W_dec.mul_(torch.rand(64, 1) + 0.5)
    sae.save(tmp_path / "sae")
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"))
    expected = "TopKSAE" if arch == "topk" else "StandardSAE"
    assert type(theirs).__name__ == expected
    assert theirs.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    torch.testing.assert_close(
        theirs.W_enc.detach(), sae.W_enc.detach()
    )  # tied: W_enc written as W_dec.T
    x = torch.randn(50, 16) * 3
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), sae.encode(x))
        torch.testing.assert_close(theirs(x), sae(x))


def _train_with_saelens(x: torch.Tensor, arch: str, out, steps: int = 40):
    """Train a small SAE with SAELens's own SAETrainer on in-memory batches; save its inference dir."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(0)
    if arch == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=x.shape[1], d_sae=64, k=4))
    else:
        sae = StandardTrainingSAE(
            StandardTrainingSAEConfig(d_in=x.shape[1], d_sae=64, l1_coefficient=0.5)
        )

    def batches():
        g = torch.Generator().manual_seed(0)
        while True:
            yield x[torch.randint(0, x.shape[0], (128,), generator=g)]

    cfg = SAETrainerConfig(
        total_training_samples=128 * steps, train_batch_size_samples=128, lr=3e-3, lr_end=3e-3
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trained = SAETrainer(cfg, sae, batches()).fit()
    trained.save_inference_model(str(out))
    return out


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_saelens_trained_sae_evaluates_and_compares_here(tmp_path, capsys, arch, run_cli):
    x, _ = superposition(2000, d=16, n_true=32)
    store = write_store(tmp_path / "acts", x, shard_rows=700)
    their_dir = _train_with_saelens(x, arch, tmp_path / "theirs")
    cfg = json.loads((their_dir / "cfg.json").read_text())
    assert cfg["architecture"] == ("topk" if arch == "topk" else "standard")

    # The same reconstruction as SAELens's own forward pass.
    theirs = sae_lens.SAE.load_from_disk(str(their_dir))
    with torch.no_grad():
        ref = theirs(x)
    ours = load_sae(their_dir)
    torch.testing.assert_close(ours(x), ref, atol=1e-5, rtol=1e-4)
    ref_fvu = float(((ref - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    ref_l0 = float((theirs.encode(x) > 0).float().sum(-1).mean())

    code, out, err = run_cli("sae", "eval", "--sae", their_dir, "--acts", store, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["fvu"] == pytest.approx(ref_fvu, rel=1e-4)
    assert res["l0"] == pytest.approx(ref_l0, rel=1e-6)
    assert res["rows"] == 2000 and res["d_sae"] == 64
    assert (their_dir / "feature_stats.safetensors").is_file()

    # MMCS between an rlsae SAE and the SAELens one, against a direct computation on their W_dec.
    mine = SAE(SAEConfig(d_in=16, d_sae=32, k=4), seed=5)
    mine.save(tmp_path / "mine")
    code, out, err = run_cli(
        "analyze", "mmcs", "--sae", tmp_path / "mine", "--sae", their_dir, "--json"
    )
    assert code == 0, err
    res = json.loads(out)
    a = mine.W_dec.detach() / mine.W_dec.detach().norm(dim=1, keepdim=True)
    b = theirs.W_dec.detach() / theirs.W_dec.detach().norm(dim=1, keepdim=True)
    cos = a @ b.t()
    assert res["mmcs_ab"] == pytest.approx(float(cos.max(1).values.mean()), abs=1e-5)
    assert res["mmcs_ba"] == pytest.approx(float(cos.max(0).values.mean()), abs=1e-5)
    assert res["mmcs_ab"] == pytest.approx(
        compare_dictionaries(mine.W_dec, theirs.W_dec).result.mmcs_ab, abs=1e-6
    )
