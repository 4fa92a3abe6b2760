"""TransformerLens recording: offline loading, activations equal HF hidden states, bad input."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from rlsae.errors import RlsaeError
from rlsae.llm.record import (
    hook_point,
    load_hooked_model,
    record_lm_activations,
    tokenize_documents,
    valid_hooks,
)
from rlsae.sae.store import ActivationStore


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _hf_hidden(model_dir, text_ids):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
    with torch.no_grad():
        return m, m(torch.tensor([text_ids]), output_hidden_states=True).hidden_states


def test_record_equals_hf_hidden_states(
    random_lm_dir, tiny_tokenizer, corpus_file, tmp_path, no_network
):
    from rlsae.llm.record import load_documents

    paths = record_lm_activations(
        str(random_lm_dir),
        "0,1,2",
        tmp_path / "acts",
        data=corpus_file,
        prefixes=12,
        prefix_tokens=6,
        batch_size=5,
        progress=False,
    )
    assert [p.name for p in paths] == [f"blocks.{i}.hook_resid_post" for i in range(3)]
    docs = load_documents(corpus_file, 12)
    ids = tokenize_documents(tiny_tokenizer, docs, 6)
    stores = [ActivationStore(p) for p in paths]
    ctx = stores[0].context()
    assert stores[0].rows == sum(len(t) for t in ids) == len(ctx)
    assert list(ctx.columns) == ["document", "position", "token_id", "token"]
    acts = [torch.cat(list(s.iter_sequential(10_000))) for s in stores]
    for doc in (0, 4, 11):  # documents of different lengths, padded inside a batch
        model, hidden = _hf_hidden(random_lm_dir, ids[doc])
        rows = torch.from_numpy((ctx["document"] == doc).to_numpy().copy())
        assert ctx["token_id"][rows.numpy()].tolist() == ids[doc]
        assert ctx["position"][rows.numpy()].tolist() == list(range(len(ids[doc])))
        for layer in (0, 1):
            torch.testing.assert_close(
                acts[layer][rows], hidden[layer + 1][0], atol=1e-5, rtol=1e-4
            )
        # the last block's hidden state in HF comes after the final layer norm
        with torch.no_grad():
            last = model.gpt_neox.final_layer_norm(acts[2][rows])
        torch.testing.assert_close(last, hidden[3][0], atol=1e-5, rtol=1e-4)
    assert ctx["token"][0] == tiny_tokenizer.decode([int(ctx["token_id"][0])])
    meta = stores[1].meta
    assert meta["provider"] == "lm"
    assert meta["extra"]["layer"] == 1
    assert meta["extra"]["hook_point"] == "blocks.1.hook_resid_post"
    assert meta["extra"]["model"] == str(random_lm_dir.resolve())


def test_mlp_out_matches_hf_module_output(random_lm_dir, tiny_tokenizer, corpus_file, tmp_path):
    """mlp_out of block 1 equals the output of HF's layers[1].mlp captured by a forward hook."""
    (path,) = record_lm_activations(
        str(random_lm_dir),
        [1],
        tmp_path / "acts",
        hook="mlp_out",
        data=corpus_file,
        prefixes=3,
        progress=False,
    )
    store = ActivationStore(path)
    ctx = store.context()
    acts = torch.cat(list(store.iter_sequential(1000)))
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(random_lm_dir, local_files_only=True).eval()
    got = {}
    m.gpt_neox.layers[1].mlp.register_forward_hook(lambda mod, i, o: got.__setitem__("o", o))
    ids = ctx[ctx.document == 2]["token_id"].tolist()
    with torch.no_grad():
        m(torch.tensor([ids]))
    torch.testing.assert_close(
        acts[torch.from_numpy((ctx.document == 2).to_numpy().copy())],
        got["o"][0],
        atol=1e-5,
        rtol=1e-4,
    )


def test_unknown_hook_and_layer_list_the_valid_ones(random_lm_dir):
    ht, _, _ = load_hooked_model(str(random_lm_dir))
    assert "resid_post" in valid_hooks(ht) and "mlp_out" in valid_hooks(ht)
    assert hook_point(ht, 2, "resid_post") == "blocks.2.hook_resid_post"
    assert hook_point(ht, 0, "mlp.hook_post") == "blocks.0.mlp.hook_post"
    with pytest.raises(RlsaeError, match=r"valid hooks: .*resid_post"):
        hook_point(ht, 0, "resid_postt")
    with pytest.raises(RlsaeError, match=r"valid layers are 0\.\.2"):
        hook_point(ht, 3, "resid_post")


def test_cli_record_and_bad_input(random_lm_dir, corpus_file, tmp_path, run_cli):
    out = tmp_path / "acts"
    base = ["llm", "record", "--model", random_lm_dir, "--data", corpus_file]
    code, stdout, err = run_cli(*base, "--layers", "1", "--prefixes", "4", "--out", out, "--json")
    assert code == 0, err
    assert len(stdout.strip().splitlines()) == 1  # nothing else on stdout
    res = json.loads(stdout)
    assert res["stores"][0]["hook"] == "blocks.1.hook_resid_post"
    assert res["stores"][0]["rows"] == ActivationStore(out / "blocks.1.hook_resid_post").rows

    for args, msg in [
        (["--layers", "7"], "valid layers are 0..2"),
        (["--layers", "1", "--hook", "nope"], "valid hooks:"),
        (["--layers", "x"], "comma-separated integers"),
    ]:
        code, stdout, err = run_cli(*base, "--out", tmp_path / "bad", *args)
        assert code == 2 and stdout == "" and err.startswith("error: ") and msg in err, err
        assert err.count("\n") == 1
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    # an existing store is not overwritten
    with pytest.raises(RlsaeError, match="already exists"):
        record_lm_activations(
            str(random_lm_dir), [1], out, data=corpus_file, prefixes=2, progress=False
        )
