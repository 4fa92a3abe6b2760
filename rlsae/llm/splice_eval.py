"""Splice faithfulness: how much of a language model survives when an SAE replaces its hook.

For an SAE trained on a hook of a language model (``cfg.json``'s ``hook_name``, e.g.
``blocks.3.hook_resid_post``) and some test documents, the model is run three times through
TransformerLens (:func:`rlsae.llm.record.load_hooked_model`, weights exactly the Hugging Face
model's):

* unchanged (``ce_orig``);
* with the hook's activation replaced by the SAE's reconstruction ``decode(encode(x))`` at every
  position (``ce_sae``);
* with the hook's activation set to zero (``ce_zero``);

and reports the mean next-token cross-entropy of each, the CE loss recovered
``(ce_zero - ce_sae) / (ce_zero - ce_orig)`` (1: the splice loses nothing, 0: it is as bad as
deleting the hook), and the mean KL divergence ``KL(p_orig || p_spliced)`` of the next-token
distributions (and of the zero-ablated one, with the KL score ``1 - kl_sae / kl_zero``). These
are the figures SAELens's ``evals.get_recons_loss`` and SAEBench report, computed the same way:
CE over every position that has a next token, KL over every position, each the mean over all
tokens of all documents (documents of different lengths are right-padded; under causal attention
a real position never sees the padding, which is left out of every mean).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from rlsae.artifacts import Artifact
from rlsae.configs import from_mapping, to_mapping
from rlsae.errors import RlsaeError
from rlsae.llm.causal_configs import SpliceEvalConfig
from rlsae.llm.record import (
    _hook_width,
    load_documents,
    load_hooked_model,
    tokenize_documents,
)
from rlsae.sae.model import SAE, load_sae

__all__ = [
    "SpliceEval",
    "SpliceEvalConfig",
    "check_sae_hook",
    "hooked_model",
    "splice_faithfulness",
    "splice_losses",
]


@dataclass
class SpliceEval(Artifact):
    """Splice faithfulness of one SAE on one model (``sae eval --model --json``)."""

    FORMAT: ClassVar[str] = "rlsae.splice_eval"
    VERSION: ClassVar[int] = 1

    hook: str
    """The TransformerLens hook the SAE replaces."""
    documents: int
    """Documents run through the model."""
    tokens: int
    """Next-token predictions in the CE means (positions with a next token)."""
    positions: int
    """Positions in the KL means (every real position)."""
    ce_orig: float
    """Mean next-token cross-entropy of the unchanged model (nats)."""
    ce_sae: float
    """The same with the SAE's reconstruction spliced in at the hook."""
    ce_zero: float
    """The same with the hook zero-ablated."""
    ce_recovered: float | None
    """(ce_zero - ce_sae) / (ce_zero - ce_orig); None where zero-ablation changes nothing."""
    kl_sae: float
    """Mean KL(p_orig || p_sae) of the next-token distributions (nats)."""
    kl_zero: float
    """Mean KL(p_orig || p_zero)."""
    kl_recovered: float | None
    """1 - kl_sae / kl_zero (SAELens's kl_div_score); None where kl_zero is 0."""
    model: str = ""
    """The model (hub name or directory)."""
    sae: str = ""
    """The SAE directory."""
    d_sae: int = 0
    """The SAE's width."""
    config: SpliceEvalConfig = field(default_factory=SpliceEvalConfig)
    """The documents and batching used."""
    seconds: float = 0.0
    """Wall time."""

    def summary(self) -> str:
        """The readable lines ``sae eval --model`` prints."""
        rec = "n/a" if self.ce_recovered is None else f"{100 * self.ce_recovered:.2f}%"
        return "\n".join(
            [
                f"hook {self.hook}: {self.documents} documents, {self.tokens} predicted tokens",
                f"CE loss  original {self.ce_orig:.5f}  spliced {self.ce_sae:.5f}  "
                f"zero-ablated {self.ce_zero:.5f}",
                f"CE loss recovered {rec}",
                f"KL(orig || spliced) {self.kl_sae:.5g}   KL(orig || zero-ablated) "
                f"{self.kl_zero:.5g}",
            ]
        )


def hooked_model(model: Any, *, tokenizer: Any = None, device: str = "cpu") -> tuple[Any, Any, str]:
    """``(HookedTransformer, tokenizer, name)``: ``model`` may already be a HookedTransformer
    (then ``tokenizer`` defaults to its own), else see :func:`load_hooked_model`."""
    if hasattr(model, "run_with_hooks"):
        name = str(getattr(model.cfg, "model_name", "") or type(model).__name__)
        return model, tokenizer if tokenizer is not None else model.tokenizer, name
    return load_hooked_model(model, tokenizer=tokenizer, device=device)


def check_sae_hook(ht: Any, sae: SAE, where: str = "") -> str:
    """The SAE's hook name, after checking the model has it at the SAE's width (one line)."""
    pre = f"{where}: " if where else ""
    hook = sae.cfg.hook_name
    if not hook:
        raise RlsaeError(f"{pre}the SAE records no hook_name; it was not trained on a model hook")
    if hook not in ht.hook_dict:
        n = ht.cfg.n_layers
        raise RlsaeError(
            f"{pre}the SAE was trained on hook {hook!r}, which this model does not have "
            f"(blocks 0..{n - 1}); an SAE for another model or layer"
        )
    width = _hook_width(ht, hook)
    if width != sae.cfg.d_in:
        raise RlsaeError(
            f"{pre}the SAE reads d_in={sae.cfg.d_in} but {hook} of this model is {width} wide; "
            "an SAE for another model"
        )
    return hook


def _batches(
    token_lists: Sequence[Sequence[int]], batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded ``(tokens (B, T), lengths (B,))`` batches of the non-empty documents."""
    docs = [list(t) for t in token_lists if len(t) > 0]
    for s in range(0, len(docs), batch_size):
        chunk = docs[s : s + batch_size]
        lens = torch.tensor([len(t) for t in chunk])
        tokens = torch.zeros((len(chunk), int(lens.max())), dtype=torch.long)
        for row, t in enumerate(chunk):
            tokens[row, : len(t)] = torch.tensor(t, dtype=torch.long)
        yield tokens, lens


@dataclass
class SpliceTotals:
    """Sums over the documents (float64), from which :class:`SpliceEval`'s means come."""

    ce: dict[str, float] = field(default_factory=lambda: {"orig": 0.0, "sae": 0.0, "zero": 0.0})
    kl: dict[str, float] = field(default_factory=lambda: {"sae": 0.0, "zero": 0.0})
    tokens: int = 0
    positions: int = 0
    documents: int = 0


def _replace_with(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A TransformerLens hook that replaces the (B, T, ...) activation by ``fn`` of its
    (B, T, d) flattening (heads of ``hook_z`` and the like flattened as SAELens does)."""

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001 - TL's signature
        flat = act.reshape(*act.shape[:2], -1)
        return fn(flat).to(act.dtype).reshape(act.shape)

    return hook


@torch.no_grad()
def splice_losses(
    ht: Any,
    hook: str,
    sae: SAE,
    token_lists: Sequence[Sequence[int]],
    batch_size: int = 16,
) -> SpliceTotals:
    """CE and KL sums of the unchanged, spliced and zero-ablated model over the documents."""
    splice = _replace_with(lambda x: sae.decode(sae.encode(x)))
    zero = _replace_with(torch.zeros_like)
    tot = SpliceTotals()
    device = ht.cfg.device
    for tokens, lens in _batches(token_lists, batch_size):
        tokens = tokens.to(device)
        pos = torch.arange(tokens.shape[1])
        real = (pos[None, :] < lens[:, None]).to(device)  # (B, T) real positions
        has_next = (pos[None, :] + 1 < lens[:, None]).to(device)[:, :-1]  # (B, T-1)
        logits = {
            "orig": ht(tokens, return_type="logits"),
            "sae": ht.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(hook, splice)]),
            "zero": ht.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(hook, zero)]),
        }
        logp = {k: torch.log_softmax(v.double(), dim=-1) for k, v in logits.items()}
        target = tokens[:, 1:].unsqueeze(-1)
        for k, lp in logp.items():
            nll = -lp[:, :-1].gather(-1, target).squeeze(-1)
            tot.ce[k] += float(nll[has_next].sum())
        p_orig = logp["orig"].exp()
        for k in ("sae", "zero"):
            kl = (p_orig * (logp["orig"] - logp[k])).sum(-1)
            tot.kl[k] += float(kl[real].sum())
        tot.tokens += int(has_next.sum())
        tot.positions += int(real.sum())
        tot.documents += tokens.shape[0]
    return tot


def splice_faithfulness(
    model: Any,
    sae: SAE | str | os.PathLike,
    cfg: SpliceEvalConfig | None = None,
    *,
    tokenizer: Any = None,
    token_lists: Sequence[Sequence[int]] | None = None,
    device: str = "cpu",
) -> SpliceEval:
    """Splice faithfulness of ``sae`` on ``model`` (see the module doc).

    ``model`` is a hub name, a model directory, an in-memory HF model (with ``tokenizer``) or a
    HookedTransformer; ``sae`` an SAE or its directory. The documents are ``cfg.prefixes`` test
    documents cut to ``cfg.prefix_tokens`` tokens, or the given ``token_lists``. An SAE whose hook
    the model lacks or whose width differs is refused in one line.
    """
    cfg = cfg or SpliceEvalConfig()
    cfg.validate()
    t0 = time.time()
    sae_path = ""
    if not isinstance(sae, SAE):
        sae_path = os.fspath(sae)
        sae = load_sae(sae, device=device)
    ht, tokenizer, name = hooked_model(model, tokenizer=tokenizer, device=device)
    hook = check_sae_hook(ht, sae)
    if token_lists is None:
        docs = load_documents(
            cfg.data,
            cfg.prefixes,
            seed=cfg.seed,
            model=model if isinstance(model, str | os.PathLike) else None,
        )
        token_lists = tokenize_documents(tokenizer, docs, cfg.prefix_tokens)
    if not any(len(t) > 1 for t in token_lists):
        raise RlsaeError("no document has two tokens or more; nothing to predict")
    tot = splice_losses(ht, hook, sae, token_lists, cfg.batch_size)
    ce = {k: v / tot.tokens for k, v in tot.ce.items()}
    kl = {k: v / tot.positions for k, v in tot.kl.items()}
    gap = ce["zero"] - ce["orig"]
    return SpliceEval(
        hook=hook,
        documents=tot.documents,
        tokens=tot.tokens,
        positions=tot.positions,
        ce_orig=ce["orig"],
        ce_sae=ce["sae"],
        ce_zero=ce["zero"],
        ce_recovered=(ce["zero"] - ce["sae"]) / gap if gap != 0 else None,
        kl_sae=kl["sae"],
        kl_zero=kl["zero"],
        kl_recovered=1.0 - kl["sae"] / kl["zero"] if kl["zero"] > 0 else None,
        model=name if not isinstance(model, str | os.PathLike) else os.fspath(model),
        sae=str(Path(sae_path)) if sae_path else "",
        d_sae=sae.cfg.d_sae,
        config=from_mapping(SpliceEvalConfig, to_mapping(cfg)),
        seconds=time.time() - t0,
    )
