"""The viewer's pages of language-model stores: token contexts, logit effects, explanations.

Implements :class:`rlsae.viewer.source.ViewerSource` for activation stores recorded from a
language model (``provider: lm``): the tokens around each top and interval-sampled context with
the feature's activation on each, the tokens whose logits the feature's decoder direction
raises and lowers (through the model's unembedding, when the model is found), and the
explanations in ``explanations.json`` beside the SAE. Use::

    from rlsae.llm.viewer_source import viewer_source
    export_site(run_dir, sources=[viewer_source()])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlsae.errors import RlsaeError
from rlsae.llm.explain import EXPLANATIONS, Explanations
from rlsae.llm.scoring import scorer_label
from rlsae.viewer.source import (
    Explanation,
    FeatureExtras,
    LogitEffects,
    StoreClaim,
    StorePages,
    StoreView,
    TokenContext,
    first_line,
    sig,
)


class LMViewerSource:
    """Feature pages of activation stores recorded from a language model (``rlsae llm record``)."""

    def claim(self, store: Any) -> StoreClaim | None:
        if store.provider != "lm":
            return None
        return StoreClaim(kind="lm", group_column="document", intervals=True)

    def pages(self, view: StoreView) -> StorePages:
        out = StorePages()
        model, tok = _model(view, out.notes)
        docs, positions = view.column("document"), view.column("position")
        contexts = build_contexts(view, token_texts(view.context, tok))
        for (f, r), toks in contexts.items():
            out.rows[(f, r)] = TokenContext(
                tokens=toks,
                doc=int(docs[r]) if docs is not None else None,
                pos=int(positions[r]) if positions is not None else None,
            )
        _add_logits(view, model, tok, out)
        expl = read_explanations(view.sae_dir, out.notes)
        for f, e in expl.items():
            if 0 <= f < view.d_sae:
                extras = out.features.setdefault(f, FeatureExtras())
                extras.explanation = e
                extras.label = e.explanation[:120]
        out.explained = len(expl)
        return out


def viewer_source() -> LMViewerSource:
    """The language models' viewer source, for ``export_site(..., sources=[...])``."""
    return LMViewerSource()


# ----------------------------------------------------------------------------- the model


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


def _model(view: StoreView, notes: list[str]) -> tuple[Any, Any]:
    """(model, tokenizer) behind the store, or (None, None) with a note saying why."""
    ref = find_model_dir(view.run_dir, view.store.source, view.store.extra)
    if ref is None:
        notes.append("no model recorded for this store; no promoted/suppressed tokens")
        return None, None
    try:
        from transformers.utils import logging as hf_logging

        from rlsae.llm.models import load_model

        bars = hf_logging.is_progress_bar_enabled()
        if not view.progress:
            hf_logging.disable_progress_bar()
        try:
            return load_model(ref)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
    except (RlsaeError, ImportError, OSError) as e:
        notes.append(f"model {ref} unavailable ({first_line(e)}); no promoted/suppressed tokens")
        return None, None


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


def _add_logits(view: StoreView, model: Any, tok: Any, out: StorePages) -> None:
    """Promoted/suppressed tokens of every feature, when the unembedding fits the SAE."""
    w_u = unembedding(model) if model is not None else None
    if w_u is None:
        return
    d_in = int(view.sae.cfg.d_in)
    if w_u.shape[1] != d_in:
        out.notes.append(f"unembedding width {w_u.shape[1]} != SAE d_in {d_in}; no logit effects")
        return
    for f, lg in enumerate(logit_effects(view.sae.W_dec, w_u, tok, view.config.logit_tokens)):
        out.features.setdefault(f, FeatureExtras()).logits = lg
    out.unembedding = True


@torch.no_grad()
def logit_effects(
    w_dec: torch.Tensor, w_u: torch.Tensor, tokenizer: Any, n: int, chunk: int = 1024
) -> list[LogitEffects]:
    """Per feature, the ``n`` tokens whose logits its decoder direction raises most (promoted)
    and lowers most (suppressed): ``W_dec[f] @ W_U^T``, without the final layer norm."""
    w_dec = w_dec.detach().float()
    n = min(n, w_u.shape[0])
    out: list[LogitEffects] = []
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
                LogitEffects(
                    promoted=[(tok(int(i)), sig(v)) for v, i in zip(pv[a], pi[a], strict=True)],
                    suppressed=[(tok(int(i)), sig(v)) for v, i in zip(sv[a], si[a], strict=True)],
                )
            )
    return out


# ----------------------------------------------------------------------------- contexts


def token_texts(ctx: Any, tokenizer: Any | None) -> list[str]:
    """One display string per store row: the ``token`` column, else the decoded ``token_id``."""
    if ctx is not None and "token" in ctx.columns:
        return [str(t) for t in ctx["token"].tolist()]
    if ctx is not None and "token_id" in ctx.columns and tokenizer is not None:
        return [tokenizer.decode([int(i)]) for i in ctx["token_id"].tolist()]
    n = 0 if ctx is None else len(ctx)
    return ["?"] * n


def build_contexts(
    view: StoreView, tokens: list[str]
) -> dict[tuple[int, int], list[tuple[str, float, int]]]:
    """For every top and interval-sample row of every feature, the window of tokens around it
    (inside its document) with the feature's activation on each:
    {(feature, row): [(token, activation, 1 if the row itself else 0)]}."""
    cfg = view.config
    docs = view.column("document")
    docs_l = docs.astype(np.int64).tolist() if docs is not None else None
    windows: list[tuple[int, int, list[int]]] = []
    pair_rows: list[int] = []
    pair_feats: list[int] = []
    for f in range(view.d_sae):
        for r in dict.fromkeys(view.top_rows(f) + view.sample_rows(f)):
            lo, hi = max(0, r - cfg.context_before), min(view.scan.rows, r + cfg.context_after + 1)
            if docs_l is None:
                win = list(range(lo, hi))
            else:  # stay inside the document
                win = [j for j in range(lo, hi) if docs_l[j] == docs_l[r]]
            windows.append((f, r, win))
            pair_rows.extend(win)
            pair_feats.extend([f] * len(win))
    feats = np.array(pair_feats, dtype=np.int64)
    vals = view.activations(np.array(pair_rows, dtype=np.int64), feats)
    vals_l = round_relative(vals, view.scan.max_act[feats] if len(feats) else vals).tolist()
    out: dict[tuple[int, int], list[tuple[str, float, int]]] = {}
    n_tok = len(tokens)
    k = 0
    for f, r, win in windows:
        out[(f, r)] = [
            (tokens[j] if j < n_tok else "?", vals_l[k + i], 1 if j == r else 0)
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


# ----------------------------------------------------------------------------- explanations


def read_explanations(sae_dir: Path, notes: list[str]) -> dict[int, Explanation]:
    """The :class:`~rlsae.llm.explain.Explanations` beside an SAE as {feature: Explanation}:
    none if there is no file, none and a note if it cannot be read."""
    path = sae_dir / EXPLANATIONS
    if not path.is_file():
        return {}
    try:
        expl = Explanations.read(path)
    except RlsaeError as e:
        notes.append(f"{first_line(e)}; no explanations")
        return {}
    out = {}
    for key, fe in expl.features.items():
        if key.isdigit():
            sc = fe.scores
            out[int(key)] = Explanation(
                fe.explanation,
                utility=fe.utility,
                method=fe.method,
                scorer=None if sc is None else scorer_label(sc.scorer),
                detection=None if sc is None else sc.detection,
                fuzzing=None if sc is None else sc.fuzzing,
                simulation=None if sc is None else sc.simulation,
            )
    return out
