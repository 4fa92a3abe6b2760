"""RLHF tuning runs: PPO (ours) or RLOO (TRL), with checkpoints, resume, logs and a curve.

A run directory holds:

```
OUT/
  rlhf.json      the RLHFConfig of the run (what ran, versions)
  log.json       one entry per step: mean reward, KL, KL coefficient, losses, seconds
  curve.html     plotly curve of the log (plotly.js embedded, opens offline)
  checkpoint/    latest checkpoint (PPO: policy/ in HF format, trainer_state.pt; RLOO: TRL's)
  model/         the tuned model in Hugging Face format, its tokenizer and rlhf.json
  result.json    summary: first and last mean reward, steps, seconds, model_dir
```

:func:`rlhf_tune` is the entry point for the CLI and for pipelines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_dir, atomic_write_bytes, atomic_write_json, read_json
from rlsae.llm.models import DEFAULT_MODEL
from rlsae.llm.rewards import DEFAULT_CLASSIFIER
from rlsae.provenance import package_versions

StepCallback = Callable[[int, dict[str, float]], None]


@dataclass
class RLHFConfig:
    """A tuning run. PPO fields are the paper's Table 1 defaults; see ``PPOConfig`` for the rest."""

    model: str = DEFAULT_MODEL
    """Base model: hub name or local directory."""
    reward: str = "utility"
    """'utility' (VADER utility table, paper eq. 3) or 'sentiment' (classifier's positive logit)."""
    algo: str = "ppo"
    """'ppo' (ours) or 'rloo' (TRL's RLOOTrainer)."""
    steps: int = 100
    """Updates; each consumes batch_size completions."""
    seed: int = 0
    """Seed for prefixes, sampling and shuffling."""
    data: str = "auto"
    """Prefix source: 'auto' (tiny model's corpus, else IMDb), 'imdb', or a .txt/.jsonl file."""
    prefix_tokens: int = 8
    """Prefix length in tokens for tuning."""
    max_new_tokens: int = 24
    """Completion length in tokens."""
    batch_size: int = 64
    """Completions per update (paper: 64)."""
    mini_batch_size: int = 16
    """Completions per gradient step (paper: 16)."""
    learning_rate: float = 1e-6
    """Learning rate (paper: 1e-6 for Pythia; the tiny model needs about 1e-4)."""
    init_kl_coef: float = 0.5
    """Initial KL coefficient (PPO, adaptive) or beta (RLOO, fixed); paper: 0.5."""
    adaptive_kl: bool = True
    """PPO: adapt the KL coefficient (Ziegler et al.)."""
    target_kl: float = 6.0
    """PPO: target KL of the adaptive controller."""
    ppo_epochs: int = 4
    """PPO: passes over each batch."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip (paper: 1)."""
    rloo_k: int = 4
    """RLOO: completions per prefix (the leave-one-out group)."""
    table: str = "vader"
    """Utility table: 'vader' or a TSV file."""
    reward_scale: float = 0.2
    """Utility reward scale (paper: 1/5)."""
    reward_clip: float = 10.0
    """Utility reward clamp (paper: 10)."""
    completion_only: bool = False
    """Score the completion alone instead of prefix + completion."""
    classifier: str = DEFAULT_CLASSIFIER
    """Sentiment classifier (hub name or directory) for reward='sentiment'."""
    checkpoint_every: int = 10
    """Steps between checkpoints."""


def make_reward_fn(cfg: RLHFConfig) -> Any:
    """The reward callable ``(prefixes, completions) -> list[float]`` the config asks for."""
    from rlsae.llm.rewards import (
        ClassifierReward,
        ClassifierRewardConfig,
        UtilityReward,
        UtilityRewardConfig,
    )

    if cfg.reward == "utility":
        return UtilityReward(
            UtilityRewardConfig(
                table=cfg.table,
                scale=cfg.reward_scale,
                clip=cfg.reward_clip,
                completion_only=cfg.completion_only,
            )
        )
    if cfg.reward == "sentiment":
        return ClassifierReward(
            ClassifierRewardConfig(model=cfg.classifier, completion_only=cfg.completion_only)
        )
    raise RlsaeError(f"unknown reward {cfg.reward!r}; use 'utility' or 'sentiment'")


def rlhf_tune(
    model: str | os.PathLike = DEFAULT_MODEL,
    out_dir: str | os.PathLike = "rlhf",
    *,
    resume: bool = False,
    progress: bool = True,
    callback: StepCallback | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Tune ``model`` with RLHF into ``out_dir``; returns the summary (also in result.json).

    ``overrides`` are :class:`RLHFConfig` fields (``reward``, ``algo``, ``steps``, ``seed``,
    ``learning_rate``, ...). With ``resume`` an interrupted run continues from its last
    checkpoint (and a finished run asked for more steps continues too); without it an existing
    non-empty ``out_dir`` is an error. ``callback(step, stats)`` runs after every step.
    """
    fields = {f.name for f in dataclasses.fields(RLHFConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise RlsaeError(f"unknown RLHF option(s) {sorted(unknown)}")
    cfg = RLHFConfig(model=os.fspath(model), **overrides)
    _validate(cfg)
    out = Path(out_dir)
    cfg = _prepare_out(out, cfg, resume)

    if cfg.algo == "ppo":
        return _run_ppo(cfg, out, resume=resume, progress=progress, callback=callback)
    from rlsae.llm.rloo import run_rloo

    return run_rloo(cfg, out, resume=resume, progress=progress, callback=callback)


def _validate(cfg: RLHFConfig) -> None:
    from rlsae.llm.ppo import PPOConfig

    if cfg.algo not in ("ppo", "rloo"):
        raise RlsaeError(f"unknown algorithm {cfg.algo!r}; use 'ppo' or 'rloo'")
    if cfg.reward not in ("utility", "sentiment"):
        raise RlsaeError(f"unknown reward {cfg.reward!r}; use 'utility' or 'sentiment'")
    if cfg.steps < 1:
        raise RlsaeError("steps must be at least 1")
    if cfg.checkpoint_every < 1:
        raise RlsaeError("checkpoint_every must be at least 1")
    PPOConfig(
        batch_size=cfg.batch_size,
        mini_batch_size=cfg.mini_batch_size,
        learning_rate=cfg.learning_rate,
        max_new_tokens=cfg.max_new_tokens,
    ).validate()
    if cfg.algo == "rloo" and (cfg.rloo_k < 2 or cfg.batch_size % cfg.rloo_k):
        raise RlsaeError(
            f"RLOO needs rloo_k >= 2 dividing the batch size {cfg.batch_size} (got {cfg.rloo_k})"
        )


_RESUMABLE_CHANGES = {"steps", "checkpoint_every"}


def _prepare_out(out: Path, cfg: RLHFConfig, resume: bool) -> RLHFConfig:
    meta = out / "rlhf.json"
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise RlsaeError(
                f"{out} already holds a run; pass --resume to continue it or another --out"
            )
        if not meta.is_file():
            raise RlsaeError(
                f"{out} is not an RLHF run directory (no rlhf.json); choose another --out"
            )
        old = read_json(meta)["config"]
        for key, value in dataclasses.asdict(cfg).items():
            if key not in _RESUMABLE_CHANGES and key in old and old[key] != value:
                raise RlsaeError(
                    f"cannot resume {out}: {key} was {old[key]!r}, now {value!r}; use the same options"
                )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        meta,
        {
            "config": dataclasses.asdict(cfg),
            "versions": package_versions("rlsae", "torch", "transformers", "trl"),
        },
    )
    return cfg


def prefix_pool(cfg: RLHFConfig, tokenizer: Any, model: Any) -> list[list[int]]:
    """All train-split prefixes the run samples its batches from."""
    from rlsae.llm.data import check_fits_context, load_texts, make_prefixes

    check_fits_context(model, cfg.prefix_tokens, cfg.max_new_tokens)
    texts = load_texts(cfg.data, "train", model=cfg.model)
    return make_prefixes(texts, tokenizer, 0, cfg.prefix_tokens, seed=cfg.seed)


def write_log(out: Path, log: list[dict[str, Any]], cfg: RLHFConfig) -> None:
    """log.json and curve.html (mean reward, KL and KL coefficient per step)."""
    atomic_write_json(out / "log.json", {"algo": cfg.algo, "steps": log})
    if not log:
        return
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    steps = [e["step"] for e in log]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("mean reward", "KL", "KL coefficient"))
    fig.add_trace(go.Scatter(x=steps, y=[e.get("reward_mean") for e in log], name="reward"), 1, 1)
    fig.add_trace(go.Scatter(x=steps, y=[e.get("kl") for e in log], name="KL"), 1, 2)
    fig.add_trace(go.Scatter(x=steps, y=[e.get("kl_coef") for e in log], name="KL coef"), 1, 3)
    fig.update_layout(
        title=f"{cfg.algo.upper()} on {cfg.model} ({cfg.reward} reward)",
        showlegend=False,
        height=380,
    )
    fig.update_xaxes(title_text="step")
    atomic_write_bytes(out / "curve.html", fig.to_html(include_plotlyjs=True).encode())


def save_tuned_model(out: Path, model: Any, tokenizer: Any, cfg: RLHFConfig) -> Path:
    """The tuned model, its tokenizer and rlhf.json in ``out/model`` (atomically)."""
    with atomic_dir(out / "model", overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(
            tmp / "rlhf.json", {"config": dataclasses.asdict(cfg), "base_model": cfg.model}
        )
        # A tiny model's corpora travel with it, so 'auto' data still finds its prefixes.
        for name in ("corpus_train.txt", "corpus_test.txt"):
            src = Path(cfg.model) / name
            if src.is_file():
                shutil.copyfile(src, tmp / name)
    return out / "model"


def finish(out: Path, cfg: RLHFConfig, log: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Write result.json and return it."""
    tail = log[-max(1, min(5, len(log))) :]
    result = {
        "model_dir": str(out / "model"),
        "base_model": cfg.model,
        "algo": cfg.algo,
        "reward": cfg.reward,
        "steps": len(log),
        # step 1 samples from the untouched base model: the reward before tuning
        "reward_first": log[0]["reward_mean"],
        # mean over the last (up to) 5 steps, to smooth batch-to-batch noise
        "reward_last": sum(e["reward_mean"] for e in tail) / len(tail),
        "kl_last": tail[-1].get("kl"),
        "seconds": seconds,
        "log": str(out / "log.json"),
        "curve": str(out / "curve.html"),
    }
    atomic_write_json(out / "result.json", result)
    return result


# --- PPO ----------------------------------------------------------------------------------------


def _run_ppo(
    cfg: RLHFConfig,
    out: Path,
    *,
    resume: bool,
    progress: bool,
    callback: StepCallback | None,
) -> dict[str, Any]:
    import torch
    from tqdm.auto import tqdm

    from rlsae.llm.models import load_model
    from rlsae.llm.ppo import PPOConfig, PPOTrainer, sample_batch

    t0 = time.time()
    reward_fn = make_reward_fn(cfg)  # a bad table or classifier fails before any model loads
    ckpt = out / "checkpoint"
    start, log, elapsed = 0, [], 0.0
    if resume and (ckpt / "state.json").is_file():
        state = read_json(ckpt / "state.json")
        start, log, elapsed = state["step"], state["log"], state.get("seconds", 0.0)
        policy, tokenizer = load_model(ckpt / "policy")
    else:
        policy, tokenizer = load_model(cfg.model)
    if resume and start >= cfg.steps and (out / "result.json").is_file():
        return read_json(out / "result.json")
    ref_model, _ = load_model(cfg.model)
    pool = prefix_pool(cfg, tokenizer, policy)

    torch.manual_seed(cfg.seed)
    trainer = PPOTrainer(
        policy,
        ref_model,
        tokenizer,
        reward_fn,
        PPOConfig(
            batch_size=cfg.batch_size,
            mini_batch_size=cfg.mini_batch_size,
            ppo_epochs=cfg.ppo_epochs,
            learning_rate=cfg.learning_rate,
            init_kl_coef=cfg.init_kl_coef,
            adaptive_kl=cfg.adaptive_kl,
            target_kl=cfg.target_kl,
            max_grad_norm=cfg.max_grad_norm,
            max_new_tokens=cfg.max_new_tokens,
        ),
    )
    if start:
        trainer.load_state_dict(torch.load(ckpt / "trainer_state.pt", weights_only=True))

    bar = tqdm(total=cfg.steps, initial=start, desc="ppo", disable=not progress, leave=False)
    for step in range(start, cfg.steps):
        step_seed = cfg.seed * 1_000_003 + step
        stats = trainer.step(sample_batch(pool, cfg.batch_size, step_seed), seed=step_seed)
        entry = {"step": step + 1, **stats}
        log.append(entry)
        bar.update(1)
        bar.set_postfix(reward=f"{stats['reward_mean']:.3f}", kl=f"{stats['kl']:.2f}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            _save_ppo_checkpoint(ckpt, trainer, tokenizer, done, log, elapsed + time.time() - t0)
            write_log(out, log, cfg)
        if callback is not None:
            callback(done, entry)
    bar.close()
    write_log(out, log, cfg)
    save_tuned_model(out, policy, tokenizer, cfg)
    return finish(out, cfg, log, elapsed + time.time() - t0)


def _save_ppo_checkpoint(
    ckpt: Path, trainer: Any, tokenizer: Any, step: int, log: list[dict[str, Any]], seconds: float
) -> None:
    import io

    import torch

    with atomic_dir(ckpt, overwrite=True) as tmp:
        trainer.policy.save_pretrained(tmp / "policy")
        tokenizer.save_pretrained(tmp / "policy")
        buf = io.BytesIO()
        torch.save(trainer.state_dict(), buf)
        (tmp / "trainer_state.pt").write_bytes(buf.getvalue())
        (tmp / "state.json").write_text(json.dumps({"step": step, "log": log, "seconds": seconds}))
