"""Score explanations of SAE features on held-out contexts: detection, fuzzing, simulation.

An explanation is only as good as what it predicts. For each explained feature the scorer is
shown contexts the explainer never saw (documents other than the explanation's ``contexts``):
``n_activating`` documents where the feature fires, spread over its activation range (ranked by
the document's largest activation, picked at evenly spaced ranks), and ``n_non_activating``
documents where it never fires, drawn at random. Each context is a window of ``window`` tokens
around its strongest activation. A dense feature, which fires in (nearly) every document, gets
its non-activating contexts from within the documents instead: delphi-style chunks of
``window`` tokens where it stays at or below a threshold (:func:`held_out_contexts`), so every
live feature gets a detection score.

* **detection** (Paulo et al. 2024, EleutherAI delphi): given the explanation, which contexts
  activate the feature? Score: balanced accuracy (mean of the hit rates on activating and on
  non-activating contexts; 0.5 is chance).
* **fuzzing** (same): every context has some tokens marked ``<<like this>>``; in half of the
  activating contexts they are the tokens the feature fires on, in the other half and in every
  non-activating context they are as many random other tokens. Are the marked tokens the
  activating ones? Score: balanced accuracy.
* **simulation** (Bills et al. 2023): the scorer predicts each token's activation 0-10 from the
  explanation; score: Pearson correlation of the predictions with the true activations over all
  tokens of all the contexts ("all at once" scoring).

Two scorers answer the same three questions:

* ``offline``: a **token-set detector, not a language model** -- a stand-in for tests and the
  demo. Its words are the explanation's quoted strings (the offline explainer's ``tokens "great",
  ...``) or else its words minus stop words; a context activates when it holds one of them, marked
  tokens are right when all are among them, and it simulates 10 on those tokens and 0 elsewhere.
  Every output names it ``offline-token-set`` (see :data:`OFFLINE_NOTE`).
* ``llm``: any OpenAI-compatible chat endpoint (:class:`~rlsae.llm.explain.ChatEndpoint`); one
  request per feature and method, answered with JSON lists. The API key comes from
  ``OPENAI_API_KEY`` and is never written.

Scores are stored in each feature's ``scores`` in ``explanations.json``, written after every
feature, so an interrupted run keeps what is done and a re-run scores only the rest.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rlsae.errors import RlsaeError
from rlsae.llm.configs import ExplanationScoreConfig
from rlsae.llm.explain import (
    ENV_BASE_URL,
    ENV_MODEL,
    EXPLANATIONS,
    ChatEndpoint,
    Explanations,
    ExplanationScores,
    FeatureExplanation,
    feature_activations,
    open_lm_store,
)

OFFLINE_SCORER = "offline-token-set"
OFFLINE_NOTE = (
    "offline token-set scorer: a stand-in built from the explanation's words, not a language model"
)
STOPWORDS = frozenset(
    "a an and are as at be by for from in is it its of on or that the this to with word words "
    "token tokens lift feature fires find finds main thing does mentions".split()
)


def scorer_label(scorer: str) -> str:
    """How outputs name a scorer: the offline one always says it is not a language model."""
    return f"{scorer} ({OFFLINE_NOTE})" if scorer == OFFLINE_SCORER else scorer


# ----------------------------------------------------------------------------- contexts


@dataclass
class HeldOutContext:
    """A window of one document the explainer did not see, with the feature's activations."""

    document: int
    tokens: list[str]
    activations: list[float]
    threshold: float = 0.0
    """The feature counts as firing on a token above this (0, or for a dense feature the
    level below which its non-activating windows stay: see :func:`held_out_contexts`)."""

    @property
    def active(self) -> bool:
        """Whether the feature fires anywhere in the window."""
        return max(self.activations, default=0.0) > self.threshold

    def firing(self) -> list[int]:
        """The positions where the feature fires (above :attr:`threshold`)."""
        return [i for i, a in enumerate(self.activations) if a > self.threshold]


def _peak_window(rows: np.ndarray, a: np.ndarray, window: int) -> slice:
    """The ``window`` positions of a document around its strongest activation."""
    start = max(0, min(int(a.argmax()) - window // 2, len(rows) - window))
    return slice(start, start + window)


def chunk_size(docs: Sequence[int], doc_rows: dict[int, np.ndarray], window: int) -> int:
    """The length of the within-document chunks: ``window``, or for documents shorter than two
    windows half the median document (at least 4 tokens), so a chunk can leave out the part of
    a short document where the feature fires."""
    if not docs:
        return window
    median = int(np.median([len(doc_rows[d]) for d in docs]))
    return max(1, min(window, max(4, median // 2)))


def _chunks(
    docs: Sequence[int], doc_rows: dict[int, np.ndarray], taken: dict[int, slice], window: int
) -> list[tuple[int, slice]]:
    """Delphi-style chunks: each document cut into consecutive windows of ``window`` tokens
    (a document shorter than that is one chunk; a shorter tail is dropped), leaving out any
    chunk that overlaps the document's window already shown as activating (``taken``)."""
    out = []
    for d in docs:
        n = len(doc_rows[d])
        starts = range(0, max(n - window, 0) + 1, window)
        for s in starts:
            t = taken.get(d)
            if t is None or s + window <= t.start or s >= t.stop:
                out.append((d, slice(s, s + window)))
    return out


def held_out_contexts(
    acts: np.ndarray,
    texts: np.ndarray,
    doc_rows: dict[int, np.ndarray],
    explained: set[int],
    cfg: ExplanationScoreConfig,
    rng: np.random.Generator,
) -> list[HeldOutContext]:
    """Activating contexts (spread over the activation range, strongest first), then
    non-activating ones; documents in ``explained`` are never used. ``doc_rows``: each
    document's rows in position order; ``texts``: the token text of every row.

    Non-activating contexts are random documents where the feature never fires. When there
    are fewer such documents than ``cfg.n_non_activating`` (a dense feature fires in every
    document), they are random *chunks* of the held-out documents, as delphi draws them
    (Paulo et al. 2024: the corpus cut into fixed-length windows): windows of ``cfg.window``
    tokens (of half a document when documents are shorter than two windows:
    :func:`chunk_size`) where the feature stays at or below a threshold -- 0 when enough exist,
    else the lowest level at which ``n_non_activating`` chunks stay below it (the feature's
    weakest stretches) -- and the activating contexts are the windows that rise above it."""
    docs = [d for d in doc_rows if d not in explained]
    peak = {d: float(acts[doc_rows[d]].max()) for d in docs}
    silent = [d for d in docs if peak[d] <= 0]
    threshold, chunks, level = 0.0, [], np.zeros(0)
    if len(silent) < cfg.n_non_activating:
        size = chunk_size(docs, doc_rows, cfg.window)
        chunks = _chunks(docs, doc_rows, {}, size)
        level = np.array([float(acts[doc_rows[d][w]].max()) for d, w in chunks])
        if len(chunks) > cfg.n_non_activating and (level <= 0).sum() < cfg.n_non_activating:
            # rounded as the contexts' activations are (rounding keeps the order)
            threshold = round(float(np.sort(level)[cfg.n_non_activating - 1]), 6)
            level = np.round(level, 6)
    firing = sorted((d for d in docs if round(peak[d], 6) > threshold), key=lambda d: (-peak[d], d))
    if len(firing) > cfg.n_activating:
        at = np.linspace(0, len(firing) - 1, cfg.n_activating).round().astype(int)
        firing = [firing[i] for i in dict.fromkeys(at.tolist())]
    windows = {d: _peak_window(doc_rows[d], acts[doc_rows[d]], cfg.window) for d in firing}
    quiet: list[tuple[int, slice]]
    if len(silent) >= cfg.n_non_activating:
        picked = sorted(rng.choice(silent, cfg.n_non_activating, replace=False).tolist())
        quiet = [(d, slice(0, cfg.window)) for d in picked]
    else:
        kept = {(d, w.start) for d, w in _chunks(docs, doc_rows, windows, size)}
        below = [
            i for i, (d, w) in enumerate(chunks) if level[i] <= threshold and (d, w.start) in kept
        ]  # chunks at or below the threshold that do not overlap an activating window
        if len(below) > cfg.n_non_activating:
            below = sorted(rng.choice(below, cfg.n_non_activating, replace=False).tolist())
        quiet = [chunks[i] for i in below]
    out = []
    for d, w in [*((d, windows[d]) for d in firing), *quiet]:
        rows = doc_rows[d][w]
        tokens = [str(t) for t in texts[rows]]
        acts_w = [round(float(v), 6) for v in acts[rows]]
        out.append(HeldOutContext(int(d), tokens, acts_w, threshold))
    return out


@dataclass
class FuzzExample:
    """A context with some tokens marked; ``correct`` when they are the activating ones."""

    context: HeldOutContext
    marked: list[int]
    correct: bool

    def text(self) -> str:
        """The context with its marked tokens as ``<<token>>``."""
        marks = set(self.marked)
        return "".join(
            f"<<{t}>>" if i in marks else t for i, t in enumerate(self.context.tokens)
        ).replace("\n", " ")


def fuzz_examples(
    contexts: Sequence[HeldOutContext], rng: np.random.Generator
) -> list[FuzzExample]:
    """Half the activating contexts correctly marked; the rest and all non-activating ones with
    as many random non-activating tokens marked."""
    out = []
    active = [c for c in contexts if c.active]
    right = set(rng.permutation(len(active))[: (len(active) + 1) // 2].tolist())
    counts = [len(c.firing()) for c in active]
    k_default = max(1, round(sum(counts) / len(counts))) if counts else 1
    j = 0
    for c in contexts:
        on = c.firing()
        off = [i for i, a in enumerate(c.activations) if a <= c.threshold]
        if c.active and (j in right or not off):
            out.append(FuzzExample(c, on, True))
        else:
            k = min(len(on) if on else k_default, len(off))
            out.append(FuzzExample(c, sorted(rng.choice(off, k, replace=False).tolist()), False))
        j += c.active
    return out


# ----------------------------------------------------------------------------- scorers


class Scorer(Protocol):
    """Answers the three questions about one feature's explanation."""

    name: str

    def detect(self, explanation: str, contexts: Sequence[HeldOutContext]) -> list[bool]: ...

    def fuzz(self, explanation: str, examples: Sequence[FuzzExample]) -> list[bool]: ...

    def simulate(
        self, explanation: str, contexts: Sequence[HeldOutContext]
    ) -> list[list[float]]: ...


def explanation_words(explanation: str) -> set[str]:
    """The offline scorer's words: quoted strings if any, else the words minus stop words."""
    quoted = re.findall(r'"([^"]+)"', explanation)
    words = quoted or re.findall(r"[\w']+", explanation)
    return {w.strip().lower() for w in words if w.strip() and w.strip().lower() not in STOPWORDS}


class OfflineScorer:
    """A token-set detector built from the explanation's words (not a language model)."""

    name = OFFLINE_SCORER

    def _hits(self, explanation: str, tokens: Sequence[str]) -> list[bool]:
        words = explanation_words(explanation)
        return [t.strip().lower() in words for t in tokens]

    def detect(self, explanation: str, contexts: Sequence[HeldOutContext]) -> list[bool]:
        return [any(self._hits(explanation, c.tokens)) for c in contexts]

    def fuzz(self, explanation: str, examples: Sequence[FuzzExample]) -> list[bool]:
        out = []
        for ex in examples:
            hits = self._hits(explanation, [ex.context.tokens[i] for i in ex.marked])
            out.append(bool(hits) and all(hits))
        return out

    def simulate(self, explanation: str, contexts: Sequence[HeldOutContext]) -> list[list[float]]:
        return [[10.0 * h for h in self._hits(explanation, c.tokens)] for c in contexts]


SCORER_SYSTEM = (
    "We're studying features of a sparse autoencoder trained on a language model's activations. "
    "Each feature looks for some particular thing in a short text. You are given an explanation "
    "of one feature and numbered text examples. Answer only with JSON, exactly as asked."
)


class LLMScorer:
    """The three questions put to an OpenAI-compatible chat endpoint."""

    def __init__(self, endpoint: ChatEndpoint):
        self.endpoint = endpoint
        self.name = f"llm:{endpoint.model}"
        self.feature = -1  # named in error messages

    def _ask(self, what: str, user: str, max_tokens: int) -> Any:
        text = self.endpoint.complete(SCORER_SYSTEM, user, max_tokens=max_tokens)
        lo, hi = text.find("["), text.rfind("]")
        try:
            if lo < 0 or hi < lo:
                raise ValueError
            return json.loads(text[lo : hi + 1])
        except ValueError:
            raise self._malformed(what, text) from None

    def _malformed(self, what: str, text: str) -> RlsaeError:
        short = " ".join(text.split())[:80]
        return RlsaeError(
            f"scorer endpoint {self.endpoint.base_url}: {what} answer for feature "
            f"{self.feature} is malformed: {short!r}"
        )

    def _flags(self, what: str, user: str, n: int) -> list[bool]:
        got = self._ask(what, user, max_tokens=8 * n + 32)
        if not isinstance(got, list) or len(got) != n or any(v not in (0, 1) for v in got):
            raise self._malformed(what, json.dumps(got))
        return [bool(v) for v in got]

    def detect(self, explanation: str, contexts: Sequence[HeldOutContext]) -> list[bool]:
        return self._flags("detection", detection_prompt(explanation, contexts), len(contexts))

    def fuzz(self, explanation: str, examples: Sequence[FuzzExample]) -> list[bool]:
        return self._flags("fuzzing", fuzzing_prompt(explanation, examples), len(examples))

    def simulate(self, explanation: str, contexts: Sequence[HeldOutContext]) -> list[list[float]]:
        n_tok = sum(len(c.tokens) for c in contexts)
        got = self._ask("simulation", simulation_prompt(explanation, contexts), 4 * n_tok + 64)
        ok = (
            isinstance(got, list)
            and len(got) == len(contexts)
            and all(
                isinstance(row, list)
                and len(row) == len(c.tokens)
                and all(isinstance(v, int | float) and 0 <= v <= 10 for v in row)
                for row, c in zip(got, contexts, strict=False)
            )
        )
        if not ok:
            raise self._malformed("simulation", json.dumps(got))
        return [[float(v) for v in row] for row in got]


def _text(tokens: Sequence[str]) -> str:
    return "".join(tokens).replace("\n", " ")


def detection_prompt(explanation: str, contexts: Sequence[HeldOutContext]) -> str:
    """Explanation, numbered examples, and the answer format (a JSON list of 0/1)."""
    lines = [f"Example {i + 1}: {_text(c.tokens)}" for i, c in enumerate(contexts)]
    return (
        f"Explanation: {explanation}\n\n"
        + "\n".join(lines)
        + f"\n\nFor each of the {len(contexts)} examples, does the feature activate on it? Reply "
        f"with a JSON list of {len(contexts)} numbers, 1 (activates) or 0 (does not), in order."
    )


def fuzzing_prompt(explanation: str, examples: Sequence[FuzzExample]) -> str:
    """Explanation, numbered examples with marked tokens, and the answer format."""
    lines = [f"Example {i + 1}: {ex.text()}" for i, ex in enumerate(examples)]
    return (
        f"Explanation: {explanation}\n\n"
        + "\n".join(lines)
        + f"\n\nIn each example some tokens are marked <<like this>>. For each of the "
        f"{len(examples)} examples, are the marked tokens the ones the feature activates on? "
        f"Reply with a JSON list of {len(examples)} numbers, 1 (yes) or 0 (no), in order."
    )


def simulation_prompt(explanation: str, contexts: Sequence[HeldOutContext]) -> str:
    """Explanation, each example's tokens one per line, and the answer format (Bills et al.)."""
    blocks = []
    for i, c in enumerate(contexts):
        toks = "\n".join(t.replace("\t", " ").replace("\n", "\\n") for t in c.tokens)
        blocks.append(f"Example {i + 1} ({len(c.tokens)} tokens):\n<start>\n{toks}\n<end>")
    return (
        f"Explanation: {explanation}\n\n"
        + "\n\n".join(blocks)
        + "\n\nPredict the feature's activation on every token, an integer from 0 (none) to 10 "
        "(strongest). Reply with a JSON list holding one list per example, one number per token."
    )


# ----------------------------------------------------------------------------- scores


def balanced_accuracy(truth: Sequence[bool], said: Sequence[bool]) -> float | None:
    """Mean of the hit rates on the positives and on the negatives; None without both."""
    t, s = np.asarray(truth, bool), np.asarray(said, bool)
    if t.all() or not t.any():
        return None
    return float(((s[t]).mean() + (~s[~t]).mean()) / 2)


def pearson(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Pearson correlation; None when either side is constant."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def score_feature(
    explanation: str,
    contexts: Sequence[HeldOutContext],
    scorer: Scorer,
    methods: Sequence[str],
    rng: np.random.Generator,
) -> ExplanationScores:
    """The chosen scores of one explanation on its held-out contexts."""
    truth = [c.active for c in contexts]
    out = ExplanationScores(
        scorer=scorer.name,
        n_activating=sum(truth),
        n_non_activating=len(truth) - sum(truth),
        documents=[c.document for c in contexts],
    )
    if not contexts:
        return out
    if "detection" in methods:
        out.detection = balanced_accuracy(truth, scorer.detect(explanation, contexts))
    if "fuzzing" in methods:
        examples = fuzz_examples(contexts, rng)
        said = scorer.fuzz(explanation, examples)
        out.fuzzing = balanced_accuracy([ex.correct for ex in examples], said)
    if "simulation" in methods:
        sim = scorer.simulate(explanation, contexts)
        flat_true = [a for c in contexts for a in c.activations]
        out.simulation = pearson([v for row in sim for v in row], flat_true)
    for name in ("detection", "fuzzing", "simulation"):
        v = getattr(out, name)
        if v is not None:
            setattr(out, name, round(v, 6))
    return out


def make_scorer(cfg: ExplanationScoreConfig, api_key: str | None = None) -> Scorer:
    """The offline scorer, or the endpoint's (options first, then the environment)."""
    if cfg.scorer == "offline":
        return OfflineScorer()
    if not (cfg.base_url or os.environ.get(ENV_BASE_URL)):
        raise RlsaeError(f"no scorer endpoint: pass --base-url or set {ENV_BASE_URL}")
    if not (cfg.model or os.environ.get(ENV_MODEL)):
        raise RlsaeError(f"no scorer model: pass --scorer-model or set {ENV_MODEL}")
    endpoint = ChatEndpoint.from_options(cfg.base_url, cfg.model, api_key, cfg.timeout, 0.0)
    return LLMScorer(replace(endpoint, role="scorer"))


def score_explanations(
    sae_dir: str | os.PathLike,
    store_dir: str | os.PathLike,
    features: Sequence[int] | None = None,
    *,
    cfg: ExplanationScoreConfig | None = None,
    explanations: str | os.PathLike | None = None,
    api_key: str | None = None,
    redo: bool = False,
    progress: bool = False,
    on_feature: Callable[[int, FeatureExplanation], None] | None = None,
) -> Explanations:
    """Score the explanations in ``explanations`` (default ``sae_dir/explanations.json``).

    ``features``: which explained features (default all). Features already scored by the same
    scorer are kept unless ``redo``. The file is rewritten after every feature; when the scorer
    fails the error says how many features are scored so far (they stay in the file).
    """
    from tqdm.auto import tqdm

    cfg = cfg or ExplanationScoreConfig()
    cfg.validate()
    path = Path(explanations) if explanations is not None else Path(sae_dir) / EXPLANATIONS
    if not path.is_file():
        raise RlsaeError(f"no explanations at {path}; run `rlsae llm explain` first")
    result = Explanations.read(path)
    wanted = list(dict.fromkeys(int(f) for f in (features or [int(k) for k in result.features])))
    missing = [f for f in wanted if str(f) not in result.features]
    if missing:
        raise RlsaeError(f"features {missing} have no explanation in {path}; explain them first")
    scorer = make_scorer(cfg, api_key)
    if isinstance(scorer, LLMScorer):
        cfg = replace(cfg, base_url=scorer.endpoint.base_url, model=scorer.endpoint.model)
    todo = [
        f
        for f in wanted
        if redo or getattr(result.features[str(f)].scores, "scorer", None) != scorer.name
    ]
    if not todo:
        return result
    sae, store, ctx = open_lm_store(sae_dir, store_dir, None)
    acts = feature_activations(sae, store, todo).numpy()
    order = np.lexsort((ctx["position"].to_numpy(), ctx["document"].to_numpy()))
    docs_sorted = ctx["document"].to_numpy()[order]
    bounds = np.flatnonzero(np.diff(docs_sorted)) + 1
    groups = zip(np.split(docs_sorted, bounds), np.split(order, bounds), strict=True)
    doc_rows = {int(g[0]): o for g, o in groups if len(g)}
    texts = ctx["token"].astype(str).to_numpy()
    result.score_config = cfg
    done = sum(1 for e in result.features.values() if e.scores is not None)
    for j, f in enumerate(tqdm(todo, desc="scoring", unit="feature", disable=not progress)):
        entry = result.features[str(f)]
        rng = np.random.default_rng([cfg.seed, f])
        explained = {c.document for c in entry.contexts}
        contexts = held_out_contexts(acts[:, j], texts, doc_rows, explained, cfg, rng)
        if isinstance(scorer, LLMScorer):
            scorer.feature = f
        try:
            entry.scores = score_feature(
                entry.explanation, contexts, scorer, cfg.method_list(), rng
            )
        except RlsaeError as e:
            raise RlsaeError(f"{e}; {done} scored features so far kept in {path}") from None
        done += 1
        result.write(path)
        if on_feature is not None:
            on_feature(f, entry)
    return result
