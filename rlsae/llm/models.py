"""Load a causal language model and its tokenizer: a hub name or a local directory.

The paper's models are hub names (``EleutherAI/pythia-70m`` by default; ``pythia-160m``,
``pythia-410m`` and ``EleutherAI/gpt-neo-125m`` also work). A local directory (for example one
written by :func:`rlsae.llm.tiny.pretrain_tiny` or by ``rlsae llm rlhf``) loads with
``local_files_only=True`` and never touches the network.

Pythia has no pad token: the EOS token is used for padding and every mask is built from the
tokenizer's attention mask, never from the pad id (EOS also occurs inside real text). Padding is
on the left so that generation continues right after each prompt.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from rlsae.errors import RlsaeError
from rlsae.llm.configs import DEFAULT_MODEL

LOAD_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    KeyError,
    EOFError,
    # a pytorch_model.bin that is a pickle of anything but tensors: torch's weights_only
    # loader refuses it (safely) with UnpicklingError; a truncated or foreign file with
    # RuntimeError ("PytorchStreamReader failed ...")
    pickle.UnpicklingError,
    RuntimeError,
    # a truncated or empty model.safetensors ("header too small")
    SafetensorError,
)
"""What loading a model or tokenizer raises for a bad directory, name or weights file."""

__all__ = [
    "DEFAULT_MODEL",
    "context_length",
    "load_error",
    "load_model",
    "load_tokenizer",
    "resolve_model_ref",
]


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Give a tokenizer a pad token (EOS when it has none) and left padding; return it."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise RlsaeError("the tokenizer has neither a pad nor an EOS token; add one first")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """No progress bars ("Loading weights", "Writing model shards") or warnings from
    transformers and torch while a model is loaded or saved (library code never prints)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_tokenizer(name_or_dir: str | os.PathLike) -> Any:
    """Load only the tokenizer (same rules as :func:`load_model`)."""
    from transformers import AutoTokenizer

    name, local = resolve_model_ref(name_or_dir)
    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=local)
    except LOAD_ERRORS as e:
        raise RlsaeError(load_error(name, local, e)) from None
    return prepare_tokenizer(tok)


def load_model(name_or_dir: str | os.PathLike, device: str = "cpu") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``: a causal LM in eval mode on ``device`` and its tokenizer.

    ``name_or_dir`` is a Hugging Face hub name (``EleutherAI/pythia-70m``) or a directory with
    ``config.json``, weights and tokenizer files. Raises :class:`RlsaeError` for an unknown name
    or an unreadable directory.
    """
    from transformers import AutoModelForCausalLM

    name, local = resolve_model_ref(name_or_dir)
    tokenizer = load_tokenizer(name_or_dir)
    model: Any  # any causal LM class; transformers' stubs type .to() through a wrapper
    try:
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(name, local_files_only=local)
    except LOAD_ERRORS as e:
        raise RlsaeError(load_error(name, local, e)) from None
    model.to(device)
    model.eval()
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def context_length(model: Any) -> int:
    """The longest sequence ``model`` accepts (``max_position_embeddings`` or ``n_positions``)."""
    cfg = model.config
    for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def resolve_model_ref(name_or_dir: str | os.PathLike) -> tuple[str, bool]:
    """``(name, local)``; a local path must be a readable model directory (one-line error).

    Cheap (no torch, no network): commands call it to check a model before writing anything.
    """
    text = os.fspath(name_or_dir)
    path = Path(text).expanduser()
    # a path, or what looks like one: runs/model where runs/ exists is a missing directory,
    # not the hub's "runs" organisation (which would be tried over the network for a minute)
    looks_local = text.startswith((".", "/", "~")) or ("/" in text and path.parent.is_dir())
    if path.exists() or isinstance(name_or_dir, Path) or looks_local:
        if not path.is_dir():
            raise RlsaeError(f"model directory {path} not found; pass a hub name or a model dir")
        if not os.access(path, os.R_OK | os.X_OK):
            raise RlsaeError(f"model directory {path} is not readable; check its permissions")
        if not (path / "config.json").is_file():
            raise RlsaeError(f"{path} has no config.json; it is not a Hugging Face model directory")
        return str(path), True
    if text.count("/") > 1 or not text:
        raise RlsaeError(f"{text!r} is neither an existing directory nor a hub name (owner/name)")
    if hub_offline() and not hub_cached(text):  # fail now, not after importing transformers
        from huggingface_hub import constants

        raise RlsaeError(
            f"could not load {text!r} from the Hugging Face hub: HF_HUB_OFFLINE is set and the "
            f"hub cache ({constants.HF_HUB_CACHE}) holds no copy; pass a model directory"
        )
    return text, False


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) forbids the network."""
    return any(
        os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_cached(name: str) -> bool:
    """Whether the local hub cache holds a snapshot of model ``name`` with its config.json."""
    from huggingface_hub import constants  # light: paths and environment only

    snapshots = Path(constants.HF_HUB_CACHE) / f"models--{name.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.glob("*/config.json"))


def load_error(name: str, local: bool, e: Exception) -> str:
    """The one-line message for a model or tokenizer that failed to load."""
    if isinstance(e, pickle.UnpicklingError):
        return (
            f"{name} holds a pickled weights file (pytorch_model.bin) with objects other than "
            "tensors; it was refused without running it. Use a model saved as safetensors"
        )
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if local:
        return f"could not load the model in {name} ({first}); is it a complete model directory?"
    return (
        f"could not load {name!r} from the Hugging Face hub ({first}) and no such local "
        "directory exists; check the name, your network, or pass a model directory"
    )
