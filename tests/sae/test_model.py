"""SAE model: encode/decode against hand-computed values, save/load round trips."""

from __future__ import annotations

import pytest
import torch

from rlsae.errors import RlsaeError
from rlsae.sae import SAE, SAEConfig, load_sae


def test_topk_encode_by_hand():
    sae = SAE(SAEConfig(d_in=2, d_sae=3, k=2))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 1.0]]))
        sae.b_enc.copy_(torch.tensor([0.0, -5.0, 0.5]))
        sae.b_dec.copy_(torch.tensor([1.0, 1.0]))
        sae.W_dec.copy_(torch.eye(3, 2))
    x = torch.tensor([[3.0, 2.0]])  # x - b_dec = [2, 1] -> pre = [2, -3, -0.5]
    f = sae.encode(x)
    assert torch.equal(f, torch.tensor([[2.0, 0.0, 0.0]]))  # top-2 = {2, -0.5}; ReLU zeroes -0.5
    assert torch.equal(sae(x), torch.tensor([[3.0, 1.0]]))
    assert torch.equal(sae.decode(f), sae(x))


def test_relu_and_tied():
    sae = SAE(SAEConfig(d_in=4, d_sae=6, arch="relu", tied=True), seed=0)
    assert "W_enc" not in dict(sae.named_parameters())
    assert torch.equal(sae.W_enc, sae.W_dec.t())
    x = torch.randn(5, 4)
    ref = torch.relu((x - sae.b_dec) @ sae.W_dec.t() + sae.b_enc) @ sae.W_dec + sae.b_dec
    assert torch.allclose(sae(x), ref)


@pytest.mark.parametrize("arch", ["topk", "relu"])
@pytest.mark.parametrize("tied", [False, True])
def test_save_load_round_trip(tmp_path, arch, tied):
    cfg = SAEConfig(d_in=8, d_sae=32, arch=arch, k=4, tied=tied, hook_name="fc1", source="agent0")
    sae = SAE(cfg, seed=1)
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    sae.save(tmp_path / "sae")
    back = load_sae(tmp_path / "sae")
    assert back.cfg == cfg
    x = torch.randn(10, 8)
    assert torch.equal(back(x), sae(x))
    assert torch.equal(back.encode(x), sae.encode(x))


def test_k_larger_than_d_sae_rejected():
    with pytest.raises(RlsaeError, match="k must be between"):
        SAEConfig(d_in=4, d_sae=8, k=9)
