"""Model loading (local dirs, bad names) and the tiny offline Pythia."""

from __future__ import annotations

import json

import pytest
import torch

from rlsae.errors import RlsaeError
from rlsae.llm import tiny
from rlsae.llm.models import context_length, load_model
from rlsae.llm.rewards import UtilityTable


def test_tiny_model_loads_as_pythia(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    assert type(model).__name__ == "GPTNeoXForCausalLM"
    assert model.config.use_parallel_residual
    assert model.config.rope_parameters["partial_rotary_factor"] == 0.25
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"
    assert tok.padding_side == "left"
    assert context_length(model) == 128
    meta = json.loads((tiny_model_dir / "tiny.json").read_text())
    # It learned something: held-out loss far below the uniform-guess loss log(vocab).
    assert meta["test_loss"] < 0.4 * torch.log(torch.tensor(float(meta["vocab_size"]))).item()
    assert (tiny_model_dir / "corpus_test.txt").read_text().count("\n") == 400


def test_left_padding_does_not_change_next_token(tiny_model_dir):
    """Masks come from the attention mask: a left-padded prompt predicts as the unpadded one."""
    model, tok = load_model(tiny_model_dir)
    prompts = ["I watched this movie last night. The plot was", "What a"]
    enc = tok(prompts, return_tensors="pt", padding=True)
    assert enc["attention_mask"][1, 0] == 0
    pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        padded = model(**enc, position_ids=pos).logits[1, -1]
        alone = model(**tok(prompts[1:], return_tensors="pt")).logits[0, -1]
    assert torch.allclose(padded, alone, atol=1e-4)


def test_tiny_base_writes_mixed_sentiment(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    table = UtilityTable.vader()
    torch.manual_seed(0)
    enc = tok(["I watched this film yesterday."] * 24, return_tensors="pt")
    out = model.generate(**enc, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=30)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    utils = [table.utility(t) for t in texts]
    assert sum(u > 0 for u in utils) >= 3 and sum(u < 0 for u in utils) >= 3


def test_corpus_words_and_determinism():
    table = UtilityTable.vader()
    assert all(table.get(w) > 0 for w in tiny.POSITIVE_ADJ + tiny.POSITIVE_VERB)
    assert all(table.get(w) < 0 for w in tiny.NEGATIVE_ADJ + tiny.NEGATIVE_VERB)
    assert all(w not in table for w in tiny.NEUTRAL_ADJ + tiny.NEUTRAL_VERB + tiny.NOUNS)
    assert tiny.synth_corpus(5, seed=3) == tiny.synth_corpus(5, seed=3)
    assert tiny.synth_corpus(5, seed=3) != tiny.synth_corpus(5, seed=4)
    utils = [table.utility(r) for r in tiny.synth_corpus(300, seed=0)]
    assert min(utils) < -3 and max(utils) > 3  # both leanings present


@pytest.mark.parametrize("bad", ["/nonexistent/model/dir", "./nope", "a/b/c"])
def test_unknown_model_is_one_line_error(bad):
    with pytest.raises(RlsaeError) as e:
        load_model(bad)
    assert "\n" not in str(e.value)


def test_dir_without_config_and_broken_dir(tmp_path, tiny_model_dir):
    with pytest.raises(RlsaeError, match="no config.json"):
        load_model(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_text((tiny_model_dir / name).read_text())
    with pytest.raises(RlsaeError, match="could not load the model"):
        load_model(broken)


def test_unknown_hub_name_offline():
    # conftest sets HF_HUB_OFFLINE=1: a hub name that is not cached fails with one line.
    with pytest.raises(RlsaeError, match="could not load 'nobody-xyz/no-such-model'"):
        load_model("nobody-xyz/no-such-model")


def test_pretrain_tiny_refuses_existing_and_bad_options(tmp_path, tiny_model_dir):
    with pytest.raises(RlsaeError, match="already exists"):
        tiny.pretrain_tiny(tiny_model_dir, steps=1)
    with pytest.raises(RlsaeError, match="tiny-model options: stepz: unknown key"):
        tiny.pretrain_tiny(tmp_path / "x", stepz=1)
    assert not (tmp_path / "x").exists()
