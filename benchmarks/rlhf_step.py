"""Seconds per RLHF update of 64 samples on CPU: our PPO next to TRL's RLOO, same batch.

Two models: the tiny offline Pythia (trained here for a few steps; its weights do not matter for
timing) and a randomly initialised GPT-NeoX of Pythia-70m's shape (config only, no download).
For each: our PPO step with the paper's defaults (batch 64, mini-batch 16, 4 PPO epochs), our PPO
with 1 epoch (the like-for-like count of gradient passes), and one TRL RLOOTrainer step
(64 completions = 16 prefixes x 4, one optimizer step over 4 accumulated micro-batches of 16).
Completions are 24 new tokens on 8-token prefixes, utility reward.

    python benchmarks/rlhf_step.py [--threads 1] [--repeats 2] [--skip-pythia]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from rlsae.llm.configs import PPOConfig, RLHFConfig
from rlsae.llm.models import load_model
from rlsae.llm.ppo import PPOTrainer, sample_batch
from rlsae.llm.rewards import UtilityReward
from rlsae.llm.tiny import pretrain_tiny
from rlsae.threads import torch_threads

PYTHIA_70M = dict(
    hidden_size=512,
    num_hidden_layers=6,
    num_attention_heads=8,
    intermediate_size=2048,
    max_position_embeddings=2048,
    vocab_size=50304,
)


def pythia70m_shaped(tiny_dir: Path, out: Path) -> Path:
    """Random-init GPT-NeoX with Pythia-70m's shape; tiny tokenizer padded to 50304 tokens."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    _, tok = load_model(tiny_dir)
    tok.add_tokens([f"<x{i}>" for i in range(PYTHIA_70M["vocab_size"] - len(tok))])
    eos = tok.eos_token_id
    cfg = GPTNeoXConfig(
        **PYTHIA_70M,
        rotary_pct=0.25,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    for name in ("corpus_train.txt", "corpus_test.txt"):
        (out / name).write_text((tiny_dir / name).read_text())
    return out


def time_ppo(model_dir: Path, prefixes: list[list[int]], epochs: int, repeats: int) -> list[float]:
    policy, tok = load_model(model_dir)
    ref, _ = load_model(model_dir)
    trainer = PPOTrainer(
        policy,
        ref,
        tok,
        UtilityReward(),
        PPOConfig(learning_rate=1e-5, ppo_epochs=epochs, max_new_tokens=24),
    )
    times = []
    for i in range(repeats + 1):  # first step is warm-up
        t0 = time.perf_counter()
        trainer.step(prefixes, seed=i)
        if i:
            times.append(time.perf_counter() - t0)
    return times


def time_rloo(model_dir: Path, prefixes: list[list[int]], repeats: int, work: Path) -> list[float]:
    from transformers import TrainerCallback

    from rlsae.llm.rloo import build_trainer

    model, tok = load_model(model_dir)
    prompts = [tok.decode(p, skip_special_tokens=True) for p in prefixes]
    cfg = RLHFConfig(
        model=str(model_dir),
        algo="rloo",
        ppo=PPOConfig(learning_rate=1e-5, max_new_tokens=24),
        rloo_k=4,
        steps=repeats + 1,
        checkpoint_every=10_000,
    )
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
            marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            marks.append(time.perf_counter())

    trainer = build_trainer(cfg, work, model, tok, prompts, callbacks=[Clock()])
    trainer.train()
    spans = [marks[i + 1] - marks[i] for i in range(0, len(marks) - 1, 2)]
    return spans[1:]  # drop warm-up


def bench(name: str, model_dir: Path, repeats: int, work: Path) -> dict[str, float]:
    _, tok = load_model(model_dir)
    texts = (model_dir / "corpus_train.txt").read_text().splitlines()[:500]
    pool = [tok(t, add_special_tokens=False)["input_ids"][:8] for t in texts]
    batch = sample_batch(pool, 64, seed=0)
    ppo4 = time_ppo(model_dir, batch, 4, repeats)
    ppo1 = time_ppo(model_dir, batch, 1, repeats)
    rloo = time_rloo(model_dir, batch[:16] * 1, repeats, work / f"rloo-{name}")
    row = {
        "ppo_4epochs_s": statistics.mean(ppo4),
        "ppo_1epoch_s": statistics.mean(ppo1),
        "trl_rloo_s": statistics.mean(rloo),
    }
    row["ratio_ppo_4epochs_over_rloo"] = row["ppo_4epochs_s"] / row["trl_rloo_s"]
    row["ratio_ppo_1epoch_over_rloo"] = row["ppo_1epoch_s"] / row["trl_rloo_s"]
    print(
        f"{name:>16}: PPO (4 epochs) {row['ppo_4epochs_s']:.2f} s, PPO (1 epoch) "
        f"{row['ppo_1epoch_s']:.2f} s, TRL RLOO {row['trl_rloo_s']:.2f} s per 64-sample update",
        flush=True,
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-pythia", action="store_true")
    args = ap.parse_args()
    with torch_threads(args.threads):
        result: dict[str, object] = {
            "threads": args.threads,
            "repeats": args.repeats,
            "torch": torch.__version__,
            "machine": platform.machine(),
            "batch": 64,
            "max_new_tokens": 24,
        }
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            print("building the tiny model ...", file=sys.stderr, flush=True)
            tiny = pretrain_tiny(work / "tiny", steps=20, n_train_reviews=600, progress=False)
            result["tiny"] = bench("tiny", tiny, args.repeats, work)
            if not args.skip_pythia:
                shaped = pythia70m_shaped(tiny, work / "pythia70m-shape")
                result["pythia70m_shape"] = bench("pythia-70m shape", shaped, args.repeats, work)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
