"""CLI verbs for the RLHF side: pretrain-tiny, rlhf, score."""

from __future__ import annotations

from pathlib import Path

import typer

from rlsae.commands._apps import JsonOpt, emit, llm_app

_THREADS_HELP = "Torch CPU threads (default: torch's choice; 1 is fastest on a busy machine)."


def _threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


@llm_app.command("pretrain-tiny")
def pretrain_tiny_cmd(
    out: Path = typer.Option(..., "--out", help="Model directory to create."),
    steps: int = typer.Option(800, "--steps", min=1, help="Optimiser steps."),
    layers: int = typer.Option(4, "--layers", min=1, help="Transformer blocks."),
    d_model: int = typer.Option(128, "--d-model", min=8, help="Residual width."),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing directory."),
    threads: int = typer.Option(None, "--threads", min=1, help=_THREADS_HELP),
    as_json: bool = JsonOpt,
) -> None:
    """Train the tiny offline Pythia (GPT-NeoX) on synthetic movie reviews; save in HF format."""
    from rlsae.llm.tiny import pretrain_tiny, read_tiny_meta

    _threads(threads)
    path = pretrain_tiny(
        out, seed=seed, overwrite=overwrite, steps=steps, n_layers=layers, d_model=d_model
    )
    meta = read_tiny_meta(path) or {}
    result = {
        "model_dir": str(path),
        "n_params": meta.get("n_params"),
        "vocab_size": meta.get("vocab_size"),
        "train_loss_last": meta.get("train_loss_last"),
        "test_loss": meta.get("test_loss"),
        "seconds": meta.get("seconds"),
    }
    emit(result, as_json)


@llm_app.command("rlhf")
def rlhf_cmd(
    model: str = typer.Option(
        "EleutherAI/pythia-70m", "--model", help="Base model: hub name or model directory."
    ),
    reward: str = typer.Option("utility", "--reward", help="utility (VADER table) or sentiment."),
    algo: str = typer.Option("ppo", "--algo", help="ppo (ours) or rloo (TRL)."),
    out: Path = typer.Option(..., "--out", help="Run directory (tuned model in OUT/model)."),
    steps: int = typer.Option(100, "--steps", min=1, help="Updates of --batch-size completions."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    lr: float = typer.Option(
        1e-6, "--lr", help="Learning rate (paper: 1e-6 for Pythia; ~1e-4 for the tiny model)."
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    mini_batch_size: int = typer.Option(16, "--mini-batch-size", min=1),
    init_kl_coef: float = typer.Option(
        0.5, "--kl-coef", help="Initial KL coef (PPO) / beta (RLOO)."
    ),
    prefix_tokens: int = typer.Option(8, "--prefix-tokens", min=1),
    max_new_tokens: int = typer.Option(24, "--max-new-tokens", min=1),
    data: str = typer.Option("auto", "--data", help="auto, imdb, or a .txt/.jsonl file."),
    table: str = typer.Option("vader", "--table", help="Utility table: vader or a TSV file."),
    classifier: str = typer.Option(
        "lvwerra/distilbert-imdb", "--classifier", help="Classifier for --reward sentiment."
    ),
    completion_only: bool = typer.Option(
        False, "--completion-only", help="Score the completion alone (paper: prefix + completion)."
    ),
    checkpoint_every: int = typer.Option(10, "--checkpoint-every", min=1),
    threads: int = typer.Option(None, "--threads", min=1, help=_THREADS_HELP),
    as_json: bool = JsonOpt,
) -> None:
    """RLHF-tune a language model with PPO (ours) or RLOO (TRL) on a reward; resumable."""
    from rlsae.llm.rlhf import rlhf_tune

    _threads(threads)
    result = rlhf_tune(
        model,
        out,
        resume=resume,
        reward=reward,
        algo=algo,
        steps=steps,
        seed=seed,
        learning_rate=lr,
        batch_size=batch_size,
        mini_batch_size=mini_batch_size,
        init_kl_coef=init_kl_coef,
        prefix_tokens=prefix_tokens,
        max_new_tokens=max_new_tokens,
        data=data,
        table=table,
        classifier=classifier,
        completion_only=completion_only,
        checkpoint_every=checkpoint_every,
    )
    emit(result, as_json)


@llm_app.command("score")
def score_cmd(
    model: str = typer.Option(..., "--model", help="Hub name or model directory."),
    prefixes: int = typer.Option(100, "--prefixes", min=1, help="Test prefixes (paper: 100)."),
    prefix_tokens: int = typer.Option(30, "--prefix-tokens", min=1, help="Tokens (paper: 30)."),
    max_new_tokens: int = typer.Option(30, "--max-new-tokens", min=1),
    seed: int = typer.Option(0, "--seed"),
    data: str = typer.Option("auto", "--data", help="auto, imdb, or a .txt/.jsonl file."),
    table: str = typer.Option("vader", "--table", help="Utility table: vader or a TSV file."),
    threads: int = typer.Option(None, "--threads", min=1, help=_THREADS_HELP),
    as_json: bool = JsonOpt,
) -> None:
    """Aggregate absolute utility of completions of test prefixes (the paper's Table 4)."""
    from rlsae.llm.score import ScoreConfig, score_model

    _threads(threads)
    cfg = ScoreConfig(
        prefixes=prefixes,
        prefix_tokens=prefix_tokens,
        max_new_tokens=max_new_tokens,
        seed=seed,
        data=data,
        table=table,
    )
    result = score_model(model, cfg)
    if as_json:
        emit(result, True)
        return
    emit(
        {
            k: result[k]
            for k in ("model", "n", "aggregate_abs_utility", "aggregate_utility", "mean_reward")
        },
        False,
    )
