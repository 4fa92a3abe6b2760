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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from rlsae.errors import RlsaeError


@dataclass
class RecordConfig:
    """How activations are recorded (saved in every store's ``meta.extra.record``)."""

    hook: str = "resid_post"
    """Hook inside each block: ``resid_post``, ``resid_pre``, ``mlp_out``, ``attn_out``, ... or
    any TransformerLens name below ``blocks.L.`` (``mlp.hook_post``)."""
    prefixes: int = 1000
    """Number of documents to run through the model."""
    prefix_tokens: int = 64
    """Tokens kept from the start of each document (the paper explains on the first 50)."""
    data: str | None = None
    """Text file (one document per line) or JSONL (``text`` field), ``imdb``; None: ``auto`` (a
    tiny model's corpus_test.txt, else the IMDb test split)."""
    batch_size: int = 32
    """Documents per forward pass."""
    dtype: str = "float32"
    """Store dtype: float32 or float16."""
    seed: int = 0
    """Shuffles IMDb before taking ``prefixes`` documents (files are read in order)."""


# ----------------------------------------------------------------------------- loading


def load_hooked_model(
    model: Any, *, tokenizer: Any = None, device: str = "cpu"
) -> tuple[Any, Any, str]:
    """``(HookedTransformer, tokenizer, model_name)`` for a hub name, a directory or an HF model.

    The HookedTransformer's weights are exactly the Hugging Face model's (no folding/centring).
    """
    from rlsae.llm.models import load_model

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


def parse_layers(text: str | Sequence[int]) -> list[int]:
    """``"1,3"`` or ``[1, 3]`` -> ``[1, 3]`` (order kept, duplicates dropped)."""
    if isinstance(text, str):
        try:
            items = [int(t) for t in text.replace(" ", "").split(",") if t]
        except ValueError:
            raise RlsaeError(f"--layers must be comma-separated integers, got {text!r}") from None
    else:
        items = [int(t) for t in text]
    if not items:
        raise RlsaeError("give at least one layer")
    return list(dict.fromkeys(items))


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
    from rlsae.llm.data import load_texts

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
    *,
    hook: str = "resid_post",
    prefixes: int = 1000,
    prefix_tokens: int = 64,
    data: str | os.PathLike | None = None,
    batch_size: int = 32,
    dtype: str = "float32",
    seed: int = 0,
    source: str | None = None,
    device: str = "cpu",
    tokenizer: Any = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Record ``hook`` of each layer in ``layers`` into ``out_dir/blocks.L.hook_NAME`` stores.

    ``model`` is a hub name, a model directory, or an in-memory HF model (with ``tokenizer``).
    Returns the store paths in the order of ``layers``. Every store is written atomically; a
    store that already exists raises unless ``overwrite``.
    """
    from tqdm.auto import tqdm

    from rlsae.sae.store import ActivationWriter

    cfg = RecordConfig(
        hook=hook,
        prefixes=prefixes,
        prefix_tokens=prefix_tokens,
        data=None if data is None else str(data),
        batch_size=batch_size,
        dtype=dtype,
        seed=seed,
    )
    if batch_size < 1:
        raise RlsaeError("batch_size must be at least 1")
    layer_list = parse_layers(layers)
    ht, tokenizer, name = load_hooked_model(model, tokenizer=tokenizer, device=device)
    names = [hook_point(ht, layer, hook) for layer in layer_list]
    out_dir = Path(out_dir)
    paths = [out_dir / n for n in names]
    if not overwrite:
        for p in paths:
            if p.exists():
                raise RlsaeError(f"{p} already exists; remove it or choose another --out")
    docs = load_documents(
        data, prefixes, seed=seed, model=model if isinstance(model, str | os.PathLike) else None
    )
    token_lists = tokenize_documents(tokenizer, docs, prefix_tokens)
    if not any(token_lists):
        raise RlsaeError("every document tokenised to zero tokens; nothing to record")
    vocab_text = _TokenText(tokenizer)
    src = source or Path(name).name
    writers = {}
    d_out: dict[str, int] = {}
    try:
        for layer, hp, p in zip(layer_list, names, paths, strict=True):
            d_out[hp] = _hook_width(ht, hp)
            writers[hp] = ActivationWriter(
                p,
                d_out[hp],
                dtype=dtype,
                hook=hp,
                source=src,
                provider="lm",
                overwrite=overwrite,
                extra={
                    "model": name,
                    "layer": layer,
                    "hook_point": hp,
                    "record": asdict(cfg),
                    "data": cfg.data or "auto:test",
                },
            )
        bar = tqdm(total=len(token_lists), desc="recording", unit="doc", disable=not progress)
        for idx, acts in iter_hook_activations(ht, token_lists, names, batch_size):
            ctx_doc, ctx_pos, ctx_id = [], [], []
            for i in idx:
                ids = token_lists[i]
                ctx_doc += [i] * len(ids)
                ctx_pos += list(range(len(ids)))
                ctx_id += list(ids)
            context = {
                "document": ctx_doc,
                "position": ctx_pos,
                "token_id": ctx_id,
                "token": [vocab_text(t) for t in ctx_id],
            }
            for hp in names:
                writers[hp].append(torch.cat(acts[hp]), context)
            bar.update(len(idx))
        bar.close()
        for hp in names:
            writers[hp].close()
    except BaseException:
        for w in writers.values():
            if not getattr(w, "_closed", False):
                w.abort()
        raise
    return paths


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
