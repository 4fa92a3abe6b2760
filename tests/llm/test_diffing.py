"""Per-token KL between a base and a tuned model, and logit-difference amplification (issue 14).

The KL is checked against a float64 reference computed document by document without padding;
a model against itself gives KL 0 and amplification changes nothing; a "tuned" model planted by
boosting one positive word's unembedding shows that word where the KL is largest, and amplifying
it raises the reward.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rlsae.commands._apps import app
from rlsae.commands.llm import AMPLIFY_OPTIONS, KL_OPTIONS, field_owner
from rlsae.configs import field_default, field_docs
from rlsae.errors import RlsaeError
from rlsae.llm.causal_configs import AmplifyConfig, KLConfig
from rlsae.llm.diffing import AmplifyResult, KLResult, amplified_logits, amplify, token_kl

from .conftest import CORPUS


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("diff_corpus") / "reviews.txt"
    path.write_text("\n".join(CORPUS) + "\n")
    return path


@pytest.fixture(scope="module")
def other_lm(make_lm, save_lm, tmp_path_factory) -> Path:
    """Another random GPT-NeoX with the same tokenizer as ``random_lm_dir``."""
    return save_lm(make_lm(1), tmp_path_factory.mktemp("lm1") / "tuned")


@pytest.fixture(scope="module")
def boosted(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with the unembedding row of " great" scaled by 1.5: a planted 'tuning'."""
    from rlsae.llm.models import load_model

    model, tok = load_model(tiny_model_dir)
    (token,) = tok(" great", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        model.get_output_embeddings().weight[token] *= 1.5
    out = tmp_path_factory.mktemp("boosted") / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    shutil.copy(tiny_model_dir / "corpus_test.txt", out / "corpus_test.txt")
    return out


def reference_kls(base: Path, tuned: Path, corpus: Path, n: int) -> list[np.ndarray]:
    """KL(p_tuned || p_base) per position, one unpadded document at a time, in float64."""
    from rlsae.llm.models import load_model

    mb, tok = load_model(base)
    mt, _ = load_model(tuned)
    out = []
    for text in corpus.read_text().splitlines()[:n]:
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            lb = mb(input_ids=ids).logits[0].double().numpy()
            lt = mt(input_ids=ids).logits[0].double().numpy()
        lb -= np.log(np.exp(lb - lb.max(1, keepdims=True)).sum(1, keepdims=True)) + lb.max(
            1, keepdims=True
        )
        lt -= np.log(np.exp(lt - lt.max(1, keepdims=True)).sum(1, keepdims=True)) + lt.max(
            1, keepdims=True
        )
        out.append((np.exp(lt) * (lt - lb)).sum(1))
    return out


def test_token_kl_equals_a_float64_reference(random_lm_dir, other_lm, corpus):
    cfg = KLConfig(prefixes=12, data=str(corpus), top=5, batch_size=5)
    res = token_kl(random_lm_dir, other_lm, cfg)
    ref = reference_kls(random_lm_dir, other_lm, corpus, 12)
    flat = np.concatenate(ref)
    assert res.positions == len(flat) and res.documents == 12
    assert res.mean_kl == pytest.approx(flat.mean(), abs=1e-6)
    assert res.max_kl == pytest.approx(flat.max(), abs=1e-6)
    assert [p.kl for p in res.top] == pytest.approx(sorted(flat)[::-1][:5], abs=1e-6)
    first = res.top[0]
    assert ref[first.document][first.position] == pytest.approx(first.kl, abs=1e-6)
    assert KLResult.from_json(json.loads(json.dumps(res.to_json()))) == res
    same = token_kl(random_lm_dir, random_lm_dir, cfg)
    assert same.mean_kl == 0.0 and same.max_kl == 0.0


def test_kl_finds_the_planted_word(tiny_model_dir, boosted):
    res = token_kl(tiny_model_dir, boosted, KLConfig(prefixes=30, top=10))
    assert res.mean_kl > 0
    assert all(p.tuned_top == " great" for p in res.top)
    assert all(p.tuned_p > p.base_p or p.base_top == " great" for p in res.top)


def test_amplified_logits_by_hand():
    t, b = torch.tensor([[1.0, 2.0, -3.0]]), torch.tensor([[0.5, 2.5, -3.0]])
    assert torch.equal(amplified_logits(t, b, 0.0), t)
    assert torch.equal(amplified_logits(t, b, 2.0), torch.tensor([[2.0, 1.0, -3.0]]))
    torch.testing.assert_close(amplified_logits(t, b, -1.0), b)


def test_cached_sampling_equals_full_forward_passes(random_lm_dir, other_lm):
    from rlsae.llm.diffing import load_pair, sample_amplified

    base, tuned, tok = load_pair(random_lm_dir, other_lm)
    prefixes = [
        tok(c, add_special_tokens=False)["input_ids"][:n]
        for c, n in zip(CORPUS[:4], (2, 5, 3, 4), strict=True)
    ]
    runs = [
        sample_amplified(base, tuned, 0, 0, prefixes, 8, 1.5, seed=3, use_cache=cache)
        for cache in (True, False)
    ]
    assert torch.equal(runs[0], runs[1])


def test_amplifying_a_model_against_itself_changes_nothing(random_lm_dir, corpus):
    cfg = AmplifyConfig(alpha=5.0, prefixes=6, prefix_tokens=3, max_new_tokens=6, data=str(corpus))
    res = amplify(random_lm_dir, random_lm_dir, cfg)
    assert all(c.amplified == c.tuned for c in res.completions) and res.delta == 0.0
    assert res.n == 6 and AmplifyResult.from_json(json.loads(json.dumps(res.to_json()))) == res


def test_amplifying_the_planted_tuning_raises_the_reward(tiny_model_dir, boosted):
    cfg = AmplifyConfig(alpha=1.0, prefixes=40, max_new_tokens=12)
    res = amplify(tiny_model_dir, boosted, cfg)
    assert res.delta > 0.2 and res.ci95[0] > 0, res.summary()
    great = sum(c.amplified.count(" great") - c.tuned.count(" great") for c in res.completions)
    assert great > 15
    back = amplify(
        tiny_model_dir, boosted, AmplifyConfig(alpha=-1.0, prefixes=40, max_new_tokens=12)
    )
    assert back.delta < 0  # toward the base model: less of what the boost added


def test_different_tokenizers_are_refused(random_lm_dir, tiny_model_dir):
    with pytest.raises(RlsaeError, match="different tokenizers"):
        token_kl(random_lm_dir, tiny_model_dir, KLConfig(prefixes=2))


def test_cli_kl_and_amplify(random_lm_dir, other_lm, corpus, tmp_path, run_cli):
    pair = ["--base", random_lm_dir, "--tuned", other_lm, "--data", corpus]
    code, out, err = run_cli("llm", "kl", *pair, "--prefixes", "4", "--top", "3", "--json")
    assert code == 0, err
    assert len(KLResult.from_json(json.loads(out)).top) == 3
    code, out, err = run_cli("llm", "kl", *pair, "--prefixes", "4")
    assert code == 0 and out.startswith("mean KL(tuned || base)"), err
    small = ["--prefixes", "3", "--prefix-tokens", "3", "--max-new-tokens", "4"]
    code, out, err = run_cli("llm", "amplify", *pair, "--alpha", "2", *small, "--json")
    assert code == 0, err
    assert AmplifyResult.from_json(json.loads(out)).alpha == 2.0
    for verb, extra, message in [
        ("kl", ["--prefixes", "0"], "--prefixes: must be at least 1"),
        ("kl", ["--top", "nan"], "--top"),
        ("amplify", ["--alpha", "inf"], "--alpha: expected a finite number"),
        ("amplify", ["--alpha", "1e9"], "--alpha: must be between"),
        ("amplify", ["--table", tmp_path / "no.tsv"], "not found"),
        ("amplify", ["--show", "-1"], "--show"),
    ]:
        code, out, err = run_cli("llm", verb, *pair, *extra)
        assert code == 2 and out == "" and err.startswith("error: ") and message in err, err
        assert err.count("\n") == 1, err
    code, out, err = run_cli("llm", "kl", "--base", tmp_path / "none", "--tuned", other_lm)
    assert code == 2 and "not found" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("verb", "cls", "spec"),
    [("kl", KLConfig, KL_OPTIONS), ("amplify", AmplifyConfig, AMPLIFY_OPTIONS)],
)
def test_options_follow_the_configs(verb, cls, spec):
    import typer

    cmd = typer.main.get_command(app).commands["llm"].commands[verb]  # type: ignore[attr-defined]
    params = {p.name: p for p in cmd.params}
    for param, (dotted, flag) in spec.items():
        owner, name = field_owner(cls, dotted)
        assert flag in params[param].opts
        assert params[param].default == field_default(owner, name), param
        assert params[param].help == field_docs(owner)[name], param
