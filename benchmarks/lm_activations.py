"""Tokens per second of recording one layer through TransformerLens vs a bare HF forward.

The same batch of token ids goes through
  * ``hf``: ``GPTNeoXForCausalLM(ids, output_hidden_states=True)`` (the whole model, every
    layer's hidden state returned), the bare Hugging Face baseline;
  * ``hf_trunk``: ``model.gpt_neox(ids, output_hidden_states=True)``, the same without the LM
    head (the stricter baseline: TransformerLens also skips the unembedding here);
  * ``tl_mid``: ``HookedTransformer.run_with_cache`` with ``names_filter`` on one
    ``hook_resid_post`` of a middle layer and ``stop_at_layer`` just after it, as
    ``rlsae llm record`` does;
  * ``tl_last``: the same for the last layer (no early stop: the whole stack runs);
all under ``torch.inference_mode()``. The model is a randomly initialised GPT-NeoX of
Pythia-70m's shape (config only, no download) or smaller. Median over ``--repeats`` timed runs
after one warm-up, the four
variants run round-robin so that changes in machine load hit them alike. The target is TransformerLens time <= 1.3x the bare forward.

    python benchmarks/lm_activations.py [--shape pythia-70m|tiny] [--batch 16] [--seq 64]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHAPES = {
    # Pythia-70m: 6 layers, d_model 512, 8 heads, d_mlp 2048, vocab 50304, rotary 25%
    "pythia-70m": dict(
        hidden_size=512,
        num_hidden_layers=6,
        num_attention_heads=8,
        intermediate_size=2048,
        vocab_size=50304,
    ),
    "tiny": dict(
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        vocab_size=1024,
    ),
}


def _model(shape: str):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        **SHAPES[shape],
        max_position_embeddings=2048,
        rotary_pct=0.25,
        eos_token_id=0,
        bos_token_id=0,
    )
    return GPTNeoXForCausalLM(cfg).eval()


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({"<|endoftext|>": 0, "<unk>": 1}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>")


def _time_interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, run round-robin so that load changes hit all alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="pythia-70m")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    args = ap.parse_args()

    from rlsae.threads import torch_threads

    with torch_threads(args.threads):
        _measure(args)


def _measure(args: argparse.Namespace) -> None:
    import torch

    from rlsae.llm.record import load_hooked_model

    hf = _model(args.shape)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "m"
        hf.save_pretrained(d)
        _tokenizer().save_pretrained(d)
        t0 = time.perf_counter()
        ht, _, _ = load_hooked_model(str(d))
        load_s = time.perf_counter() - t0
    n_layers = ht.cfg.n_layers
    mid = n_layers // 2
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(2, SHAPES[args.shape]["vocab_size"], (args.batch, args.seq), generator=gen)
    tokens = ids.numel()

    def run_hf():
        with torch.inference_mode():
            return hf(ids, output_hidden_states=True).hidden_states[mid + 1]

    def run_trunk():
        with torch.inference_mode():
            out = hf.gpt_neox(ids, output_hidden_states=True)
            return out.hidden_states[mid + 1]

    def run_tl(layer: int):
        name = f"blocks.{layer}.hook_resid_post"
        stop = layer + 1  # == n_layers for the last block: every block, no final LN/unembed

        def go():
            with torch.inference_mode():
                _, cache = ht.run_with_cache(
                    ids,
                    names_filter=lambda n: n == name,
                    stop_at_layer=stop,
                    return_type=None,
                )
            return cache[name]

        return go

    # same numbers first: the benchmark compares equal work
    diff = float((run_tl(mid)() - run_hf()).abs().max())
    t = _time_interleaved(
        {"hf": run_hf, "trunk": run_trunk, "mid": run_tl(mid), "last": run_tl(n_layers - 1)},
        args.repeats,
    )
    t_hf, t_trunk, t_mid, t_last = t["hf"], t["trunk"], t["mid"], t["last"]
    result = {
        "benchmark": "lm_activations",
        "shape": args.shape,
        "batch": args.batch,
        "seq": args.seq,
        "layer_mid": mid,
        "n_layers": n_layers,
        "hf_tokens_per_s": tokens / t_hf,
        "hf_trunk_tokens_per_s": tokens / t_trunk,
        "tl_mid_tokens_per_s": tokens / t_mid,
        "tl_last_tokens_per_s": tokens / t_last,
        "tl_mid_over_hf_time": t_mid / t_hf,
        "tl_last_over_hf_time": t_last / t_hf,
        "tl_last_over_hf_trunk_time": t_last / t_trunk,
        "tl_mid_over_hf_trunk_time": t_mid / t_trunk,
        "target_ratio": 1.3,
        "meets_target_mid": t_mid / t_hf <= 1.3,
        "meets_target_last": t_last / t_hf <= 1.3,
        "meets_target_last_vs_trunk": t_last / t_trunk <= 1.3,
        "max_abs_diff_mid": diff,
        "tl_load_s": load_s,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}",
    }
    print(
        f"{args.shape} batch {args.batch}x{args.seq}: HF {result['hf_tokens_per_s']:.0f} tok/s, "
        f"TL layer {mid} {result['tl_mid_tokens_per_s']:.0f} tok/s "
        f"({result['tl_mid_over_hf_time']:.2f}x time), TL last layer "
        f"{result['tl_last_tokens_per_s']:.0f} tok/s ({result['tl_last_over_hf_time']:.2f}x time, "
        f"{result['tl_last_over_hf_trunk_time']:.2f}x the HF trunk without LM head at "
        f"{result['hf_trunk_tokens_per_s']:.0f} tok/s); "
        f"max |TL - HF| = {diff:.2e}",
        file=sys.stderr,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
