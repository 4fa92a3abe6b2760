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
    docs_l = docs.tolist() if docs is not None else None
    wanted: list[tuple[int, int]] = []
    for f in range(scan.top_rows.shape[0]):
        rs = scan.top_rows[f][scan.top_rows[f] >= 0].tolist()
        rs += scan.interval_rows[f][scan.interval_rows[f] >= 0].ravel().tolist()
        wanted.extend((f, r) for r in dict.fromkeys(rs))
    pair_rows: list[int] = []
    pair_feats: list[int] = []
    windows = []
    for f, r in wanted:
        lo, hi = max(0, r - before), min(rows_total, r + after + 1)
        if docs_l is None:
            win = list(range(lo, hi))
        else:  # stay inside the document
            d = docs_l[r]
            win = [j for j in range(lo, hi) if docs_l[j] == d]
        windows.append((f, r, win))
        pair_rows.extend(win)
        pair_feats.extend([f] * len(win))
    feats = np.array(pair_feats, dtype=np.int64)
    vals = gather_activations(sae, store, np.array(pair_rows), feats, batch_size)
    vals_l = round_relative(vals, scan.max_act[feats] if len(feats) else vals).tolist()
    out: dict[tuple[int, int], list[list[Any]]] = {}
    n_tok = len(tokens)
    k = 0
    for f, r, win in windows:
        out[(f, r)] = [
            [tokens[j] if j < n_tok else "?", vals_l[k + i], 1 if j == r else 0]
            for i, j in enumerate(win)
        ]
        k += len(win)
    return out


def round_relative(vals: np.ndarray, scale: np.ndarray, digits: int = 4) -> np.ndarray:
    """``vals`` rounded to ``digits`` significant digits of ``scale`` (e.g. the feature's max),
    vectorised. Dividing the rounded integer by a power of ten is correctly rounded, so each
    value prints as its short decimal in JSON."""
    vals = np.asarray(vals, dtype=np.float64)
    scale = np.abs(np.asarray(scale, dtype=np.float64))
    ok = scale > 0
    dec = np.where(ok, digits - 1 - np.floor(np.log10(np.where(ok, scale, 1.0))), digits)
    p = 10.0 ** np.abs(dec)
    return np.where(dec >= 0, np.round(vals * p) / p, np.round(vals / p) * p)


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
            text = tokenizer.decode([i]) if tokenizer is not None else str(i)
            if "\ufffd" in text:  # part of a multi-byte character: show the BPE piece
                text = str(tokenizer.convert_ids_to_tokens(i))
            cache[i] = text
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
) -> dict[int, list[dict[str, Any]]]:
    """Features of one SAE that ``analysis/llm_shared_features.json`` pairs with another SAE.

    Every list of ``{feature, match, cosine}`` in the file belongs to an entry whose ``sae_a`` and
    ``sae_b`` name the two SAEs (the pipeline writes small-vs-large per model and
    ``base_vs_tuned``); an entry without paths is matched by hook, base model as side A. Returns
    {feature: [{"other": viewer id or None, "other_name", "feature": j, "cosine": c, "kind"}]}.
    """
    out: dict[int, list[dict[str, Any]]] = {}
    if shared is None:
        return out
    seen: set[tuple[int, Any, int]] = set()
    for path, pairs in _pair_lists(shared):
        entry: Any = shared
        for k in path[:-1]:
            entry = entry[int(k)] if isinstance(entry, list) else entry[k]
        entry = entry if isinstance(entry, dict) else {}
        a = str(entry.get("sae_a") or "")
        b = str(entry.get("sae_b") or "")
        ids = _match_entry(a, b, sae_rel, by_rel)
        if ids is None:  # no paths: decide by hook
            if str(entry.get("hook", "")) != hook or source not in ("base", "tuned"):
                continue
            side = "a" if source == "base" else "b"
            other_rel = sae_rel.replace(source, "tuned" if source == "base" else "base", 1)
            ids = (side, by_rel.get(other_rel), other_rel)
        side, other, other_name = ids
        if side == "skip":
            continue
        kind = "/".join(k for k in path[:-1] if not k.isdigit()) or "shared"
        kind = kind.removeprefix("layers/")
        for d in pairs:
            try:
                i, j, c = int(d["feature"]), int(d["match"]), float(d.get("cosine", "nan"))
            except (TypeError, ValueError, KeyError):
                continue
            mine, theirs = (i, j) if side == "a" else (j, i)
            if (mine, other_name, theirs) in seen:
                continue
            seen.add((mine, other_name, theirs))
            out.setdefault(mine, []).append(
                {
                    "other": other,
                    "other_name": other_name,
                    "feature": theirs,
                    "cosine": _sig(c) if c == c else None,
                    "kind": kind,
                }
            )
    return out


def _match_entry(
    a: str, b: str, sae_rel: str, by_rel: dict[str, str]
) -> tuple[str, Any, str] | None:
    if not a and not b:
        return None

    def norm(p: str) -> str:
        p = p.replace("\\", "/").rstrip("/")
        return p.split("saes/", 1)[1] if "saes/" in p else p

    a, b = norm(a), norm(b)
    if a == sae_rel or a.endswith("/" + sae_rel):
        return "a", _lookup(b, by_rel), b
    if b == sae_rel or b.endswith("/" + sae_rel):
        return "b", _lookup(a, by_rel), a
    return "skip", None, ""  # the entry names two other SAEs


def _lookup(p: str, by_rel: dict[str, str]) -> str | None:
    for rel, sid in by_rel.items():
        if p == rel or p.endswith("/" + rel):
            return sid
    return None
