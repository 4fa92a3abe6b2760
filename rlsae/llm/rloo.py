"""RLOO through TRL's ``RLOOTrainer``, with the same rewards, log, checkpoints and outputs as PPO.

One RLOO step here consumes ``batch_size`` completions: ``batch_size / rloo_k`` prefixes with
``rloo_k`` completions each (the leave-one-out group). TRL runs it as ``gradient_accumulation =
batch_size / mini_batch_size`` micro-batches of ``mini_batch_size`` and one optimizer step. The
KL coefficient ``beta`` is ``init_kl_coef`` (fixed: TRL's RLOO has no adaptive controller) and
TRL subtracts ``beta * sum_t (log pi - log pi_ref)`` from each sequence's reward, as PPO does.

TRL re-tokenizes prompt text, so the prefixes are passed as decoded text.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from rlsae.errors import RlsaeError
from rlsae.fsutil import read_json
from rlsae.llm.configs import RLHFConfig
from rlsae.llm.models import load_model, quiet_loading
from rlsae.llm.rewards import RewardFn
from rlsae.llm.tuning import (
    RLHFResult,
    StepCallback,
    finish,
    make_reward_fn,
    prefix_pool,
    save_tuned_model,
    start_run,
    write_log,
)


def reward_callable(reward_fn: Any, name: str) -> Any:
    """Wrap ``reward_fn(prefixes, completions)`` as a TRL reward function."""

    def reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return [float(r) for r in reward_fn(list(prompts), list(completions))]

    reward.__name__ = name
    return reward


def build_trainer(
    cfg: RLHFConfig,
    out: Path,
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    callbacks: list[Any] | None = None,
    max_steps: int | None = None,
    reward_fn: RewardFn | None = None,
) -> Any:
    """A configured ``trl.RLOOTrainer`` (CPU, no bf16, no gradient checkpointing)."""
    import warnings

    import datasets
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import RLOOConfig, RLOOTrainer

    accumulation = cfg.ppo.batch_size // cfg.ppo.mini_batch_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        args = RLOOConfig(
            output_dir=str(out / "trl"),
            per_device_train_batch_size=cfg.ppo.mini_batch_size,
            gradient_accumulation_steps=accumulation,
            num_generations=cfg.rloo_k,
            max_completion_length=cfg.ppo.max_new_tokens,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            beta=cfg.ppo.init_kl_coef,
            learning_rate=cfg.ppo.learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            max_grad_norm=cfg.ppo.max_grad_norm,
            max_steps=max_steps or cfg.steps,
            num_iterations=1,
            seed=cfg.seed,
            data_seed=cfg.seed,
            use_cpu=True,
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            report_to="none",
            logging_steps=1,
            save_strategy="steps",
            save_steps=cfg.checkpoint_every,
            save_total_limit=1,
            save_only_model=False,
            disable_tqdm=True,
            dataloader_num_workers=0,
            log_completions=False,
            shuffle_dataset=True,
            remove_unused_columns=False,
        )
    dataset = datasets.Dataset.from_dict({"prompt": prompts})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        trainer = RLOOTrainer(
            model=model,
            reward_funcs=[reward_callable(reward_fn or make_reward_fn(cfg), cfg.reward)],
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=callbacks or [],
        )
    # Library code never prints: TRL's printer and progress callbacks write logs to stdout.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def run_rloo(
    cfg: RLHFConfig,
    out: Path,
    reward_fn: RewardFn,
    *,
    resume: bool,
    progress: bool,
    callback: StepCallback | None,
) -> RLHFResult:
    """Tune with TRL's RLOO into ``out`` (layout as in :mod:`rlsae.llm.rlhf`)."""
    t0 = time.time()
    if resume and (out / "result.json").is_file():
        done = RLHFResult.read(out / "result.json")
        if done.steps >= cfg.steps:
            return done
    model, tokenizer = load_model(cfg.model)
    pool = prefix_pool(cfg, tokenizer, model)
    prompts = [tokenizer.decode(p, skip_special_tokens=True) for p in pool]
    log: list[dict[str, Any]] = []

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, desc="rloo", disable=not progress, leave=False)
    logger = _log_callback(cfg, out, log, bar, callback)
    checkpoint = _last_checkpoint(out / "trl") if resume else None
    done_steps = 0
    if checkpoint is not None:
        # the log up to the checkpoint from the checkpoint itself (log.json is written after
        # it, so a kill in between would lose its last step)
        state = read_json(checkpoint / "trainer_state.json")
        done_steps = int(state.get("global_step", 0))
        log[:] = [
            log_entry(int(h["step"]), h, cfg.ppo.init_kl_coef)
            for h in state.get("log_history", [])
            if "reward" in h
        ]
        _load_checkpoint_weights(model, checkpoint)
    start_run(out, cfg)
    if done_steps >= cfg.steps:
        # killed after the last checkpoint, before the tuned model was saved: the checkpoint
        # holds the finished weights (transformers, resumed there, would train one more step)
        tuned = model
    else:
        trainer = build_trainer(
            cfg, out, model, tokenizer, prompts, callbacks=[logger], reward_fn=reward_fn
        )
        try:
            with quiet_loading():  # TRL's checkpoints save through transformers' progress bars
                trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except ValueError as e:
            raise RlsaeError(f"RLOO training failed: {str(e).splitlines()[0]}") from None
        tuned = trainer.model
    bar.close()
    write_log(out, log, cfg)
    save_tuned_model(out, tuned, tokenizer, cfg)
    return finish(out, cfg, log, time.time() - t0)


def log_entry(step: int, logs: dict[str, float], kl_coef: float) -> dict[str, float]:
    """One step of TRL's logs in the PPO log's terms (``kl`` per completion)."""
    length = float(logs.get("completions/mean_length", 0.0))
    return {
        "step": step,
        "reward_mean": float(logs["reward"]),
        "reward_std": float(logs.get("reward_std", 0.0)),
        # TRL logs the mean per-token KL; per completion (as PPO logs it) is about
        # per-token KL times the mean completion length.
        "kl_per_token": float(logs.get("kl", 0.0)),
        "kl": float(logs.get("kl", 0.0)) * length,
        "kl_coef": kl_coef,
        "loss": float(logs.get("loss", 0.0)),
        "entropy": float(logs.get("entropy", 0.0)),
        "completion_length": length,
        "grad_norm": float(logs.get("grad_norm", 0.0)),
        "seconds": float(logs.get("step_time", 0.0)),
    }


def _log_callback(
    cfg: RLHFConfig,
    out: Path,
    log: list[dict[str, Any]],
    bar: Any,
    callback: StepCallback | None,
) -> Any:
    """A TRL callback that keeps ``log`` (and log.json at each save) and calls ``callback``."""
    from transformers import TrainerCallback

    class _Log(TrainerCallback):
        def on_log(
            self,
            args: Any,
            state: Any,
            control: Any,
            logs: dict[str, float] | None = None,
            **kwargs: Any,
        ) -> None:
            if not logs or "reward" not in logs:
                return
            step = int(state.global_step)
            entry = log_entry(step, logs, cfg.ppo.init_kl_coef)
            del log[step - 1 :]
            log.append(entry)
            bar.n = step
            bar.set_postfix(reward=f"{entry['reward_mean']:.3f}", kl=f"{entry['kl']:.2f}")
            if callback is not None:
                callback(step, entry)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            write_log(out, log, cfg)

    return _Log()


def _load_checkpoint_weights(model: Any, checkpoint: Path) -> None:
    """Put a TRL checkpoint's weights into ``model`` through ``from_pretrained``.

    transformers' own resume loads the checkpoint's state dict by its saved names, and for
    GPT-NeoX it saves the output layer as ``embed_out`` but looks for ``lm_head``: the resumed
    run kept the base model's output layer (a warning, not an error) and so was not the
    uninterrupted run. ``from_pretrained`` maps the names; the trainer's later load then
    changes nothing. The reference model is unaffected (TRL loads it from the base model).
    """
    from transformers import AutoModelForCausalLM

    with quiet_loading():
        trained = AutoModelForCausalLM.from_pretrained(str(checkpoint), local_files_only=True)
    missing, unexpected = model.load_state_dict(trained.state_dict(), strict=False)
    if missing or unexpected:
        raise RlsaeError(
            f"{checkpoint}: the checkpoint does not fit the model (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); start the run again without --resume"
        )


def _last_checkpoint(trl_dir: Path) -> Path | None:
    """The newest complete TRL checkpoint; the ones a kill left half-written are deleted.

    transformers writes a checkpoint in place, ``trainer_state.json`` last, so a checkpoint is
    complete when that file parses (a kill can also stop the deletion of an older one part-way:
    the newer complete one is taken and the rest goes)."""
    if not trl_dir.is_dir():
        return None
    ckpts = [p for p in trl_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    complete = [p for p in ckpts if _complete(p)]
    best = max(complete, key=lambda p: int(p.name.split("-")[-1])) if complete else None
    for p in ckpts:
        if p != best:
            shutil.rmtree(p, ignore_errors=True)
    return best


def _complete(checkpoint: Path) -> bool:
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    weights = (checkpoint / "model.safetensors").is_file()
    return isinstance(state, dict) and weights and (checkpoint / "optimizer.pt").is_file()
