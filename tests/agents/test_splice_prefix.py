"""``dqn splice --prefix P``: the reconstruction from the SAE's first P latents spliced in.

Checked against a splice computed another way: an SAE whose latents beyond P were removed
(its first P encoder columns, biases, thresholds and decoder rows, built by hand as a
JumpReLU SAE of width P) plays the same seeded episodes with the same returns, greedy-action
agreement and Q-value FVU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlsae.agents.splice import splice_metrics
from rlsae.errors import RlsaeError
from rlsae.sae import SAE, SAEConfig

KW = dict(episodes=2, seed=1, epsilon=0.0, max_episode_steps=60)


def _matryoshka(d_in: int = 512, groups: tuple[int, ...] = (8, 8, 16, 32)) -> SAE:
    cfg = SAEConfig(
        d_in=d_in, d_sae=sum(groups), arch="matryoshka", k=8, matryoshka_groups=list(groups),
        hook_name="fc1",
    )  # fmt: skip
    sae = SAE(cfg, seed=3)
    with torch.no_grad():
        sae.b_enc.copy_(torch.linspace(0.2, -0.1, cfg.d_sae))  # some latents fire, some do not
        sae.threshold.fill_(0.02)  # type: ignore[union-attr]
        sae.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    return sae


def _truncated(sae: SAE, p: int) -> SAE:
    """The same SAE with latents p.. removed: a JumpReLU SAE of width p."""
    cut = SAE(SAEConfig(d_in=sae.d_in, d_sae=p, arch="jumprelu", hook_name="fc1"), seed=0)
    with torch.no_grad():
        cut.W_enc.copy_(sae.W_enc[:, :p])
        cut.b_enc.copy_(sae.b_enc[:p])
        cut.W_dec.copy_(sae.W_dec[:p])
        cut.b_dec.copy_(sae.b_dec)
        cut.threshold.copy_(sae.threshold[:p])  # type: ignore[index, union-attr]
    return cut


@pytest.mark.parametrize("p", [8, 32])
def test_a_prefix_splice_is_the_splice_of_the_sae_without_the_other_latents(
    nature_agent: Path, p: int
):
    sae = _matryoshka()
    got = splice_metrics(nature_agent, sae, prefix=p, **KW)
    ref = splice_metrics(nature_agent, _truncated(sae, p), **KW)
    assert got.prefix == p and ref.prefix is None
    assert got.returns_sae == ref.returns_sae and got.returns_original == ref.returns_original
    assert got.action_agreement == ref.action_agreement
    assert got.action_agreement_spliced == ref.action_agreement_spliced
    assert got.q_fvu == pytest.approx(ref.q_fvu, rel=1e-5, abs=1e-9)


def test_the_reconstruction_of_a_prefix_drops_exactly_the_later_latents():
    sae = _matryoshka()
    x = torch.randn(50, 512, generator=torch.Generator().manual_seed(0)).double()
    s64 = sae.double()
    for p in (8, 16, 32, 64):
        f = torch.relu(s64.pre_acts(x))
        f = f * (s64.pre_acts(x) > s64.threshold)
        want = f[:, :p] @ s64.W_dec[:p] + s64.b_dec  # dense float64, by hand
        torch.testing.assert_close(s64.reconstruct(x, p), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(s64.reconstruct(x, 64), s64(x), rtol=0, atol=0)


def test_the_whole_prefix_is_the_plain_splice(nature_agent: Path):
    sae = _matryoshka()
    full = splice_metrics(nature_agent, sae, **KW)
    whole = splice_metrics(nature_agent, sae, prefix=sae.d_sae, **KW)
    assert whole.returns_sae == full.returns_sae and whole.q_fvu == full.q_fvu


def test_bad_prefixes_are_refused_in_one_line(nature_agent: Path):
    sae = _matryoshka()
    with pytest.raises(RlsaeError, match=r"prefix: expected 1 to d_sae=64 latents, got 65"):
        splice_metrics(nature_agent, sae, prefix=65, **KW)
    with pytest.raises(RlsaeError, match=r"prefix: expected an integer"):
        splice_metrics(nature_agent, sae, prefix=1.5, **KW)  # type: ignore[arg-type]
    topk = SAE(SAEConfig(d_in=512, d_sae=64, k=8, hook_name="fc1"), seed=0)
    with pytest.raises(RlsaeError, match="a topk SAE has no prefixes"):
        splice_metrics(nature_agent, topk, prefix=8, **KW)


def test_dqn_splice_prefix_on_the_command_line(nature_agent: Path, tmp_path: Path, run_cli):
    sae = _matryoshka()
    sae.save(tmp_path / "sae")
    code, out, _ = run_cli(
        "dqn", "splice", "--agent", str(nature_agent), "--sae", str(tmp_path / "sae"),
        "--episodes", "2", "--seed", "1", "--max-episode-steps", "60", "--prefix", "16", "--json",
    )  # fmt: skip
    assert code == 0
    got = json.loads(out)
    ref = splice_metrics(nature_agent, _truncated(sae, 16), **KW)
    assert got["prefix"] == 16 and got["returns_sae"] == ref.returns_sae
    code, out, err = run_cli("dqn", "splice", "--agent", str(nature_agent), "--sae", str(tmp_path / "sae"),
                  "--prefix", "0")  # fmt: skip
    assert code == 2 and not out and err.count("error:") == 1 and "prefix" in err
