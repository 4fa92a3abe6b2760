"""A PPO tuning run (:class:`rlsae.llm.ppo.PPOTrainer`) with checkpoints, resume and a log.

The checkpoint (``OUT/checkpoint``) holds the policy in Hugging Face format, the trainer's state
(value head, optimiser, KL controller) and ``state.json`` (step, log, seconds); a resumed run
continues bit-for-bit where the checkpoint left off, since every step's batch and sampling are
seeded by the step number.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import torch

from rlsae.fsutil import atomic_dir, dumps_json, read_json
from rlsae.llm.configs import RLHFConfig
from rlsae.llm.models import load_model, quiet_loading
from rlsae.llm.ppo import PPOTrainer, sample_batch
from rlsae.llm.rewards import RewardFn
from rlsae.llm.tuning import (
    RLHFResult,
    StepCallback,
    finish,
    prefix_pool,
    save_tuned_model,
    start_run,
    write_log,
)


def run_ppo(
    cfg: RLHFConfig,
    out: Path,
    reward_fn: RewardFn,
    *,
    resume: bool,
    progress: bool,
    callback: StepCallback | None,
) -> RLHFResult:
    """Tune with PPO into ``out`` (layout in :mod:`rlsae.llm.rlhf`)."""
    from tqdm.auto import tqdm

    t0 = time.time()
    ckpt = out / "checkpoint"
    start, log, elapsed = 0, [], 0.0
    if resume and (ckpt / "state.json").is_file():
        state = read_json(ckpt / "state.json")
        start, log, elapsed = state["step"], state["log"], state.get("seconds", 0.0)
        policy, tokenizer = load_model(ckpt / "policy")
    else:
        policy, tokenizer = load_model(cfg.model)
    if resume and start >= cfg.steps and (out / "result.json").is_file():
        return RLHFResult.read(out / "result.json")
    ref_model, _ = load_model(cfg.model)
    pool = prefix_pool(cfg, tokenizer, policy)

    torch.manual_seed(cfg.seed)
    trainer = PPOTrainer(policy, ref_model, tokenizer, reward_fn, cfg.ppo)
    if start:
        trainer.load_state_dict(torch.load(ckpt / "trainer_state.pt", weights_only=True))
    start_run(out, cfg)

    bar = tqdm(total=cfg.steps, initial=start, desc="ppo", disable=not progress, leave=False)
    for step in range(start, cfg.steps):
        step_seed = cfg.seed * 1_000_003 + step
        stats = trainer.step(sample_batch(pool, cfg.ppo.batch_size, step_seed), seed=step_seed)
        entry = {"step": step + 1, **stats}
        log.append(entry)
        bar.update(1)
        bar.set_postfix(reward=f"{stats['reward_mean']:.3f}", kl=f"{stats['kl']:.2f}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            save_checkpoint(ckpt, trainer, tokenizer, done, log, elapsed + time.time() - t0)
            write_log(out, log, cfg)
        if callback is not None:
            callback(done, entry)
    bar.close()
    write_log(out, log, cfg)
    save_tuned_model(out, policy, tokenizer, cfg)
    return finish(out, cfg, log, elapsed + time.time() - t0)


def save_checkpoint(
    ckpt: Path,
    trainer: PPOTrainer,
    tokenizer: Any,
    step: int,
    log: list[dict[str, Any]],
    seconds: float,
) -> None:
    """The policy, the trainer's state and the log so far, replacing ``ckpt`` atomically."""
    with atomic_dir(ckpt, overwrite=True) as tmp:
        with quiet_loading():
            trainer.policy.save_pretrained(tmp / "policy")
        tokenizer.save_pretrained(tmp / "policy")
        buf = io.BytesIO()
        torch.save(trainer.state_dict(), buf)
        (tmp / "trainer_state.pt").write_bytes(buf.getvalue())
        state = {"step": step, "log": log, "seconds": seconds}
        (tmp / "state.json").write_text(dumps_json(state))  # strict JSON, like log.json
