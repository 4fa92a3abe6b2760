"""Prefixes, sampling masks and the score summary."""

from __future__ import annotations

import json

import pytest
import torch

from rlsae.errors import RlsaeError
from rlsae.llm.data import load_texts, make_prefixes
from rlsae.llm.generate import completion_mask, left_pad, sample_completions
from rlsae.llm.models import load_model
from rlsae.llm.rewards import UtilityTable
from rlsae.llm.score import ScoreConfig, ScoreExample, ScoreResult, summarise


def test_local_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first review\n\n  second review  \n")
    assert load_texts(tmp_path / "a.txt") == ["first review", "second review"]
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"text": "x y"}) + "\n\n" + json.dumps({"text": "z"}) + "\n"
    )
    assert load_texts(tmp_path / "b.jsonl") == ["x y", "z"]
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "ok"}) + "\n{not json\n")
    with pytest.raises(RlsaeError, match="c.jsonl:2"):
        load_texts(tmp_path / "c.jsonl")
    with pytest.raises(RlsaeError, match="not found"):
        load_texts(tmp_path / "none.txt")


def test_auto_uses_tiny_corpus(tiny_model_dir):
    texts = load_texts("auto", "test", model=tiny_model_dir)
    assert len(texts) == 400 and texts[0].startswith("I watched this")


def test_prefixes_are_first_tokens(tiny_model_dir):
    _, tok = load_model(tiny_model_dir)
    texts = [
        "I watched this film. " * 30,
        "too short",
        "The plot was great and the acting was bad.",
    ]
    pre = make_prefixes(texts, tok, 2, 5, seed=1)
    full = {tuple(tok(t, add_special_tokens=False)["input_ids"][:5]) for t in (texts[0], texts[2])}
    assert {tuple(p) for p in pre} == full and all(len(p) == 5 for p in pre)
    assert make_prefixes(texts, tok, 2, 5, seed=1) == pre
    with pytest.raises(RlsaeError, match="only 2 of 3 documents"):
        make_prefixes(texts, tok, 3, 5)


def test_completion_mask_and_left_pad():
    resp = torch.tensor([[5, 6, 0, 0], [0, 7, 0, 0], [1, 2, 3, 4]])
    assert completion_mask(resp, 0).tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=9)
    assert ids.tolist() == [[1, 2, 3], [9, 9, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_sampling_is_seeded_and_padding_invariant(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    short = tok("What a", add_special_tokens=False)["input_ids"]
    long = tok("I watched this movie last night. The plot", add_special_tokens=False)["input_ids"]
    a = sample_completions(model, tok, [short, long], 10, seed=3)
    b = sample_completions(model, tok, [short, long], 10, seed=3)
    assert torch.equal(a.response, b.response)
    # Greedy-equivalent check: logits of the padded short prefix match the unpadded ones.
    from rlsae.llm.generate import response_logits

    alone = sample_completions(model, tok, [short], 10, seed=3)
    la, _ = response_logits(model, a.select(torch.tensor([0])))
    lb, _ = response_logits(
        model,
        alone.select(torch.tensor([0])).__class__(
            alone.query, alone.query_mask, a.response[:1], a.response_mask[:1]
        ),
    )
    assert torch.allclose(la, lb, atol=1e-4)


def test_summarise_hand_worked():
    table = UtilityTable({"good": 2.0, "bad": -3.0})
    res = summarise(table, ["p", "p", "p"], ["good good", "bad", "good bad"], [0.1, 0.2, 0.3])
    # per completion: 4, -3, -1 -> |.| sum 8, signed sum 0; word-level |U| sum 4 + 3 + 5 = 12
    assert res.aggregate_abs_utility == pytest.approx(8.0)
    assert res.aggregate_utility == pytest.approx(0.0)
    assert res.aggregate_word_abs_utility == pytest.approx(12.0)
    assert res.mean_reward == pytest.approx(0.2)
    assert res.n == 3 and res.positive_fraction == pytest.approx(1 / 3)


def test_score_artifact_round_trip(tmp_path):
    table = UtilityTable({"good": 2.0, "bad": -3.0})
    res = summarise(table, ["p", "q"], ["good", "bad bad"], [0.5, -1.0])
    res.model, res.seconds = "m", 1.5
    res.config = ScoreConfig(prefixes=2, table="t.tsv")
    res.examples = [ScoreExample("p", "good"), ScoreExample("q", "bad bad")]
    path = res.write(tmp_path / "score.json")
    data = json.loads(path.read_text())
    assert (data["format"], data["version"]) == ("rlsae.score", 1)
    assert data["aggregate_abs_utility"] == 8.0 and data["config"]["prefixes"] == 2
    assert data["examples"][1] == {"prefix": "q", "completion": "bad bad"}
    assert ScoreResult.read(path) == res
    data["version"] = 2
    path.write_text(json.dumps(data))
    with pytest.raises(RlsaeError, match="rlsae.score version 2; this rlsae reads version 1"):
        ScoreResult.read(path)
