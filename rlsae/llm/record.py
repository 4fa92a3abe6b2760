"""Record a language model's activations through TransformerLens into activation stores.

The model (hub name or local directory) is loaded with Hugging Face ``transformers`` through
:func:`rlsae.llm.models.load_model`, then converted into a ``HookedTransformer`` without
TransformerLens touching the hub: the config is built by TransformerLens from the model's own
``config.json`` (written to a private temporary directory, so hub names and local directories
take the same path), and the weights are converted from the loaded model. No weight processing
is applied (``fold_ln``, centring and value-bias folding are all off), so ``hook_resid_post`` of
block ``L`` equals Hugging Face's ``hidden_states[L + 1]`` (before the final layer norm for the
last block).

Each document is cut to its first ``prefix_tokens`` tokens; documents are batched with right
padding (no attention mask is needed: under causal attention a real position only sees earlier,
real positions) and only real positions are stored. One store per layer,
at ``out_dir/blocks.L.hook_NAME``, with context columns ``document, position, token_id, token``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from rlsae.configs import from_mapping, to_mapping
from rlsae.errors import RlsaeError
from rlsae.llm.configs import LMRecordConfig, parse_layers
from rlsae.llm.data import load_texts
from rlsae.llm.models import load_model
from rlsae.sae.store import ActivationWriter

# ----------------------------------------------------------------------------- loading


def load_hooked_model(
    model: Any, *, tokenizer: Any = None, device: str = "cpu"
) -> tuple[Any, Any, str]:
    """``(HookedTransformer, tokenizer, model_name)`` for a hub name, a directory or an HF model.

    The HookedTransformer's weights are exactly the Hugging Face model's (no folding/centring).
    """
    if isinstance(model, str | os.PathLike):
        name = os.fspath(model)
        if Path(name).expanduser().is_dir():
            name = str(Path(name).expanduser().resolve())
        hf_model, tokenizer = load_model(model, device="cpu")
    else:
        if tokenizer is None:
            raise RlsaeError("pass the tokenizer together with an in-memory model")
        hf_model = model
        name = str(getattr(hf_model.config, "_name_or_path", "") or type(model).__name__)
    return _to_hooked(hf_model, tokenizer, device), tokenizer, name


def _to_hooked(hf_model: Any, tokenizer: Any, device: str) -> Any:
    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer

    hf_model = hf_model.float()
    with tempfile.TemporaryDirectory(prefix="rlsae-tl-") as tmp:
        cfg_dir = Path(tmp) / "model"
        hf_model.config.save_pretrained(cfg_dir)
        try:
            with _quiet():
                cfg = loading.get_pretrained_model_config(
                    str(cfg_dir),
                    hf_cfg=hf_model.config.to_dict(),
                    fold_ln=False,
                    device=device,
                    dtype=torch.float32,
                )
                state_dict = loading.get_pretrained_state_dict(str(cfg_dir), cfg, hf_model)
        except (ValueError, NotImplementedError, KeyError, AttributeError) as e:
            arch = (getattr(hf_model.config, "architectures", None) or ["?"])[0]
            raise RlsaeError(
                f"TransformerLens cannot convert a {arch} model ({str(e).splitlines()[0][:120]})"
            ) from None
    # Right padding, no attention mask: causal attention keeps real positions of right-padded
    # rows exact, and TransformerLens only builds a mask when the tokenizer pads on the left.
    tl_tokenizer = copy.deepcopy(tokenizer)
    tl_tokenizer.padding_side = "right"
    with _quiet():
        ht = HookedTransformer(cfg, tl_tokenizer, move_to_device=False)
        ht.load_and_process_state_dict(
            state_dict,
            fold_ln=False,
            center_writing_weights=False,
            center_unembed=False,
            fold_value_biases=False,
            refactor_factored_attn_matrices=False,
        )
    ht.to(device, print_details=False)
    ht.eval()
    return ht


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence TransformerLens' deprecation notices and logging; its prints go to stderr."""
    import logging
    import sys

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.getLogger().setLevel(level)


# ----------------------------------------------------------------------------- hooks


def valid_hooks(ht: Any) -> list[str]:
    """Short hook names available in every block (``resid_post``, ``mlp.hook_post``, ...)."""
    names = []
    for full in ht.hook_dict:
        if full.startswith("blocks.0."):
            rest = full[len("blocks.0.") :]
            names.append(rest[len("hook_") :] if rest.startswith("hook_") else rest)
    return sorted(names)


def hook_point(ht: Any, layer: int, hook: str) -> str:
    """The full TransformerLens hook name for ``hook`` in block ``layer``; RlsaeError if none."""
    n = ht.cfg.n_layers
    if not isinstance(layer, int) or not 0 <= layer < n:
        raise RlsaeError(f"layer {layer} does not exist; valid layers are 0..{n - 1}")
    hook = hook.strip()
    if hook.startswith("blocks."):
        parts = hook.split(".", 2)
        hook = parts[2] if len(parts) == 3 else hook
    candidates = [f"blocks.{layer}.hook_{hook}", f"blocks.{layer}.{hook}"]
    for c in candidates:
        if c in ht.hook_dict:
            return c
    raise RlsaeError(f"hook {hook!r} does not exist; valid hooks: {', '.join(valid_hooks(ht))}")


# ----------------------------------------------------------------------------- documents


def load_documents(
    data: str | os.PathLike | None,
    n: int,
    *,
    seed: int = 0,
    model: str | os.PathLike | None = None,
) -> list[str]:
    """``n`` test documents through :func:`rlsae.llm.data.load_texts`.

    ``data`` None means ``auto``: the tiny model's ``corpus_test.txt`` when ``model`` is such a
    directory, else the IMDb test split (shuffled with ``seed``). A .txt file (one document per
    line) or .jsonl file (``text`` field) is read in order.
    """
    if n < 1:
        raise RlsaeError("the number of documents (--prefixes) must be at least 1")
    src = "auto" if data is None else os.fspath(data)
    local_model = model if model is not None and Path(os.fspath(model)).is_dir() else None
    texts = load_texts(src, "test", model=local_model)
    texts = [t.replace("<br />", " ").strip() for t in texts]
    texts = [t for t in texts if t]
    if not texts:
        raise RlsaeError(f"{src} holds no documents")
    if src == "imdb" or (src == "auto" and local_model is None):
        import random

        order = list(range(len(texts)))
        random.Random(seed).shuffle(order)
        texts = [texts[i] for i in order]
    return texts[:n]


def tokenize_documents(tokenizer: Any, docs: Sequence[str], prefix_tokens: int) -> list[list[int]]:
    """Token ids of each document's first ``prefix_tokens`` tokens (empty documents dropped)."""
    if prefix_tokens < 1:
        raise RlsaeError("prefix_tokens must be at least 1")
    enc = tokenizer(list(docs), add_special_tokens=False, truncation=False)["input_ids"]
    return [list(ids[:prefix_tokens]) for ids in enc]


# ----------------------------------------------------------------------------- recording


def iter_hook_activations(
    ht: Any, token_lists: Sequence[Sequence[int]], names: Sequence[str], batch_size: int
) -> Iterator[tuple[list[int], dict[str, list[torch.Tensor]]]]:
    """Yield ``(doc_indices, {hook_name: [per-doc (len, d) tensors]})`` batch by batch."""
    layers = [int(n.split(".")[1]) for n in names]
    stop_at = max(layers) + 1  # n_layers for the last block: no final LN, no unembedding
    wanted = set(names)
    device = ht.cfg.device
    order = [i for i, t in enumerate(token_lists) if len(t) > 0]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        lens = [len(token_lists[i]) for i in idx]
        width = max(lens)
        tokens = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            tokens[row, : lens[row]] = torch.tensor(token_lists[i])
        with torch.inference_mode():
            # right padding needs no mask: a real position only attends to earlier positions
            _, cache = ht.run_with_cache(
                tokens.to(device),
                names_filter=lambda name: name in wanted,
                stop_at_layer=stop_at,
                return_type=None,
            )
        out = {}
        for name in names:
            act = cache[name]
            act = act.reshape(act.shape[0], act.shape[1], -1).float().cpu()
            out[name] = [act[row, : lens[row]] for row in range(len(idx))]
        yield idx, out


def record_lm_activations(
    model: Any,
    layers: str | Sequence[int],
    out_dir: str | os.PathLike,
    cfg: LMRecordConfig | None = None,
    *,
    source: str | None = None,
    device: str = "cpu",
    tokenizer: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    **options: Any,
) -> list[Path]:
    """Record ``cfg.hook`` of each layer in ``layers`` into ``out_dir/blocks.L.hook_NAME``.

    ``model`` is a hub name, a model directory, or an in-memory HF model (with ``tokenizer``).
    ``options`` are :class:`LMRecordConfig` fields overriding ``cfg`` (``hook=``,
    ``prefixes=``, ...). Returns the store paths in the order of ``layers``. Every store is
    written atomically (all or none: a failure leaves none of them); a store that already exists
    raises unless ``overwrite``.
    """
    from tqdm.auto import tqdm

    base = to_mapping(cfg) if cfg is not None else {}
    if options.get("data") is not None:
        options["data"] = os.fspath(options["data"])
    cfg = from_mapping(LMRecordConfig, {**base, **options}, "record options")
    layer_list = parse_layers(layers)
    ht, tokenizer, name = load_hooked_model(model, tokenizer=tokenizer, device=device)
    names = [hook_point(ht, layer, cfg.hook) for layer in layer_list]
    paths = [Path(out_dir) / n for n in names]
    if not overwrite:
        for p in paths:
            if p.exists():
                raise RlsaeError(f"{p} already exists; remove it or choose another --out")
    docs = load_documents(
        cfg.data,
        cfg.prefixes,
        seed=cfg.seed,
        model=model if isinstance(model, str | os.PathLike) else None,
    )
    token_lists = tokenize_documents(tokenizer, docs, cfg.prefix_tokens)
    if not any(token_lists):
        raise RlsaeError("every document tokenised to zero tokens; nothing to record")
    vocab_text = _TokenText(tokenizer)
    src = source or Path(name).name
    # ExitStack: on an exception every writer aborts (nothing published); else all close.
    with contextlib.ExitStack() as stack:
        writers = {}
        for layer, hp, p in zip(layer_list, names, paths, strict=True):
            extra = {
                "model": name,
                "layer": layer,
                "hook_point": hp,
                "record": to_mapping(cfg),
                "data": cfg.data or "auto:test",
            }
            writers[hp] = stack.enter_context(
                ActivationWriter(
                    p,
                    _hook_width(ht, hp),
                    dtype=cfg.dtype,
                    hook=hp,
                    source=src,
                    provider="lm",
                    overwrite=overwrite,
                    extra=extra,
                )
            )
        bar = tqdm(total=len(token_lists), desc="recording", unit="doc", disable=not progress)
        for idx, acts in iter_hook_activations(ht, token_lists, names, cfg.batch_size):
            context = _context_columns([token_lists[i] for i in idx], idx, vocab_text)
            for hp in names:
                writers[hp].append(torch.cat(acts[hp]), context)
            bar.update(len(idx))
        bar.close()
    return paths


def _context_columns(
    token_lists: Sequence[Sequence[int]], docs: Sequence[int], vocab_text: _TokenText
) -> dict[str, list[Any]]:
    """Per-row ``document, position, token_id, token`` of a batch of documents."""
    ctx_doc: list[int] = []
    ctx_pos: list[int] = []
    ctx_id: list[int] = []
    for doc, ids in zip(docs, token_lists, strict=True):
        ctx_doc += [doc] * len(ids)
        ctx_pos += list(range(len(ids)))
        ctx_id += [int(t) for t in ids]
    return {
        "document": ctx_doc,
        "position": ctx_pos,
        "token_id": ctx_id,
        "token": [vocab_text(t) for t in ctx_id],
    }


def _hook_width(ht: Any, name: str) -> int:
    """Flattened width of a hook's activation per position (runs one token through)."""
    layer = int(name.split(".")[1])
    stop = layer + 1
    with torch.inference_mode():
        _, cache = ht.run_with_cache(
            torch.zeros((1, 1), dtype=torch.long, device=ht.cfg.device),
            names_filter=lambda n: n == name,
            stop_at_layer=stop,
            return_type=None,
        )
    shape = cache[name].shape
    width = 1
    for s in shape[2:]:
        width *= int(s)
    return width


class _TokenText:
    """Token id -> its text as it appears in decoded output (cached)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self.cache.get(token_id)
        if text is None:
            text = self.tok.decode([token_id])
            self.cache[token_id] = text
        return text
