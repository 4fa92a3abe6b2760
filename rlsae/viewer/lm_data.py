"""Language-model feature pages: token contexts, decoder-through-unembedding logits, explanations
and base-versus-tuned pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlsae.viewer.scan import FeatureScan, gather_activations


def _sig(x: float) -> float:
    """Four significant digits, for compact JSON."""
    return float(f"{float(x):.4g}")


def token_texts(ctx: Any, tokenizer: Any | None) -> list[str]:
    """One display string per store row: the ``token`` column, else the decoded ``token_id``."""
    if ctx is not None and "token" in ctx.columns:
        return [str(t) for t in ctx["token"].tolist()]
    if ctx is not None and "token_id" in ctx.columns and tokenizer is not None:
        return [tokenizer.decode([int(i)]) for i in ctx["token_id"].tolist()]
    n = 0 if ctx is None else len(ctx)
    return ["?"] * n


def build_contexts(
    sae: Any,
    store: Any,
    scan: FeatureScan,
    docs: np.ndarray | None,
    tokens: list[str],
    before: int,
    after: int,
    batch_size: int,
) -> dict[tuple[int, int], list[list[Any]]]:
    """For every top and interval-sample row of every feature, the window of tokens around it
    with the feature's activation on each: {(feature, row): [[token, activation, is_focus]]}."""
    rows_total = scan.rows
    wanted: list[tuple[int, int]] = []
    for f in range(scan.top_rows.shape[0]):
        rs = list(scan.top_rows[f][scan.top_rows[f] >= 0])
        rs += list(scan.interval_rows[f][scan.interval_rows[f] >= 0].ravel())
        wanted.extend((f, int(r)) for r in dict.fromkeys(rs))
    pair_rows, pair_feats, windows = [], [], []
    for f, r in wanted:
        lo, hi = max(0, r - before), min(rows_total, r + after + 1)
        win = [
            j for j in range(lo, hi) if docs is None or docs[j] == docs[r]
        ]  # stay inside the document
        windows.append((f, r, win))
        pair_rows.extend(win)
        pair_feats.extend([f] * len(win))
    vals = gather_activations(sae, store, np.array(pair_rows), np.array(pair_feats), batch_size)
    out: dict[tuple[int, int], list[list[Any]]] = {}
    k = 0
    for f, r, win in windows:
        out[(f, r)] = [
            [tokens[j] if j < len(tokens) else "?", _sig(vals[k + i]), int(j == r)]
            for i, j in enumerate(win)
        ]
        k += len(win)
    return out


def unembedding(model: Any) -> torch.Tensor | None:
    """The (vocab, d_model) unembedding matrix of a Hugging Face causal LM or TransformerLens
    model, or None."""
    if hasattr(model, "get_output_embeddings"):
        emb = model.get_output_embeddings()
        if emb is not None and getattr(emb, "weight", None) is not None:
            return emb.weight.detach().float()
    if hasattr(model, "W_U"):
        return model.W_U.detach().float().T
    return None


@torch.no_grad()
def logit_effects(
    w_dec: torch.Tensor, w_u: torch.Tensor, tokenizer: Any, n: int, chunk: int = 1024
) -> list[dict[str, list[list[Any]]]]:
    """Per feature, the ``n`` tokens whose logits its decoder direction raises most (promoted)
    and lowers most (suppressed): ``W_dec[f] @ W_U^T``, without the final layer norm."""
    w_dec = w_dec.detach().float()
    n = min(n, w_u.shape[0])
    out: list[dict[str, list[list[Any]]]] = []
    cache: dict[int, str] = {}

    def tok(i: int) -> str:
        if i not in cache:
            cache[i] = tokenizer.decode([i]) if tokenizer is not None else str(i)
        return cache[i]

    for s in range(0, w_dec.shape[0], chunk):
        logits = w_dec[s : s + chunk] @ w_u.T
        pv, pi = logits.topk(n, dim=1)
        sv, si = logits.topk(n, dim=1, largest=False)
        for a in range(logits.shape[0]):
            out.append(
                {
                    "promoted": [
                        [tok(int(i)), _sig(v)] for v, i in zip(pv[a], pi[a], strict=False)
                    ],
                    "suppressed": [
                        [tok(int(i)), _sig(v)] for v, i in zip(sv[a], si[a], strict=False)
                    ],
                }
            )
    return out


def find_model_dir(run_dir: Path, source: str, extra: dict[str, Any]) -> str | None:
    """Where the model behind an LM store lives: ``models/SOURCE`` in the run, else the store's
    ``extra.model`` (a path, relative to the run or absolute, or a hub name)."""
    cand = run_dir / "models" / source
    if (cand / "config.json").is_file():
        return str(cand)
    m = extra.get("model")
    if not m:
        return None
    for p in (Path(str(m)), run_dir / str(m)):
        if (p / "config.json").is_file():
            return str(p)
    return str(m)


def read_explanations(sae_dir: Path) -> dict[int, dict[str, Any]]:
    """``explanations.json`` beside an SAE as {feature: {explanation, utility, method}}."""
    from rlsae.fsutil import read_json

    p = sae_dir / "explanations.json"
    if not p.is_file():
        return {}
    data = read_json(p)
    feats = data.get("features", {}) if isinstance(data, dict) else {}
    out = {}
    for k, v in feats.items():
        try:
            out[int(k)] = v if isinstance(v, dict) else {"explanation": str(v)}
        except ValueError:
            continue
    return out


def _pair_lists(obj: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], list[dict]]]:
    """Every list of {feature, match, cosine} dicts inside ``obj``, with the keys leading to it."""
    found = []
    if isinstance(obj, list) and obj and all(isinstance(d, dict) for d in obj):
        if all("feature" in d and "match" in d for d in obj):
            return [(path, obj)]
        for i, d in enumerate(obj):
            found += _pair_lists(d, (*path, str(i)))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            found += _pair_lists(v, (*path, str(k)))
    return found


def shared_pairs(
    shared: Any, sae_rel: str, hook: str, source: str, by_rel: dict[str, str]
) -> dict[int, dict[str, Any]]:
    """Base-versus-tuned pairs for one SAE from ``analysis/llm_shared_features.json``.

    Each list of ``{feature, match, cosine}`` found in the file belongs to a layer entry; the
    entry's own ``sae_a``/``sae_b`` (or ``base``/``tuned``) paths name the two SAEs when given,
    otherwise the entry is matched by hook and the base model is side A. Returns
    {feature: {"other": viewer id of the partner SAE or None, "feature": j, "cosine": c}}.
    """
    out: dict[int, dict[str, Any]] = {}
    if shared is None:
        return out
    for path, pairs in _pair_lists(shared):
        entry: Any = shared
        for k in path[:-1]:
            entry = entry[int(k)] if isinstance(entry, list) else entry[k]
        entry = entry if isinstance(entry, dict) else {}
        a = str(entry.get("sae_a") or entry.get("base") or "")
        b = str(entry.get("sae_b") or entry.get("tuned") or "")
        ids = _match_entry(a, b, sae_rel, by_rel)
        if ids is None:  # no paths: decide by hook
            text = " ".join(path) + " " + str(entry.get("hook", "")) + str(entry.get("layer", ""))
            if hook not in text and str(entry.get("hook", "")) != hook:
                continue
            if source not in ("base", "tuned"):
                continue
            side = "a" if source == "base" else "b"
            other_rel = sae_rel.replace(source, "tuned" if source == "base" else "base", 1)
            ids = (side, by_rel.get(other_rel))
        side, other = ids
        if side == "skip":
            continue
        for d in pairs:
            try:
                i, j, c = int(d["feature"]), int(d["match"]), float(d.get("cosine", "nan"))
            except (TypeError, ValueError):
                continue
            mine, theirs = (i, j) if side == "a" else (j, i)
            out[mine] = {"other": other, "feature": theirs, "cosine": round(c, 4)}
    return out


def _match_entry(a: str, b: str, sae_rel: str, by_rel: dict[str, str]) -> tuple[str, Any] | None:
    if not a and not b:
        return None

    def norm(p: str) -> str:
        p = p.replace("\\", "/").rstrip("/")
        return p.split("saes/", 1)[1] if "saes/" in p else p

    a, b = norm(a), norm(b)
    if a == sae_rel or a.endswith("/" + sae_rel):
        return "a", _lookup(b, by_rel)
    if b == sae_rel or b.endswith("/" + sae_rel):
        return "b", _lookup(a, by_rel)
    return "skip", None  # the entry names two other SAEs


def _lookup(p: str, by_rel: dict[str, str]) -> str | None:
    for rel, sid in by_rel.items():
        if p == rel or p.endswith("/" + rel):
            return sid
    return None
