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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_json, read_json

EXPLANATIONS = "explanations.json"
ENV_BASE_URL = "RLSAE_EXPLAINER_BASE_URL"
ENV_MODEL = "RLSAE_EXPLAINER_MODEL"
ENV_KEY = "OPENAI_API_KEY"


@dataclass
class ExplainConfig:
    """How features are explained (saved in explanations.json under ``config``)."""

    method: str = "offline"
    """``offline`` (token lift against base rate) or ``llm`` (OpenAI-compatible endpoint)."""
    n_top: int = 50
    """Top activations whose tokens the offline explainer counts."""
    n_records: int = 5
    """Top documents shown (to the LLM, and kept as contexts); the paper used 5."""
    max_tokens_shown: int = 3
    """Tokens named by an offline explanation."""
    min_count: int = 2
    """A token must occur this often among the top activations to be named."""
    base_url: str | None = None
    """LLM endpoint base URL, e.g. ``https://api.openai.com/v1`` (env RLSAE_EXPLAINER_BASE_URL)."""
    model: str | None = None
    """LLM model name (env RLSAE_EXPLAINER_MODEL)."""
    timeout: float = 60.0
    """Seconds to wait for one LLM answer."""
    temperature: float = 0.0
    """LLM sampling temperature."""
    samples: int = 1
    """LLM explanations drawn per feature (the paper averaged 3); the utility is their mean and
    ``explanation`` is the first. Use a temperature above 0 with more than one."""


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
    records: list[dict[str, Any]]
    """Top documents: ``{document, position, tokens, activations}`` (position = argmax)."""


def feature_records(
    acts: torch.Tensor, context: Any, feature: int, n_top: int = 50, n_records: int = 5
) -> FeatureRecords:
    """Top rows and the top ``n_records`` documents (distinct) of one feature's activations."""
    acts = acts.float()
    positive = int((acts > 0).sum())
    k = min(n_top, positive)
    top_rows = torch.topk(acts, k).indices.tolist() if k else []
    docs_arr = context["document"].to_numpy()
    records: list[dict[str, Any]] = []
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
            {
                "document": doc,
                "position": int(context["position"].iloc[row]),
                "tokens": [str(t) for t in context["token"].to_numpy()[rows]],
                "activations": [round(float(a), 6) for a in acts[rows].tolist()],
            }
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
) -> tuple[str, list[dict[str, Any]]]:
    """Explanation text and the named tokens (``{token, count, lift}``) for one feature."""
    if not rec.top_rows:
        return "never fires on these activations", []
    ids = context["token_id"].to_numpy()
    texts = dict(zip(ids.tolist(), context["token"].tolist(), strict=False))
    lifted = token_lift(ids, rec.top_rows)
    keep = [r for r in lifted if r[1] >= cfg.min_count][: cfg.max_tokens_shown]
    if not keep:
        keep = sorted(lifted, key=lambda r: (-r[1], -r[2], r[0]))[:1]
    named = [
        {"token": texts[t].strip() or texts[t], "token_id": t, "count": c, "lift": round(lf, 3)}
        for t, c, lf in keep
    ]
    words = ", ".join(json.dumps(n["token"], ensure_ascii=False) for n in named)
    lifts = ", ".join(f"{n['lift']:.1f}x" for n in named)
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
    top = max((max(r["activations"]) for r in rec.records), default=0.0)
    full, nonzero = [], []
    for r in rec.records:
        scaled = normalise_activations(r["activations"], top)
        lines = [f"{_clean(t)}\t{a}" for t, a in zip(r["tokens"], scaled, strict=True)]
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
                f"explainer endpoint {url} answered HTTP {e.code}"
                + (f" ({detail[0][:160]})" if detail else "")
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise RlsaeError(f"explainer endpoint {url} is unreachable ({reason})") from None
        except json.JSONDecodeError:
            raise RlsaeError(f"explainer endpoint {url} did not answer JSON") from None
        try:
            return str(payload["choices"][0]["message"]["content"]).strip()
        except (KeyError, IndexError, TypeError):
            raise RlsaeError(
                f"explainer endpoint {url} answered without choices[0].message.content"
            ) from None


def llm_explanation(rec: FeatureRecords, endpoint: ChatEndpoint) -> str:
    """One sentence from the endpoint: what the feature is looking for."""
    if not rec.records:
        return "never fires on these activations"
    text = endpoint.complete(BILLS_SYSTEM, bills_prompt(rec))
    text = " ".join(text.split())
    return text or "(empty answer)"


# ----------------------------------------------------------------------------- driver


def load_explanations(path: str | os.PathLike) -> dict[str, Any]:
    """The explanations file, or an empty one if it does not exist."""
    path = Path(path)
    if not path.exists():
        return {"features": {}}
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("features"), dict):
        raise RlsaeError(f"{path} is not an explanations file (no 'features' object)")
    return data


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
    on_feature: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Explain ``features`` of the SAE in ``sae_dir`` on the activations in ``store_dir``.

    Writes (and returns) ``out`` (default ``sae_dir/explanations.json``) after every feature.
    ``table`` is a :class:`~rlsae.llm.rewards.UtilityTable` (default VADER) used for each
    explanation's utility. ``layer``: refuse an SAE trained on another layer. Features already
    explained with the same method are kept unless ``redo``.
    """
    from tqdm.auto import tqdm

    from rlsae.llm.rewards import UtilityTable
    from rlsae.sae import load_sae
    from rlsae.sae.store import ActivationStore

    cfg = cfg or ExplainConfig()
    if cfg.method not in ("offline", "llm"):
        raise RlsaeError(f"explainer method must be offline or llm, not {cfg.method!r}")
    table = table or UtilityTable.vader()
    sae = load_sae(sae_dir)
    store = ActivationStore(store_dir)
    check_sae_matches(sae, store, layer)
    ctx = store.context()
    if ctx is None or not {"document", "position", "token_id", "token"} <= set(ctx.columns):
        raise RlsaeError(
            f"{store.path} has no language-model context (document, position, token_id, token); "
            "record it with `rlsae llm record`"
        )
    endpoint = None
    if cfg.method == "llm":
        endpoint = ChatEndpoint.from_options(
            cfg.base_url, cfg.model, api_key, cfg.timeout, cfg.temperature
        )
        cfg = replace(cfg, base_url=endpoint.base_url, model=endpoint.model)  # never the key
    out = Path(out) if out is not None else Path(sae_dir) / EXPLANATIONS
    result = load_explanations(out)
    saved_cfg = asdict(cfg)
    result["config"] = saved_cfg
    result.setdefault("sae", str(sae_dir))
    result["acts"] = str(store_dir)
    todo = [
        int(f)
        for f in dict.fromkeys(int(x) for x in features)
        if redo or result["features"].get(str(int(f)), {}).get("method") != _method_name(cfg)
    ]
    if not todo:
        return result
    acts = feature_activations(sae, store, todo)
    for j, f in enumerate(tqdm(todo, desc="explaining", unit="feature", disable=not progress)):
        rec = feature_records(acts[:, j], ctx, f, cfg.n_top, cfg.n_records)
        named: list[dict[str, Any]] = []
        samples: list[str] = []
        if cfg.method == "offline":
            text, named = offline_explanation(rec, ctx, cfg)
        else:
            try:
                samples = [
                    llm_explanation(rec, endpoint)  # type: ignore[arg-type]
                    for _ in range(max(1, cfg.samples))
                ]
                text = samples[0]
            except RlsaeError as e:
                done = sum(1 for v in result["features"].values() if v.get("method"))
                raise RlsaeError(f"{e}; {done} explanations so far kept in {out}") from None
        texts = samples if cfg.method == "llm" else [text]
        entry = {
            "explanation": text,
            "utility": sum(table.abs_utility(t) for t in texts) / len(texts),
            "method": _method_name(cfg),
            "max_activation": rec.max_activation,
            "top_tokens": named,
            "contexts": rec.records,
        }
        if len(texts) > 1:
            entry["samples"] = texts
        result["features"][str(f)] = entry
        atomic_write_json(out, result)
        if on_feature is not None:
            on_feature(f, entry)
    return result


def _method_name(cfg: ExplainConfig) -> str:
    return "offline-lift" if cfg.method == "offline" else f"llm:{cfg.model or ''}"
