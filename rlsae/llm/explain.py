"""Explain SAE features of a language model from their top-activating contexts.

Two explainers write the same file, ``SAE_DIR/explanations.json``::

    {"features": {"IDX": {"explanation": str, "utility": float, "method": str,
                          "top_tokens": [...], "contexts": [...], "max_activation": float}}}

* ``offline``: no model needed. Over the feature's ``n_top`` highest activations it counts each
  token and compares with the token's base rate over all rows of the store (lift = share among
  the top rows / share overall); the tokens with the highest lift (seen at least ``min_count``
  times) make the explanation, e.g. ``tokens "great", "superb" (lift 9.1x, 7.4x)``, with the top
  contexts kept beside it. The fixed wording has no utility under VADER, so the explanation's
  utility comes from the tokens alone.
* ``llm``: any OpenAI-compatible chat endpoint (``/chat/completions``). The prompt follows Bills
  et al. (2023): the feature's top documents as ``token<TAB>activation`` lines with activations
  scaled to integers 0-10 (10 = the feature's largest activation among the shown records), the
  same records with the zeros filtered out, then "the main thing this feature does is find" for
  the model to complete.

Explanations are written after every feature (atomically), so an interrupted run or an
unreachable endpoint keeps the ones done; a re-run skips features already explained the same
way. The utility of an explanation is its summed absolute utility under the utility table
(:meth:`rlsae.llm.rewards.UtilityTable.abs_utility`), the paper's Table 3 score.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from rlsae.artifacts import Artifact
from rlsae.errors import RlsaeError
from rlsae.llm.configs import ExplainConfig, ExplanationScoreConfig
from rlsae.llm.rewards import UtilityTable
from rlsae.sae.model import load_sae
from rlsae.sae.store import ActivationStore

EXPLANATIONS = "explanations.json"
ENV_BASE_URL = "RLSAE_EXPLAINER_BASE_URL"
ENV_MODEL = "RLSAE_EXPLAINER_MODEL"
ENV_KEY = "OPENAI_API_KEY"


# ----------------------------------------------------------------------------- the artifact


@dataclass
class NamedToken:
    """A token an offline explanation names."""

    token: str
    """Its text (stripped)."""
    token_id: int
    """Its id."""
    count: int
    """Occurrences among the feature's top activations."""
    lift: float
    """Share among the top activations / share over all rows."""


@dataclass
class ContextRecord:
    """One top document of a feature, with the feature's activation per token."""

    document: int
    """Document index in the store's context."""
    position: int
    """Position of the top activation in the document."""
    tokens: list[str]
    """The document's tokens."""
    activations: list[float]
    """The feature's activation on each token."""


@dataclass
class ExplanationScores:
    """How well an explanation predicts the feature on held-out contexts (:mod:`rlsae.llm.scoring`).

    A score the scorer could not compute (a constant prediction for simulation, no held-out
    context of one kind) is ``None``."""

    scorer: str
    """'offline-token-set' (a stand-in, not a language model) or 'llm:MODEL'."""
    detection: float | None = None
    """Balanced accuracy of telling activating from non-activating contexts (0.5 = chance)."""
    fuzzing: float | None = None
    """Balanced accuracy of telling correctly highlighted activating tokens from random ones."""
    simulation: float | None = None
    """Pearson correlation of simulated (0-10) with true per-token activations."""
    n_activating: int = 0
    """Held-out activating contexts scored on."""
    n_non_activating: int = 0
    """Held-out non-activating contexts scored on."""
    documents: list[int] = field(default_factory=list)
    """The held-out documents (activating first), none of them shown to the explainer."""


@dataclass
class FeatureExplanation:
    """One feature's explanation and its utility."""

    explanation: str
    """The explanation (the first sample's, with several)."""
    utility: float
    """Σ |U(word)| over the explanation (mean over the samples), the paper's Table 3 score."""
    method: str
    """'offline-lift' or 'llm:MODEL'."""
    max_activation: float = 0.0
    """The feature's largest activation on the store."""
    top_tokens: list[NamedToken] = field(default_factory=list)
    """Tokens named by an offline explanation (empty for LLM explanations)."""
    contexts: list[ContextRecord] = field(default_factory=list)
    """The top documents shown to the explainer."""
    samples: list[str] = field(default_factory=list)
    """Every LLM sample when more than one was drawn (empty otherwise)."""
    scores: ExplanationScores | None = None
    """Detection / fuzzing / simulation scores on held-out contexts, once scored."""


@dataclass
class Explanations(Artifact):
    """The explanations of an SAE's features (``SAE_DIR/explanations.json``)."""

    FORMAT: ClassVar[str] = "rlsae.explanations"
    VERSION: ClassVar[int] = 2
    """2 added ``scores`` to each feature; version 1 files (no scores) are still read."""

    features: dict[str, FeatureExplanation] = field(default_factory=dict)
    """By feature index (as a string, JSON's key type)."""
    config: ExplainConfig | None = None
    """How the latest features were explained (never an API key)."""
    sae: str = ""
    """The SAE directory."""
    acts: str = ""
    """The activation store explained on."""
    score_config: ExplanationScoreConfig | None = None
    """How the latest scores were computed (never an API key)."""

    @classmethod
    def from_json(cls, data: Any, where: str = "") -> Explanations:
        """Also reads version 1 (the same layout without ``scores``)."""
        if isinstance(data, dict) and data.get("format") == cls.FORMAT and data.get("version") == 1:
            data = {**data, "version": cls.VERSION}
        return super().from_json(data, where)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Explanations:
        """The file at ``path``, or an empty one if there is none (foreign files: one line)."""
        return cls.read(path) if Path(path).exists() else cls()


# ----------------------------------------------------------------------------- activations


def check_sae_matches(sae: Any, store: Any, layer: int | None = None) -> None:
    """RlsaeError if ``sae`` was not trained on ``store``'s hook (or on ``layer``)."""
    hook = str(getattr(sae.cfg, "hook_name", "") or "")
    if sae.cfg.d_in != store.d_in:
        raise RlsaeError(
            f"SAE reads d_in={sae.cfg.d_in} but {store.path} has d_in={store.d_in}; "
            "use the SAE trained on this layer"
        )
    if hook and store.hook and hook != store.hook:
        raise RlsaeError(
            f"SAE was trained on {hook!r} but the activations are {store.hook!r}; "
            "use the SAE trained on this layer"
        )
    if layer is not None:
        got = _layer_of(hook or store.hook)
        if got is not None and got != layer:
            raise RlsaeError(
                f"SAE was trained on layer {got} ({hook or store.hook}), not the requested "
                f"layer {layer}; pass the SAE of layer {layer}"
            )


def _layer_of(hook: str) -> int | None:
    parts = hook.split(".")
    if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


@torch.no_grad()
def feature_activations(
    sae: Any, store: Any, features: Sequence[int], batch_size: int = 4096
) -> torch.Tensor:
    """(rows, len(features)) activations of the chosen features over the store, in row order."""
    idx = torch.as_tensor(list(features), dtype=torch.long)
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= sae.cfg.d_sae):
        raise RlsaeError(f"feature indices must lie in 0..{sae.cfg.d_sae - 1}")
    out = []
    for x in store.iter_sequential(batch_size):
        out.append(sae.encode(x)[:, idx].float())
    return torch.cat(out) if out else torch.zeros((0, len(idx)))


# ----------------------------------------------------------------------------- records


@dataclass
class FeatureRecords:
    """What an explainer sees of one feature."""

    feature: int
    max_activation: float
    top_rows: list[int]
    """Rows of the ``n_top`` highest (positive) activations, highest first."""
    records: list[ContextRecord]
    """Top documents, highest activation first."""


def feature_records(
    acts: torch.Tensor, context: Any, feature: int, n_top: int = 50, n_records: int = 5
) -> FeatureRecords:
    """Top rows and the top ``n_records`` documents (distinct) of one feature's activations."""
    acts = acts.float()
    positive = int((acts > 0).sum())
    k = min(n_top, positive)
    top_rows = torch.topk(acts, k).indices.tolist() if k else []
    docs_arr = context["document"].to_numpy()
    records: list[ContextRecord] = []
    seen: set[int] = set()
    for row in top_rows:
        doc = int(docs_arr[row])
        if doc in seen:
            continue
        seen.add(doc)
        rows = (docs_arr == doc).nonzero()[0]
        sub = context.iloc[rows]
        order = sub["position"].to_numpy().argsort(kind="stable")
        rows = rows[order]
        records.append(
            ContextRecord(
                document=doc,
                position=int(context["position"].iloc[row]),
                tokens=[str(t) for t in context["token"].to_numpy()[rows]],
                activations=[round(float(a), 6) for a in acts[rows].tolist()],
            )
        )
        if len(records) >= n_records:
            break
    max_act = float(acts.max()) if len(acts) else 0.0
    return FeatureRecords(feature, max_act, top_rows, records)


def token_lift(
    token_ids: Sequence[int] | Any, top_rows: Sequence[int]
) -> list[tuple[int, int, float]]:
    """``(token_id, count_in_top, lift)`` for tokens among ``top_rows``, highest lift first.

    lift = (count in top / len(top)) / (count overall / rows); ties broken by count.
    """
    import numpy as np

    ids = np.asarray(token_ids)
    total = Counter(ids.tolist())
    top = Counter(ids[list(top_rows)].tolist()) if len(top_rows) else Counter()
    n, m = len(ids), max(1, len(top_rows))
    rows = [(int(t), c, (c / m) / (total[t] / n)) for t, c in top.items()]
    rows.sort(key=lambda r: (-r[2], -r[1], r[0]))
    return rows


# ----------------------------------------------------------------------------- explainers


def offline_explanation(
    rec: FeatureRecords, context: Any, cfg: ExplainConfig
) -> tuple[str, list[NamedToken]]:
    """Explanation text and the named tokens for one feature."""
    if not rec.top_rows:
        return "never fires on these activations", []
    ids = context["token_id"].to_numpy()
    texts = dict(zip(ids.tolist(), context["token"].tolist(), strict=False))
    lifted = token_lift(ids, rec.top_rows)
    keep = [r for r in lifted if r[1] >= cfg.min_count][: cfg.max_tokens_shown]
    if not keep:
        keep = sorted(lifted, key=lambda r: (-r[1], -r[2], r[0]))[:1]
    named = [NamedToken(texts[t].strip() or texts[t], t, c, round(lf, 3)) for t, c, lf in keep]
    words = ", ".join(json.dumps(n.token, ensure_ascii=False) for n in named)
    lifts = ", ".join(f"{n.lift:.1f}x" for n in named)
    return f"tokens {words} (lift {lifts})", named


BILLS_SYSTEM = (
    "We're studying features of a sparse autoencoder trained on a language model's activations. "
    "Each feature looks for some particular thing in a short document. Look at the parts of the "
    "document the feature activates for and summarize in a single sentence what the feature is "
    "looking for. Don't list examples of words.\n\n"
    "The activation format is token<tab>activation. Activation values range from 0 to 10. A "
    "feature finding what it's looking for is represented by a non-zero activation value. The "
    "higher the activation value, the stronger the match."
)


def normalise_activations(values: Sequence[float], max_activation: float) -> list[int]:
    """Scale to integers 0..10 with ``max_activation`` -> 10 (negatives -> 0), Bills et al."""
    if max_activation <= 0:
        return [0 for _ in values]
    return [max(0, min(10, math.floor(10 * v / max_activation + 0.5))) for v in values]


def bills_prompt(rec: FeatureRecords, label: str = "1") -> str:
    """The user message: records as token<TAB>0-10 lines, then with zeros filtered out."""
    top = max((max(r.activations) for r in rec.records), default=0.0)
    full, nonzero = [], []
    for r in rec.records:
        scaled = normalise_activations(r.activations, top)
        lines = [f"{_clean(t)}\t{a}" for t, a in zip(r.tokens, scaled, strict=True)]
        full.append("<start>\n" + "\n".join(lines) + "\n<end>")
        nz = [ln for ln, a in zip(lines, scaled, strict=True) if a > 0]
        nonzero.append("<start>\n" + "\n".join(nz) + "\n<end>")
    return (
        f"Feature {label}\nActivations:\n"
        + "\n".join(full)
        + "\n\nSame activations, but with all zeros filtered out:\n"
        + "\n".join(nonzero)
        + f"\n\nExplanation of feature {label} behavior: the main thing this feature does is find"
    )


def _clean(token: str) -> str:
    return token.replace("\t", " ").replace("\n", "\\n")


@dataclass
class ChatEndpoint:
    """An OpenAI-compatible ``/chat/completions`` endpoint."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    temperature: float = 0.0
    role: str = "explainer"
    """Named in error messages ('explainer' or 'scorer')."""

    @classmethod
    def from_options(
        cls,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        temperature: float = 0.0,
    ) -> ChatEndpoint:
        """Options first, then RLSAE_EXPLAINER_BASE_URL / RLSAE_EXPLAINER_MODEL / OPENAI_API_KEY."""
        base_url = base_url or os.environ.get(ENV_BASE_URL)
        model = model or os.environ.get(ENV_MODEL)
        api_key = api_key or os.environ.get(ENV_KEY)
        if not base_url:
            raise RlsaeError(f"no explainer endpoint: pass --base-url or set {ENV_BASE_URL}")
        if not model:
            raise RlsaeError(f"no explainer model: pass --explainer-model or set {ENV_MODEL}")
        if not base_url.startswith(("http://", "https://")):
            raise RlsaeError(f"explainer base URL must start with http:// or https://: {base_url}")
        return cls(base_url.rstrip("/"), model, api_key, timeout, temperature)

    def complete(self, system: str, user: str, max_tokens: int = 80) -> str:
        """The assistant's reply; RlsaeError (one line) when the endpoint fails."""
        body = json.dumps(
            {
                "model": self.model,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                "temperature": self.temperature,
                "max_tokens": max_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = f"{self.base_url}/chat/completions"
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace").strip().splitlines()
            raise RlsaeError(
                f"{self.role} endpoint {url} answered HTTP {e.code}"
                + (f" ({detail[0][:160]})" if detail else "")
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise RlsaeError(f"{self.role} endpoint {url} is unreachable ({reason})") from None
        except json.JSONDecodeError:
            raise RlsaeError(f"{self.role} endpoint {url} did not answer JSON") from None
        try:
            return str(payload["choices"][0]["message"]["content"]).strip()
        except (KeyError, IndexError, TypeError):
            raise RlsaeError(
                f"{self.role} endpoint {url} answered without choices[0].message.content"
            ) from None


def llm_explanation(rec: FeatureRecords, endpoint: ChatEndpoint) -> str:
    """One sentence from the endpoint: what the feature is looking for."""
    if not rec.records:
        return "never fires on these activations"
    text = endpoint.complete(BILLS_SYSTEM, bills_prompt(rec))
    text = " ".join(text.split())
    return text or "(empty answer)"


# ----------------------------------------------------------------------------- driver


def load_explanations(path: str | os.PathLike) -> Explanations:
    """The explanations file, or an empty one if it does not exist."""
    return Explanations.load(path)


def explain_features(
    sae_dir: str | os.PathLike,
    store_dir: str | os.PathLike,
    features: Sequence[int],
    *,
    cfg: ExplainConfig | None = None,
    out: str | os.PathLike | None = None,
    table: Any = None,
    api_key: str | None = None,
    layer: int | None = None,
    redo: bool = False,
    progress: bool = False,
    on_feature: Callable[[int, FeatureExplanation], None] | None = None,
) -> Explanations:
    """Explain ``features`` of the SAE in ``sae_dir`` on the activations in ``store_dir``.

    Writes (and returns) ``out`` (default ``sae_dir/explanations.json``) after every feature.
    ``table`` is a :class:`~rlsae.llm.rewards.UtilityTable` (default VADER) used for each
    explanation's utility. ``layer``: refuse an SAE trained on another layer. Features already
    explained with the same method are kept unless ``redo``.
    """
    from tqdm.auto import tqdm

    cfg = cfg or ExplainConfig()
    cfg.validate()
    table = table or UtilityTable.vader()
    out = Path(out) if out is not None else Path(sae_dir) / EXPLANATIONS
    result = Explanations.load(out)  # a foreign file is refused before any work
    sae, store, ctx = open_lm_store(sae_dir, store_dir, layer)
    endpoint = None
    if cfg.method == "llm":
        endpoint = ChatEndpoint.from_options(
            cfg.base_url, cfg.model, api_key, cfg.timeout, cfg.temperature
        )
        cfg = replace(cfg, base_url=endpoint.base_url, model=endpoint.model)  # never the key
    result.config = cfg
    result.sae = result.sae or str(sae_dir)
    result.acts = str(store_dir)
    method = _method_name(cfg)
    todo = [
        f
        for f in dict.fromkeys(int(x) for x in features)
        if redo or getattr(result.features.get(str(f)), "method", None) != method
    ]
    if not todo:
        return result
    acts = feature_activations(sae, store, todo)
    for j, f in enumerate(tqdm(todo, desc="explaining", unit="feature", disable=not progress)):
        rec = feature_records(acts[:, j], ctx, f, cfg.n_top, cfg.n_records)
        try:
            entry = _explain_one(rec, ctx, cfg, endpoint, table)
        except RlsaeError as e:
            raise RlsaeError(
                f"{e}; {len(result.features)} explanations so far kept in {out}"
            ) from None
        result.features[str(f)] = entry
        result.write(out)
        if on_feature is not None:
            on_feature(f, entry)
    return result


def open_lm_store(
    sae_dir: str | os.PathLike, store_dir: str | os.PathLike, layer: int | None
) -> Any:
    """``(sae, store, context)``, checked to belong together and to hold token contexts."""
    sae = load_sae(sae_dir)
    store = ActivationStore(store_dir)
    check_sae_matches(sae, store, layer)
    ctx = store.context()
    if ctx is None or not {"document", "position", "token_id", "token"} <= set(ctx.columns):
        raise RlsaeError(
            f"{store.path} has no language-model context (document, position, token_id, token); "
            "record it with `rlsae llm record`"
        )
    return sae, store, ctx


def _explain_one(
    rec: FeatureRecords,
    ctx: Any,
    cfg: ExplainConfig,
    endpoint: ChatEndpoint | None,
    table: Any,
) -> FeatureExplanation:
    named: list[NamedToken] = []
    if endpoint is None:
        text, named = offline_explanation(rec, ctx, cfg)
        texts = [text]
    else:
        texts = [llm_explanation(rec, endpoint) for _ in range(max(1, cfg.samples))]
    return FeatureExplanation(
        explanation=texts[0],
        utility=sum(table.abs_utility(t) for t in texts) / len(texts),
        method=_method_name(cfg),
        max_activation=rec.max_activation,
        top_tokens=named,
        contexts=rec.records,
        samples=texts if len(texts) > 1 else [],
    )


def _method_name(cfg: ExplainConfig) -> str:
    return "offline-lift" if cfg.method == "offline" else f"llm:{cfg.model or ''}"
