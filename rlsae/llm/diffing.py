"""Where did tuning move the model? Per-token KL and logit-difference amplification (issue 14).

:func:`token_kl` runs a base and a tuned model (same tokenizer) over test documents and computes,
at every position, ``KL(p_tuned || p_base)`` of the two next-token distributions (the divergence
the RLHF penalty keeps small), the mean over all positions, and the positions where the two
differ most, each with its context, the token that actually follows and each model's most
likely next token.

:func:`amplify` samples completions of test prefixes from
``logits_tuned + α (logits_tuned − logits_base)`` (``α = 0``: the tuned model; ``α = −1``: the
base model; ``α > 0``: what the tuning pushed towards, exaggerated) and scores them with the
utility table, beside the tuned model's own completions (``α = 0``) of the same prefixes with
the same seed. The sampler is a plain loop over both models with their key/value caches (position ids skip
the left padding, as in :mod:`rlsae.llm.generate`), plain sampling (no top-k/top-p), one
completion per prefix, ending at EOS.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from rlsae.analysis.bootstrap import bootstrap_ci
from rlsae.artifacts import Artifact
from rlsae.configs import from_mapping, to_mapping
from rlsae.errors import RlsaeError
from rlsae.llm.causal_configs import AmplifyConfig, KLConfig
from rlsae.llm.data import check_fits_context, load_texts, make_prefixes
from rlsae.llm.generate import completion_mask, left_pad, position_ids
from rlsae.llm.models import load_model
from rlsae.llm.record import load_documents, tokenize_documents
from rlsae.llm.rewards import UtilityReward, UtilityRewardConfig, UtilityTable

__all__ = [
    "AmplifyResult",
    "KLPosition",
    "KLResult",
    "amplified_logits",
    "amplify",
    "sample_amplified",
    "token_kl",
]

CONTEXT_TOKENS = 8
"""Tokens of context shown before a listed position."""


@dataclass
class KLPosition:
    """One position where the base and tuned next-token distributions differ."""

    document: int
    """Document index (in the order read)."""
    position: int
    """Token position in the document (the distribution predicts position + 1)."""
    kl: float
    """KL(p_tuned || p_base) there (nats)."""
    context: str
    """The last few tokens up to and including this position."""
    next_token: str
    """The token that actually follows ('' at a document's end)."""
    base_top: str
    """The base model's most likely next token."""
    base_p: float
    """Its probability under the base model."""
    tuned_top: str
    """The tuned model's most likely next token."""
    tuned_p: float
    """Its probability under the tuned model."""


@dataclass
class KLResult(Artifact):
    """Per-token KL between a base and a tuned model (``llm kl --json``)."""

    FORMAT: ClassVar[str] = "rlsae.token_kl"
    VERSION: ClassVar[int] = 1

    mean_kl: float
    """Mean over every position of KL(p_tuned || p_base) (nats)."""
    max_kl: float
    """The largest per-position KL."""
    positions: int
    """Positions compared."""
    documents: int
    """Documents run."""
    top: list[KLPosition]
    """The positions with the largest KL, largest first."""
    base: str = ""
    """The base model."""
    tuned: str = ""
    """The tuned model."""
    config: KLConfig = field(default_factory=KLConfig)
    """Documents and batching."""
    seconds: float = 0.0
    """Wall time."""

    def summary(self, show: int = 10) -> str:
        """The readable lines ``llm kl`` prints."""
        lines = [
            f"mean KL(tuned || base) {self.mean_kl:.5g} nats over {self.positions} positions "
            f"of {self.documents} documents; max {self.max_kl:.5g}",
            f"{'KL':>8}  {'base top':>16}  {'tuned top':>16}  context",
        ]
        for p in self.top[:show]:
            base = f"{p.base_top!r} {p.base_p:.2f}"
            tuned = f"{p.tuned_top!r} {p.tuned_p:.2f}"
            lines.append(f"{p.kl:8.4f}  {base:>16}  {tuned:>16}  {p.context!r}")
        return "\n".join(lines)


def load_pair(base: str | os.PathLike, tuned: str | os.PathLike) -> tuple[Any, Any, Any]:
    """``(base_model, tuned_model, tokenizer)``; two models of different vocabularies: one line."""
    base_m, tok = load_model(base)
    tuned_m, tuned_tok = load_model(tuned)
    if tok.get_vocab() != tuned_tok.get_vocab():
        raise RlsaeError(
            "base and tuned models have different tokenizers; compare a tuned model with its base"
        )
    vb, vt = base_m.get_output_embeddings().weight.shape[0], tuned_m.get_output_embeddings()
    if vb != vt.weight.shape[0]:
        raise RlsaeError(f"base and tuned models have {vb} and {vt.weight.shape[0]} output tokens")
    return base_m, tuned_m, tok


@torch.no_grad()
def position_kls(
    base: Any, tuned: Any, token_lists: Sequence[Sequence[int]], batch_size: int = 16
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per document: ``(kl (T,), log p_base (T, V), log p_tuned (T, V))``, float64."""
    out = []
    for s in range(0, len(token_lists), batch_size):
        chunk = [list(t) for t in token_lists[s : s + batch_size]]
        ids, mask = left_pad(chunk, 0)
        pos = position_ids(mask)
        lp = {}
        for name, m in (("base", base), ("tuned", tuned)):
            logits = m(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
            lp[name] = torch.log_softmax(logits.logits.double(), dim=-1)
        kl = (lp["tuned"].exp() * (lp["tuned"] - lp["base"])).sum(-1)
        for row, t in enumerate(chunk):
            n = len(t)
            w = ids.shape[1]
            out.append((kl[row, w - n :], lp["base"][row, w - n :], lp["tuned"][row, w - n :]))
    return out


def token_kl(
    base: str | os.PathLike, tuned: str | os.PathLike, cfg: KLConfig | None = None
) -> KLResult:
    """Per-token KL between ``base`` and ``tuned`` on test documents (see the module doc)."""
    cfg = cfg or KLConfig()
    cfg.validate()
    t0 = time.time()
    base_m, tuned_m, tok = load_pair(base, tuned)
    docs = load_documents(cfg.data, cfg.prefixes, seed=cfg.seed, model=base)
    token_lists = [t for t in tokenize_documents(tok, docs, cfg.prefix_tokens) if t]
    if not token_lists:
        raise RlsaeError("every document tokenised to zero tokens; nothing to compare")
    per_doc = position_kls(base_m, tuned_m, token_lists, cfg.batch_size)
    flat = [(float(kl[p]), d, p) for d, (kl, _, _) in enumerate(per_doc) for p in range(len(kl))]
    total = sum(v for v, _, _ in flat)
    flat.sort(key=lambda x: -x[0])
    top = []
    for value, d, p in flat[: cfg.top]:
        ids = token_lists[d]
        _, lb, lt = per_doc[d]
        bt, tt = int(lb[p].argmax()), int(lt[p].argmax())
        top.append(
            KLPosition(
                document=d,
                position=p,
                kl=value,
                context=tok.decode(ids[max(0, p + 1 - CONTEXT_TOKENS) : p + 1]),
                next_token=tok.decode([ids[p + 1]]) if p + 1 < len(ids) else "",
                base_top=tok.decode([bt]),
                base_p=float(lb[p, bt].exp()),
                tuned_top=tok.decode([tt]),
                tuned_p=float(lt[p, tt].exp()),
            )
        )
    return KLResult(
        mean_kl=total / len(flat),
        max_kl=flat[0][0],
        positions=len(flat),
        documents=len(token_lists),
        top=top,
        base=os.fspath(base),
        tuned=os.fspath(tuned),
        config=from_mapping(KLConfig, to_mapping(cfg)),
        seconds=time.time() - t0,
    )


# ------------------------------------------------------------------------ amplification


@dataclass
class AmplifiedCompletion:
    """One prefix, its amplified completion and the tuned model's own (same seed)."""

    prefix: str
    """The prefix text."""
    amplified: str
    """Sampled from logits_tuned + alpha (logits_tuned - logits_base)."""
    tuned: str
    """Sampled from the tuned model (alpha 0)."""
    reward_amplified: float
    """Reward of prefix + amplified completion."""
    reward_tuned: float
    """Reward of prefix + tuned completion."""


@dataclass
class AmplifyResult(Artifact):
    """Completions from amplified logits, scored (``llm amplify --json``)."""

    FORMAT: ClassVar[str] = "rlsae.amplify"
    VERSION: ClassVar[int] = 1

    alpha: float
    """The amplification."""
    n: int
    """Prefixes completed."""
    mean_reward_amplified: float
    """Mean reward (equation 3 over prefix + completion) of the amplified completions."""
    mean_reward_tuned: float
    """The same for the tuned model's completions (alpha 0, same prefixes and seed)."""
    delta: float
    """mean_reward_amplified - mean_reward_tuned."""
    ci95: list[float]
    """95% paired bootstrap interval of delta."""
    utility_amplified: float
    """Σ over amplified completions (alone) of Σ U(word)."""
    utility_tuned: float
    """The same for the tuned completions."""
    base: str = ""
    """The base model."""
    tuned: str = ""
    """The tuned model."""
    config: AmplifyConfig = field(default_factory=AmplifyConfig)
    """Sampling and scoring."""
    seconds: float = 0.0
    """Wall time."""
    completions: list[AmplifiedCompletion] = field(default_factory=list)
    """Every prefix and both completions."""

    def summary(self, show: int = 3) -> str:
        """The readable lines ``llm amplify`` prints."""
        lines = [
            f"alpha {self.alpha:g}, {self.n} prefixes: mean reward amplified "
            f"{self.mean_reward_amplified:.4f}, tuned {self.mean_reward_tuned:.4f}, change "
            f"{self.delta:+.4f} [{self.ci95[0]:+.4f}, {self.ci95[1]:+.4f}]",
        ]
        for c in self.completions[:show]:
            lines += [f"  prefix:    {c.prefix}", f"  tuned:     {c.tuned}"]
            lines.append(f"  amplified: {c.amplified}")
        return "\n".join(lines)


def amplified_logits(tuned: torch.Tensor, base: torch.Tensor, alpha: float) -> torch.Tensor:
    """``tuned + alpha (tuned - base)`` in float32."""
    t = tuned.float()
    return t + alpha * (t - base.float())


@torch.no_grad()
def sample_amplified(
    base: Any,
    tuned: Any,
    eos_id: int | None,
    pad_id: int,
    prefix_ids: list[list[int]],
    max_new_tokens: int,
    alpha: float,
    seed: int,
    *,
    use_cache: bool = True,
) -> torch.Tensor:
    """Completion ids (B, max_new_tokens), right-padded with ``pad_id`` after the first EOS.
    ``use_cache``: feed each model only the new token with its key/value cache (the same
    logits as full forward passes, which ``use_cache=False`` runs)."""
    gen = torch.Generator().manual_seed(int(seed))
    ids, mask = left_pad(prefix_ids, pad_id)
    done = torch.zeros(len(prefix_ids), dtype=torch.bool)
    caches: dict[str, Any] = {"base": None, "tuned": None}
    step_ids = ids
    new = []
    for step in range(max_new_tokens):
        pos = position_ids(mask)[:, -step_ids.shape[1] :]
        last = {}
        for name, m in (("base", base), ("tuned", tuned)):
            kwargs = {_cache_arg(m): caches[name]} if caches[name] is not None else {}
            out = m(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=pos,
                use_cache=use_cache,
                **kwargs,
            )
            caches[name] = _cache_of(out) if use_cache else None
            last[name] = out.logits[:, -1]
        logits = amplified_logits(last["tuned"], last["base"], alpha)
        if step == 0 and eos_id is not None:  # at least one token, as sample_completions
            logits[:, eos_id] = -torch.inf
        nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        new.append(nxt)
        if eos_id is not None:
            done |= nxt == eos_id
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        step_ids = nxt[:, None] if use_cache else ids
        if bool(done.all()):
            break
    response = torch.stack(new, dim=1)
    if response.shape[1] < max_new_tokens:
        fill = torch.full((response.shape[0], max_new_tokens - response.shape[1]), pad_id)
        response = torch.cat([response, fill], dim=1)
    return response


def _cache_arg(model: Any) -> str:
    """The forward argument of the key/value cache: ``cache`` (transformers >= 5.2x) or
    ``past_key_values`` (before)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(out: Any) -> Any:
    cache = out.get("cache")
    return cache if cache is not None else out.get("past_key_values")


def _decode(tok: Any, response: torch.Tensor) -> list[str]:
    keep = completion_mask(response, tok.eos_token_id).bool()
    rows = zip(response, keep, strict=True)
    return [tok.decode(r[m].tolist(), skip_special_tokens=True) for r, m in rows]


def amplify(
    base: str | os.PathLike, tuned: str | os.PathLike, cfg: AmplifyConfig | None = None
) -> AmplifyResult:
    """Sample from amplified logits and score (see the module doc)."""
    cfg = cfg or AmplifyConfig()
    cfg.validate()
    t0 = time.time()
    table = UtilityTable.load(cfg.table)
    base_m, tuned_m, tok = load_pair(base, tuned)
    check_fits_context(tuned_m, cfg.prefix_tokens, cfg.max_new_tokens)
    texts = load_texts(cfg.data, "test", model=base)
    prefix_ids = make_prefixes(texts, tok, cfg.prefixes, cfg.prefix_tokens, seed=cfg.seed)
    prefixes = [tok.decode(p, skip_special_tokens=True) for p in prefix_ids]
    runs = {}
    for name, a in (("amplified", cfg.alpha), ("tuned", 0.0)):
        resp = sample_amplified(
            base_m,
            tuned_m,
            tok.eos_token_id,
            tok.pad_token_id,
            prefix_ids,
            cfg.max_new_tokens,
            a,
            cfg.seed,
        )
        runs[name] = _decode(tok, resp)
    reward = UtilityReward(UtilityRewardConfig(table=cfg.table), table)
    r_amp, r_tuned = reward(prefixes, runs["amplified"]), reward(prefixes, runs["tuned"])
    diffs = np.asarray(r_amp, dtype=np.float64) - np.asarray(r_tuned, dtype=np.float64)
    return AmplifyResult(
        alpha=float(cfg.alpha),
        n=len(prefixes),
        mean_reward_amplified=float(np.mean(r_amp)),
        mean_reward_tuned=float(np.mean(r_tuned)),
        delta=float(diffs.mean()),
        ci95=bootstrap_ci(diffs, 1000, cfg.seed),
        utility_amplified=float(sum(table.utility(c) for c in runs["amplified"])),
        utility_tuned=float(sum(table.utility(c) for c in runs["tuned"])),
        base=os.fspath(base),
        tuned=os.fspath(tuned),
        config=from_mapping(AmplifyConfig, to_mapping(cfg)),
        seconds=time.time() - t0,
        completions=[
            AmplifiedCompletion(p, a, t, ra, rt)
            for p, a, t, ra, rt in zip(
                prefixes, runs["amplified"], runs["tuned"], r_amp, r_tuned, strict=True
            )
        ],
    )
