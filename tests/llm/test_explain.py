"""Explanations: a planted feature is named by the offline explainer with the hand-computed lift;
the LLM explainer talks to a real local HTTP server; failures keep the results so far."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import torch

from rlsae.errors import RlsaeError
from rlsae.llm.explain import (
    ExplainConfig,
    Explanations,
    bills_prompt,
    explain_features,
    feature_records,
    normalise_activations,
)
from rlsae.llm.rewards import UtilityTable
from rlsae.sae import SAE, SAEConfig
from rlsae.sae.store import ActivationWriter

VOCAB = ["the", " movie", " was", " great", " awful", " plot", " and", " long"]
HOOK = "blocks.1.hook_resid_post"


@pytest.fixture()
def planted(tmp_path):
    """A store where dim 0 = 2.0 on " great", dim 1 = 1.0 on " awful", plus small noise on
    dims 2..7, and an SAE whose feature 0 reads dim 0 and feature 1 reads dim 1."""
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, len(VOCAB), size=rng.integers(4, 9)).tolist() for _ in range(40)]
    ids = [t for d in docs for t in d]
    x = np.zeros((len(ids), 8), dtype=np.float32)
    x[:, 2:] = rng.normal(0, 0.05, size=(len(ids), 6))
    great = np.array(ids) == VOCAB.index(" great")
    awful = np.array(ids) == VOCAB.index(" awful")
    x[great, 0] = 2.0 + rng.uniform(0, 1, size=great.sum())
    x[awful, 1] = 1.0
    ctx = {
        "document": [i for i, d in enumerate(docs) for _ in d],
        "position": [p for d in docs for p in range(len(d))],
        "token_id": ids,
        "token": [VOCAB[t] for t in ids],
    }
    store = tmp_path / "acts" / HOOK
    with ActivationWriter(store, 8, hook=HOOK, source="base", provider="lm") as w:
        w.append(x, ctx)
    sae = SAE(SAEConfig(d_in=8, d_sae=3, arch="relu", hook_name=HOOK), seed=0)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[0, 0] = 1.0
        sae.W_enc[1, 1] = 1.0
        sae.W_enc[2, 2] = -1.0  # feature 2 fires on noise only
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    sae_dir = tmp_path / "saes" / "base" / HOOK / "small"
    sae.save(sae_dir)
    return {"store": store, "sae": sae_dir, "ids": np.array(ids), "great": great, "x": x}


def test_offline_explainer_names_the_planted_token(planted):
    n_top = int(planted["great"].sum())
    res = explain_features(planted["sae"], planted["store"], [0, 1], cfg=ExplainConfig(n_top=n_top))
    f0 = res.features["0"]
    assert f0.top_tokens[0].token == "great"
    # every top row is " great": lift = 1 / base rate of " great"
    want_lift = len(planted["ids"]) / n_top
    assert f0.top_tokens[0].lift == pytest.approx(want_lift, rel=1e-3)
    assert f0.top_tokens[0].count == n_top
    assert len(f0.top_tokens) == 1  # no other token occurs among the top rows
    assert f0.explanation.startswith('tokens "great"')
    assert f0.utility == pytest.approx(UtilityTable.vader().get("great"))
    assert f0.max_activation == pytest.approx(float(planted["x"][:, 0].max()), rel=1e-6)
    assert res.features["1"].top_tokens[0].token == "awful"
    assert res.features["1"].utility == pytest.approx(abs(UtilityTable.vader().get("awful")))
    # contexts are whole documents with the feature's activation per token
    c = f0.contexts[0]
    assert len(c.tokens) == len(c.activations) and max(c.activations) > 2.0
    on_disk = json.loads((planted["sae"] / "explanations.json").read_text())
    assert on_disk["features"]["0"]["explanation"] == f0.explanation


def test_normalisation_and_prompt_format(planted):
    assert normalise_activations([0.0, 0.5, 1.0, 2.0, -1.0], 2.0) == [0, 3, 5, 10, 0]
    acts = torch.tensor(planted["x"][:, 0])
    import pandas as pd

    ctx = pd.read_parquet(planted["store"] / "context.parquet")
    rec = feature_records(acts, ctx, 0, n_top=10, n_records=2)
    prompt = bills_prompt(rec)
    assert prompt.count("<start>") == 4  # two records, full and zeros-filtered
    assert " great\t10" in prompt  # the maximum maps to 10
    assert "the main thing this feature does is find" in prompt
    filtered = prompt.split("zeros filtered out:")[1]
    assert "\t0\n" not in filtered


class _Handler(BaseHTTPRequestHandler):
    requests: list = []
    status = 200
    answers: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(
            {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
        )
        if type(self).status != 200:
            self.send_response(type(self).status)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "invalid api key"}}')
            return
        cls = type(self)
        text = cls.answers[len(cls.requests) - 1] if cls.answers else " the word great in reviews."
        answer = {"choices": [{"message": {"role": "assistant", "content": text}}]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    _Handler.requests = []
    _Handler.status = 200
    _Handler.answers = []
    srv = HTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_llm_explainer_against_local_server(planted, server, monkeypatch):
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    monkeypatch.setenv("RLSAE_EXPLAINER_BASE_URL", url)
    monkeypatch.setenv("RLSAE_EXPLAINER_MODEL", "tiny-gpt")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    res = explain_features(planted["sae"], planted["store"], [0], cfg=ExplainConfig(method="llm"))
    assert res.features["0"].explanation == "the word great in reviews."
    assert res.features["0"].method == "llm:tiny-gpt"
    assert res.features["0"].utility == pytest.approx(UtilityTable.vader().get("great"))
    (req,) = _Handler.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "tiny-gpt"
    assert req["body"]["messages"][0]["role"] == "system"
    assert " great\t10" in req["body"]["messages"][1]["content"]
    assert "sk-test" not in (planted["sae"] / "explanations.json").read_text()
    # a re-run skips what is done: no new request
    explain_features(planted["sae"], planted["store"], [0], cfg=ExplainConfig(method="llm"))
    assert len(_Handler.requests) == 1


def test_unreachable_endpoint_keeps_results_so_far(planted, server):
    url = f"http://127.0.0.1:{server.server_address[1]}"
    cfg = ExplainConfig(method="llm", base_url=url, model="m", timeout=5)

    def stop_after_first(feature, entry):
        server.shutdown()
        server.server_close()

    with pytest.raises(RlsaeError, match=r"unreachable.*1 explanations so far kept") as e:
        explain_features(
            planted["sae"], planted["store"], [0, 1, 2], cfg=cfg, on_feature=stop_after_first
        )
    assert "\n" not in str(e.value)
    kept = json.loads((planted["sae"] / "explanations.json").read_text())
    assert list(kept["features"]) == ["0"]


def test_http_error_is_one_line(planted, server):
    _Handler.status = 401
    url = f"http://127.0.0.1:{server.server_address[1]}"
    with pytest.raises(RlsaeError, match="HTTP 401 .*invalid api key"):
        explain_features(
            planted["sae"],
            planted["store"],
            [0],
            cfg=ExplainConfig(method="llm", base_url=url, model="m"),
        )


def test_missing_endpoint_settings(planted, monkeypatch):
    monkeypatch.delenv("RLSAE_EXPLAINER_BASE_URL", raising=False)
    with pytest.raises(RlsaeError, match="RLSAE_EXPLAINER_BASE_URL"):
        explain_features(planted["sae"], planted["store"], [0], cfg=ExplainConfig(method="llm"))


def test_sae_of_another_layer_is_refused(planted, tmp_path):
    other = SAE(SAEConfig(d_in=8, d_sae=3, arch="relu", hook_name="blocks.2.hook_resid_post"))
    other.save(tmp_path / "other")
    with pytest.raises(RlsaeError, match="trained on 'blocks.2.hook_resid_post'"):
        explain_features(tmp_path / "other", planted["store"], [0])
    with pytest.raises(RlsaeError, match="not the requested layer 3"):
        explain_features(planted["sae"], planted["store"], [0], layer=3)


def test_cli_explain(planted, run_cli):
    args = ["llm", "explain", "--sae", planted["sae"], "--acts", planted["store"]]
    code, out, err = run_cli(*args, "--features", "0,1", "--json")
    assert code == 0, err
    out = json.loads(out)
    assert out["features"]["0"]["explanation"].startswith('tokens "great"')
    code, out, err = run_cli(*args, "--features", "0", "--layer", "2")
    assert code == 2 and out == "" and "not the requested layer 2" in err
    assert err.startswith("error: ") and err.count("\n") == 1
    for bad, message in [
        (["--features", "0,x"], "--features must be comma-separated integers"),
        (["--features", "0", "--samples", "0"], "--samples: must be at least 1, got 0"),
        (["--features", "0", "--method", "gpt"], "--method: expected one of offline, llm"),
        (["--features", "0", "--temperature", "-1"], "--temperature: must be between 0 and 2"),
    ]:
        code, out, err = run_cli(*args, *bad)
        assert code == 2 and err.startswith("error: ") and message in err, err
        assert err.count("\n") == 1


def test_explanations_artifact_round_trip(planted, tmp_path):
    res = explain_features(planted["sae"], planted["store"], [0, 1], out=tmp_path / "e.json")
    data = json.loads((tmp_path / "e.json").read_text())
    assert (data["format"], data["version"]) == ("rlsae.explanations", 2)
    assert data["features"]["0"]["top_tokens"][0]["token"] == "great"
    assert data["config"]["method"] == "offline" and data["acts"] == str(planted["store"])
    assert Explanations.read(tmp_path / "e.json") == res
    assert Explanations.load(tmp_path / "none.json") == Explanations()
    (tmp_path / "old.json").write_text(json.dumps({"features": {}}))
    with pytest.raises(RlsaeError, match="has no 'format' field; it is not a 'rlsae.explanations'"):
        explain_features(planted["sae"], planted["store"], [0], out=tmp_path / "old.json")


def test_llm_samples_average_utility(planted, server):
    _Handler.answers = ["great things", "awful and great things", "nothing at all"]
    url = f"http://127.0.0.1:{server.server_address[1]}"
    cfg = ExplainConfig(method="llm", base_url=url, model="m", samples=3, temperature=1.0)
    res = explain_features(planted["sae"], planted["store"], [0], cfg=cfg)
    entry = res.features["0"]
    t = UtilityTable.vader()
    want = (t.get("great") + (abs(t.get("awful")) + t.get("great")) + 0.0) / 3
    assert entry.utility == pytest.approx(want)
    assert entry.samples == _Handler.answers and entry.explanation == "great things"
    assert all(r["body"]["temperature"] == 1.0 for r in _Handler.requests)


def test_feature_out_of_range_and_store_without_lm_context(planted, tmp_path):
    with pytest.raises(RlsaeError, match=r"feature indices must lie in 0\.\.2"):
        explain_features(planted["sae"], planted["store"], [3])
    bare = tmp_path / "bare"
    with ActivationWriter(bare, 8, hook=HOOK, provider="import") as w:
        w.append(planted["x"])
    with pytest.raises(RlsaeError, match="no language-model context"):
        explain_features(planted["sae"], bare, [0])
