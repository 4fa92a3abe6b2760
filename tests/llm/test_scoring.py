"""Scored explanations: the offline scorer gives ~1 to an explanation naming exactly the
activating tokens and ~chance to an unrelated one; the LLM scorer talks to a real local HTTP
server (prompts and parsing checked); failures are one line and keep the scores so far."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import torch

from rlsae.errors import RlsaeError
from rlsae.llm.configs import ExplanationScoreConfig
from rlsae.llm.explain import ExplainConfig, Explanations, explain_features
from rlsae.llm.scoring import (
    OFFLINE_NOTE,
    balanced_accuracy,
    explanation_words,
    pearson,
    score_explanations,
)
from rlsae.sae import SAE, SAEConfig
from rlsae.sae.store import ActivationWriter

VOCAB = ["the", " movie", " was", " great", " awful", " plot", " and", " long"]
HOOK = "blocks.1.hook_resid_post"


@pytest.fixture()
def explained(tmp_path):
    """200 documents; feature 0 fires on every " great" (2..3), feature 1 on every " awful"
    (1.0), feature 2 on noise. Features 0 and 1 explained offline; feature 1's explanation is
    then replaced by an unrelated one ('tokens "plot"')."""
    rng = np.random.default_rng(1)
    docs = [rng.integers(0, len(VOCAB), size=rng.integers(6, 12)).tolist() for _ in range(200)]
    ids = np.array([t for d in docs for t in d])
    x = np.zeros((len(ids), 8), dtype=np.float32)
    x[:, 2:] = rng.normal(0, 0.05, size=(len(ids), 6))
    great, awful = ids == VOCAB.index(" great"), ids == VOCAB.index(" awful")
    x[great, 0] = 2.0 + rng.uniform(0, 1, size=great.sum())
    x[awful, 1] = 1.0
    ctx = {
        "document": [i for i, d in enumerate(docs) for _ in d],
        "position": [p for d in docs for p in range(len(d))],
        "token_id": ids.tolist(),
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
        sae.W_enc[2, 2] = -1.0
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    sae_dir = tmp_path / "sae"
    sae.save(sae_dir)
    res = explain_features(sae_dir, store, [0, 1], cfg=ExplainConfig(n_top=20))
    assert res.features["0"].explanation.startswith('tokens "great"')
    res.features["1"].explanation = 'tokens "plot" (lift 1.0x)'
    res.write(sae_dir / "explanations.json")
    return {"sae": sae_dir, "store": store}


def test_offline_scores_exact_explanation_near_one_and_unrelated_near_chance(explained):
    res = score_explanations(explained["sae"], explained["store"])
    good, bad = res.features["0"].scores, res.features["1"].scores
    assert good is not None and bad is not None
    assert good.scorer == bad.scorer == "offline-token-set"
    assert (good.n_activating, good.n_non_activating) == (10, 10)
    assert good.detection == pytest.approx(1.0) and good.fuzzing == pytest.approx(1.0)
    assert good.simulation is not None and good.simulation > 0.95
    assert bad.detection is not None and abs(bad.detection - 0.5) < 0.25
    assert bad.fuzzing is not None and abs(bad.fuzzing - 0.5) < 0.25
    # held out: none of the documents shown to the explainer is scored on
    shown = {c.document for c in res.features["0"].contexts}
    assert shown and not shown & set(good.documents)
    on_disk = Explanations.read(explained["sae"] / "explanations.json")
    assert on_disk.features["0"].scores == good
    assert on_disk.score_config is not None and on_disk.score_config.scorer == "offline"


def test_offline_words_and_score_helpers():
    assert explanation_words('tokens "great", "superb" (lift 9.1x, 7.4x)') == {"great", "superb"}
    assert explanation_words("the word great in reviews") == {"great", "reviews"}
    assert balanced_accuracy([1, 1, 0, 0], [1, 0, 0, 0]) == 0.75
    assert balanced_accuracy([1, 1], [1, 1]) is None
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None


def test_nonsense_explanation_is_exactly_chance(explained):
    res = Explanations.read(explained["sae"] / "explanations.json")
    res.features["1"].explanation = "zebras"
    res.write(explained["sae"] / "explanations.json")
    s = score_explanations(explained["sae"], explained["store"], [1]).features["1"].scores
    assert s is not None and s.detection == 0.5 and s.fuzzing == 0.5
    assert s.simulation is None  # a constant prediction has no correlation


def test_version_1_file_still_read(explained):
    data = json.loads((explained["sae"] / "explanations.json").read_text())
    data["version"] = 1
    for f in data["features"].values():
        f.pop("scores", None)
    data.pop("score_config", None)
    (explained["sae"] / "old.json").write_text(json.dumps(data))
    old = Explanations.read(explained["sae"] / "old.json")
    assert old.features["0"].scores is None and old.features["0"].explanation


class _Scorer(BaseHTTPRequestHandler):
    """Answers like a scorer that knows the feature fires on " great"."""

    requests: list = []
    status = 200
    malformed = False

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        cls.requests.append(
            {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
        )
        if cls.status != 200:
            self.send_response(cls.status)
            self.end_headers()
            self.wfile.write(b"upstream overloaded\nsecond line")
            return
        text = "I think so" if cls.malformed else _answer(body["messages"][1]["content"])
        data = json.dumps({"choices": [{"message": {"content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _answer(prompt: str) -> str:
    if "marked <<like this>>" in prompt:
        marked = [
            re.findall(r"<<(.*?)>>", ln) for ln in prompt.splitlines() if ln.startswith("Example ")
        ]
        return json.dumps([int(all(m == " great" for m in ms)) for ms in marked])
    if "Predict the feature's activation" in prompt:
        blocks = re.findall(r"<start>\n(.*?)\n<end>", prompt, re.S)
        return json.dumps([[10 if t == " great" else 0 for t in b.split("\n")] for b in blocks])
    lines = [ln for ln in prompt.splitlines() if ln.startswith("Example ")]
    return "Sure: " + json.dumps([int(" great" in ln) for ln in lines])


@pytest.fixture()
def server():
    _Scorer.requests, _Scorer.status, _Scorer.malformed = [], 200, False
    srv = HTTPServer(("127.0.0.1", 0), _Scorer)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _llm(server) -> ExplanationScoreConfig:
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    return ExplanationScoreConfig(scorer="llm", base_url=url, model="judge", timeout=5)


def test_llm_scorer_prompts_and_parsing(explained, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    res = score_explanations(explained["sae"], explained["store"], [0], cfg=_llm(server))
    s = res.features["0"].scores
    assert s is not None and s.scorer == "llm:judge"
    assert (s.detection, s.fuzzing) == (1.0, 1.0)
    assert s.simulation is not None and s.simulation > 0.95
    assert [r["path"] for r in _Scorer.requests] == ["/v1/chat/completions"] * 3
    assert all(r["auth"] == "Bearer sk-secret" for r in _Scorer.requests)
    detect = _Scorer.requests[0]["body"]["messages"][1]["content"]
    assert detect.startswith('Explanation: tokens "great"')
    assert detect.count("\nExample ") == 20 and "JSON list of 20 numbers" in detect
    fuzz = _Scorer.requests[1]["body"]["messages"][1]["content"]
    assert "<< great>>" in fuzz and fuzz.count("\nExample ") == 20
    sim = _Scorer.requests[2]["body"]["messages"][1]["content"]
    assert sim.count("<start>") == 20 and "one number per token" in sim
    text = (explained["sae"] / "explanations.json").read_text()
    assert "sk-secret" not in text and '"model": "judge"' in text
    # a re-run with the same scorer asks nothing
    score_explanations(explained["sae"], explained["store"], [0], cfg=_llm(server))
    assert len(_Scorer.requests) == 3


def test_server_dying_mid_run_keeps_finished_scores(explained, server):
    cfg = _llm(server)

    def die(feature, entry):
        server.shutdown()
        server.server_close()

    with pytest.raises(RlsaeError, match=r"unreachable.*1 scored features so far kept") as e:
        score_explanations(explained["sae"], explained["store"], cfg=cfg, on_feature=die)
    assert "\n" not in str(e.value) and str(e.value).startswith("scorer endpoint")
    kept = Explanations.read(explained["sae"] / "explanations.json")
    assert kept.features["0"].scores is not None and kept.features["1"].scores is None
    # resumable: a new server scores only what is left
    srv = HTTPServer(("127.0.0.1", 0), _Scorer)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        _Scorer.requests = []
        res = score_explanations(explained["sae"], explained["store"], cfg=_llm(srv))
        assert len(_Scorer.requests) == 3 and res.features["1"].scores is not None
    finally:
        srv.shutdown()
        srv.server_close()


def test_http_error_and_malformed_answer_are_one_line(explained, server):
    _Scorer.status = 503
    with pytest.raises(
        RlsaeError, match=r"scorer endpoint .* HTTP 503 \(upstream overloaded\)"
    ) as e:
        score_explanations(explained["sae"], explained["store"], [0], cfg=_llm(server))
    assert "\n" not in str(e.value)
    _Scorer.status, _Scorer.malformed = 200, True
    with pytest.raises(
        RlsaeError, match=r"detection answer for feature 0 is malformed: 'I think so'"
    ):
        score_explanations(explained["sae"], explained["store"], [0], cfg=_llm(server))


def test_bad_requests(explained, tmp_path, monkeypatch):
    monkeypatch.delenv("RLSAE_EXPLAINER_BASE_URL", raising=False)
    with pytest.raises(RlsaeError, match="no scorer endpoint: pass --base-url"):
        score_explanations(explained["sae"], explained["store"], cfg=ExplanationScoreConfig("llm"))
    with pytest.raises(RlsaeError, match=r"features \[2\] have no explanation"):
        score_explanations(explained["sae"], explained["store"], [2])
    with pytest.raises(RlsaeError, match="no explanations at .*; run `rlsae llm explain` first"):
        score_explanations(explained["sae"], explained["store"], explanations=tmp_path / "x.json")
    with pytest.raises(RlsaeError, match="methods: expected one of detection"):
        ExplanationScoreConfig(methods="detection,vibes").validate()


def test_cli_score_explanations(explained, run_cli):
    args = ["llm", "score-explanations", "--sae", explained["sae"], "--acts", explained["store"]]
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["features"]["0"]["detection"] == 1.0
    assert data["scorers"] == [f"offline-token-set ({OFFLINE_NOTE})"]
    code, out, err = run_cli(*args, "--methods", "detection", "--redo")
    assert code == 0, err
    assert out.startswith("scorer: offline-token-set (offline token-set scorer") and "not a" in out
    code, out, err = run_cli(*args, "--scorer", "gpt")
    assert code == 2 and err.count("\n") == 1 and "--scorer: expected one of offline, llm" in err


def test_table3_restricted_to_scored_explanations():
    from rlsae.analysis.utility import (
        ScoredFeature,
        UtilityTables,
        table3_scored_markdown,
        tables_markdown,
        utility_tables,
    )

    rows = {
        "base": {3: [ScoredFeature(1, "a", 2.0, 0.9), ScoredFeature(2, "b", 1.0, 0.6)]},
        "tuned": {3: [ScoredFeature(1, "c", 4.0, 0.8), ScoredFeature(2, "d", 3.0, None)]},
    }
    t = utility_tables(rows, k=2, label="tiny", score_threshold=0.75, scorer="offline-token-set")
    assert (t.table3["base"].score, t.table3["tuned"].score) == (3.0, 7.0)  # both reported
    assert (t.table3_scored["base"].score, t.table3_scored["tuned"].score) == (2.0, 4.0)
    assert t.table3_scored["tuned"].features == 1 and t.table3_scored_tuned_minus_base == 2.0
    md = table3_scored_markdown(t).splitlines()
    assert md[2] == "| tiny, all explanations | 3.0 (2/2) | 7.0 (2/2) |"
    assert md[3] == "| tiny, detection ≥ 0.75 | 2.0 (1/2) | 4.0 (1/2) |"
    assert len(tables_markdown(t).splitlines()) == 3  # the paper's table keeps its shape
    assert utility_tables(rows, k=2).table3_scored == {}
    back = UtilityTables.from_json(t.to_json())
    assert back == t and back.features["base"]["3"][0].detection == 0.9
    old = {**t.to_json(), "version": 1}
    assert UtilityTables.from_json(old).table3 == t.table3  # version 1 still read


def test_contexts_without_activating_ones_give_no_score():
    from rlsae.llm.scoring import HeldOutContext, OfflineScorer, fuzz_examples, score_feature

    silent = [HeldOutContext(d, [" the", " plot"], [0.0, 0.0]) for d in range(4)]
    rng = np.random.default_rng(0)
    assert all(not ex.correct and len(ex.marked) == 1 for ex in fuzz_examples(silent, rng))
    s = score_feature('tokens "great"', silent, OfflineScorer(), ["detection", "fuzzing"], rng)
    assert (s.detection, s.fuzzing, s.n_activating, s.n_non_activating) == (None, None, 0, 4)


def test_a_dense_feature_gets_non_activating_chunks_within_its_documents():
    """A feature that fires in every document (weakly on every " the", strongly on " great")
    has no silent document; its non-activating contexts are chunks of the documents where it
    stays at or below a threshold, so detection is scored: ~1 for an explanation naming the
    strong token, ~chance for an unrelated one, and fuzzing marks only the strong tokens."""
    from rlsae.llm.scoring import OfflineScorer, held_out_contexts, score_feature

    rng = np.random.default_rng(3)
    doc_rows, texts, acts, start = {}, [], [], 0
    for d in range(40):  # 40 documents of 96 tokens: 3 chunks of 32 each
        toks = rng.choice([" the", " plot", " was", " long", " and"], size=96).tolist()
        toks[0] = " the"  # every document fires (weakly) at least once
        if d % 2 == 0:  # half the documents hold a strong " great" in their middle chunk
            toks[40 + d % 7] = " great"
        a = [0.3 if t == " the" else (3.0 if t == " great" else 0.0) for t in toks]
        doc_rows[d] = np.arange(start, start + len(toks))
        texts += toks
        acts += a
        start += len(toks)
    acts_a, texts_a = np.array(acts, dtype=np.float32), np.array(texts)
    cfg = ExplanationScoreConfig(n_activating=10, n_non_activating=10, window=32)
    ctxs = held_out_contexts(acts_a, texts_a, doc_rows, set(), cfg, np.random.default_rng(0))
    quiet = [c for c in ctxs if not c.active]
    assert sum(c.active for c in ctxs) == 10 and len(quiet) == 10
    # no window is silent (" the" is everywhere), so the threshold is the weak level
    assert [c.threshold for c in ctxs] == pytest.approx([0.3] * 20)
    for c in quiet:  # a chunk of its document, at or below the threshold, never " great"
        rows = doc_rows[c.document]
        assert len(c.tokens) == 32 and max(c.activations) <= 0.3 + 1e-6
        assert " great" not in c.tokens
        assert any(
            list(texts_a[rows[s : s + 32]]) == c.tokens for s in range(0, len(rows) - 31, 32)
        )
    for c in ctxs[:10]:
        assert " great" in c.tokens and c.firing() == [c.tokens.index(" great")]
    good = score_feature('tokens "great"', ctxs, OfflineScorer(), ["detection", "fuzzing"],
                         np.random.default_rng(0))  # fmt: skip
    assert good.detection == pytest.approx(1.0) and good.fuzzing == pytest.approx(1.0)
    bad = score_feature('tokens "plot"', ctxs, OfflineScorer(), ["detection"],
                        np.random.default_rng(0))  # fmt: skip
    assert bad.detection is not None and abs(bad.detection - 0.5) < 0.25
    # a feature silent in enough whole documents keeps the old draw: whole silent documents
    sparse = np.where(texts_a == " great", 3.0, 0.0).astype(np.float32)
    old = held_out_contexts(sparse, texts_a, doc_rows, set(), cfg, np.random.default_rng(0))
    assert all(c.threshold == 0.0 for c in old)
    assert all(doc_rows[c.document].size and c.document % 2 == 1 for c in old if not c.active)


def test_short_documents_are_cut_in_half_for_the_chunks():
    """Documents shorter than two windows give chunks of half a document (at least 4 tokens):
    a feature that fires on one token of every 16-token document still has silent stretches."""
    from rlsae.llm.scoring import OfflineScorer, chunk_size, held_out_contexts, score_feature

    doc_rows = {d: np.arange(16 * d, 16 * d + 16) for d in range(30)}
    assert chunk_size(list(doc_rows), doc_rows, 32) == 8
    assert chunk_size(list(doc_rows), {d: np.arange(96) for d in doc_rows}, 32) == 32
    assert chunk_size(list(doc_rows), {d: np.arange(6) for d in doc_rows}, 32) == 4
    texts = np.array([" the", " plot", " was", " long"] * 120)
    texts[np.arange(30) * 16 + 12] = " cat"  # one " cat" in the second half of every document
    acts = (texts == " cat").astype(np.float32)
    cfg = ExplanationScoreConfig(n_activating=10, n_non_activating=10, window=32)
    ctxs = held_out_contexts(acts, texts, doc_rows, set(), cfg, np.random.default_rng(0))
    quiet = [c for c in ctxs if not c.active]
    assert len(quiet) == 10 and all(len(c.tokens) == 8 and " cat" not in c.tokens for c in quiet)
    assert all(c.threshold == 0.0 for c in ctxs)
    s = score_feature(
        'tokens "cat"', ctxs, OfflineScorer(), ["detection"], np.random.default_rng(0)
    )
    assert s.detection == pytest.approx(1.0)
