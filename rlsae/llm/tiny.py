"""A tiny offline Pythia: synthetic movie reviews, a BPE tokenizer and a small GPT-NeoX.

Pythia and IMDb come from the Hugging Face hub, which tests and the offline demo cannot reach.
:func:`pretrain_tiny` builds a stand-in that goes through exactly the same code path:

* a corpus of short movie reviews generated from templates whose adjectives and verbs are drawn
  from the VADER lexicon (positive and negative words) and from a neutral pool (words with no
  VADER utility). Each review leans negative, mixed or positive, so the base model writes
  reviews of mixed sentiment and an RLHF run has something to move;
* a byte-level BPE tokenizer (GPT-NeoX's kind) trained on it with the ``tokenizers`` library;
* a small ``GPTNeoXForCausalLM`` (Pythia's architecture: rotary on 25% of head dims, parallel
  residual, untied embeddings) trained with AdamW for ``steps`` steps on CPU;

all saved in Hugging Face format, loadable with :func:`rlsae.llm.models.load_model`, with the
train and test corpora (one review per line) beside them as ``corpus_train.txt`` and
``corpus_test.txt`` and the configuration and losses in ``tiny.json``.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

from rlsae.configs import from_mapping, to_mapping
from rlsae.fsutil import atomic_dir, atomic_write_json
from rlsae.llm.configs import TinyConfig
from rlsae.llm.models import quiet_loading

EOS = "<|endoftext|>"
TINY_META = "tiny.json"

# Positive and negative pools: every word is in the VADER lexicon (checked by the tests).
POSITIVE_ADJ = (
    "great wonderful brilliant beautiful excellent amazing fun funny lovely perfect superb "
    "charming enjoyable fantastic good nice delightful gorgeous fascinating hilarious "
    "outstanding pleasant sweet terrific impressive awesome clever"
).split()
NEGATIVE_ADJ = (
    "bad awful terrible boring horrible dull stupid poor weak ugly annoying disappointing "
    "painful pathetic lame ridiculous dreadful miserable worthless lousy"
).split()
# Neutral pool: words absent from the VADER lexicon.
NEUTRAL_ADJ = (
    "long slow new old quiet dark simple familiar short loud average typical big small late "
    "early recent"
).split()
POSITIVE_VERB = "loved enjoyed liked".split()
NEGATIVE_VERB = "hated disliked".split()
NEUTRAL_VERB = "watched saw remember".split()
POSITIVE_FEEL = "happy glad".split()
NEGATIVE_FEEL = "sad confused miserable".split()
NEUTRAL_FEEL = "think sleep".split()
NOUNS = (
    "plot acting ending cast script soundtrack director pacing dialogue music characters "
    "scenery camera work effects lead actor actress story"
).split()
KINDS = "movie film story drama western sequel".split()
WHEN = ("last night", "yesterday", "with my sister", "on tv", "at the cinema", "this weekend")
NAMES = ("the lead actor", "the actress", "the director", "the whole cast", "the writer")

_TEMPLATES = (
    "The {n} was {a}.",
    "I thought the {n} was {a} and {a}.",
    "This is a {a} {k}.",
    "The {n} felt {a}, but the {n} was {a}.",
    "{N} gave a {a} performance.",
    "I {v} the {n}.",
    "Overall, a {a} {k}.",
    "The {n} is {a} at times.",
    "What a {a} {k}!",
    "It was {a} to watch.",
    "The {n} made me {e}.",
    "The second half was {a}.",
    "I {v} this {k}.",
)


def synth_review(rng: random.Random) -> str:
    """One synthetic review: an opening line and 3 to 6 template sentences.

    The review leans negative, mixed or positive (probability of a positive word 0.15, 0.5 or
    0.85); each sentiment slot is neutral with probability 0.3.
    """
    p_pos = rng.choice((0.15, 0.5, 0.85))

    def pick(pos: list[str], neg: list[str], neu: list[str]) -> str:
        r = rng.random()
        if r < 0.3:
            return rng.choice(neu)
        return rng.choice(pos) if rng.random() < p_pos else rng.choice(neg)

    sentences = [f"I watched this {rng.choice(KINDS)} {rng.choice(WHEN)}."]
    for _ in range(rng.randint(3, 6)):
        t = rng.choice(_TEMPLATES)
        out = []
        for piece in t.split("{"):
            if "}" not in piece:
                out.append(piece)
                continue
            key, rest = piece.split("}", 1)
            if key == "a":
                word = pick(POSITIVE_ADJ, NEGATIVE_ADJ, NEUTRAL_ADJ)
            elif key == "v":
                word = pick(POSITIVE_VERB, NEGATIVE_VERB, NEUTRAL_VERB)
            elif key == "e":
                word = pick(POSITIVE_FEEL, NEGATIVE_FEEL, NEUTRAL_FEEL)
            elif key == "n":
                word = rng.choice(NOUNS)
            elif key == "k":
                word = rng.choice(KINDS)
            else:  # "N"
                word = rng.choice(NAMES).capitalize()
            out.append(word + rest)
        sentences.append("".join(out))
    return " ".join(sentences)


def synth_corpus(n: int, seed: int = 0) -> list[str]:
    """``n`` synthetic reviews, deterministic in ``seed``."""
    rng = random.Random(seed)
    return [synth_review(rng) for _ in range(n)]


def pretrain_tiny(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> Path:
    """Generate the corpus, train tokenizer and model, save everything in HF format in ``out_dir``.

    ``overrides`` are :class:`TinyConfig` fields (``steps=150`` for a 20-40 s test model).
    Written atomically: an interrupted run leaves nothing at ``out_dir``.
    """
    cfg = from_mapping(TinyConfig, {"seed": seed, **overrides}, "tiny-model options")
    t0 = time.time()
    train_docs = synth_corpus(cfg.n_train_reviews, seed=cfg.seed)
    test_docs = synth_corpus(cfg.n_test_reviews, seed=cfg.seed + 1_000_003)

    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        tokenizer = _train_tokenizer(train_docs, cfg.vocab_size)
        model = _build_model(cfg, tokenizer)
        ids = _token_stream(tokenizer, train_docs)
        test_ids = _token_stream(tokenizer, test_docs)

        losses = _train(model, ids, cfg, progress)
        model.eval()
        test_loss = _eval_loss(model, test_ids, cfg.seq_len + 1)

        with quiet_loading():
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "corpus_train.txt").write_text("\n".join(train_docs) + "\n")
        (tmp / "corpus_test.txt").write_text("\n".join(test_docs) + "\n")
        atomic_write_json(
            tmp / TINY_META,
            {
                "format": "rlsae-tiny",
                "config": to_mapping(cfg),
                "train_loss_first": losses[0],
                "train_loss_last": float(sum(losses[-20:]) / len(losses[-20:])),
                "test_loss": test_loss,
                "n_params": sum(p.numel() for p in model.parameters()),
                "vocab_size": len(tokenizer),
                "seconds": time.time() - t0,
            },
        )
    return Path(out_dir)


def _train(model: Any, ids: Any, cfg: TinyConfig, progress: bool) -> list[float]:
    """AdamW with linear warm-up (5% of steps) and cosine decay to 10%; the loss per step."""
    import torch
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, cfg.steps // 20)

    def lr_at(step: int) -> float:
        if step < warm:
            return cfg.lr * (step + 1) / warm
        frac = (step - warm) / max(1, cfg.steps - warm)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    model.train()
    losses = []
    bar = tqdm(range(cfg.steps), desc="pretrain-tiny", disable=not progress, leave=False)
    for step in bar:
        batch = _windows(ids, cfg.batch_size, cfg.seq_len + 1, gen)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return losses


def read_tiny_meta(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``tiny.json`` of a tiny model directory, or None for other models."""
    path = Path(model_dir) / TINY_META
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _train_tokenizer(docs: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS
    )
    fast.model_max_length = 10**6
    return fast


def _build_model(cfg: TinyConfig, tokenizer: Any) -> Any:
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(cfg.seed)
    eos = tokenizer.convert_tokens_to_ids(EOS)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.d_model,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        intermediate_size=cfg.d_mlp,
        max_position_embeddings=cfg.context,
        # Pythia: rotary embeddings on a quarter of each head's dimensions
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000,
            "partial_rotary_factor": 0.25,
        },
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    return GPTNeoXForCausalLM(config)


def _token_stream(tokenizer: Any, docs: list[str]) -> Any:
    import torch

    eos = tokenizer.convert_tokens_to_ids(EOS)
    ids: list[int] = []
    for enc in tokenizer(docs)["input_ids"]:
        ids.extend(enc)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def _windows(ids: Any, batch: int, length: int, gen: Any) -> Any:
    import torch

    starts = torch.randint(0, len(ids) - length, (batch,), generator=gen)
    return torch.stack([ids[s : s + length] for s in starts.tolist()])


def _eval_loss(model: Any, ids: Any, length: int, max_windows: int = 64) -> float:
    import torch

    n = min(max_windows, len(ids) // length)
    if n == 0:
        return float("nan")
    batch = ids[: n * length].view(n, length)
    with torch.no_grad():
        return float(model(input_ids=batch, labels=batch).loss)
