"""``rlsae sae``: train and evaluate sparse autoencoders."""

from __future__ import annotations

from pathlib import Path

import typer

from rlsae.commands._apps import JsonOpt, emit, sae_app
from rlsae.errors import RlsaeError


@sae_app.command("train")
def sae_train(
    acts: Path = typer.Option(..., "--acts", help="Activation store to train on."),
    out: Path = typer.Option(..., "--out", help="New SAE directory."),
    arch: str = typer.Option("topk", "--arch", help="topk (TopK + AuxK) or relu (ReLU + L1)."),
    d_sae: int | None = typer.Option(None, "--d-sae", help="Number of latents."),
    expansion: float | None = typer.Option(
        None, "--expansion", help="Latents per input dimension (default 4)."
    ),
    k: int = typer.Option(32, "--k", help="TopK: active latents per row."),
    l1: float = typer.Option(
        1e-3, "--l1", help="ReLU: L1 coefficient (penalty sum_i f_i ||d_i||)."
    ),
    tied: bool = typer.Option(False, "--tied", help="Tie the encoder to the decoder's transpose."),
    aux_k: int | None = typer.Option(
        None, "--aux-k", help="TopK: AuxK latents (default d_in/2; 0 = off)."
    ),
    dead_rows: int = typer.Option(
        1_000_000, "--dead-rows", help="Rows without firing before a latent counts as dead."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Optimiser steps."),
    epochs: float | None = typer.Option(
        None, "--epochs", help="Passes over the store (default 1)."
    ),
    batch_size: int = typer.Option(4096, "--batch-size", help="Rows per step."),
    lr: float | None = typer.Option(
        None, "--lr", help="Learning rate (default: 2e-4/sqrt(d_sae/16384) topk, 1e-3 relu)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the initial weights and the data order."),
    checkpoint_every: int = typer.Option(
        200, "--checkpoint-every", help="Steps between checkpoints."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run from its last checkpoint."
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="torch CPU threads (default: torch's choice)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Train a TopK or ReLU+L1 SAE; progress on stderr, checkpoints, resumable."""
    import json

    from rlsae.sae.store import ActivationStore
    from rlsae.sae.train import TrainConfig, train_sae

    if d_sae is not None and expansion is not None:
        raise RlsaeError("give --d-sae or --expansion, not both")
    if steps is not None and epochs is not None:
        raise RlsaeError("give --steps or --epochs, not both")
    if arch not in ("topk", "relu"):
        raise RlsaeError(f"--arch must be topk or relu, not {arch!r}")
    cfg = TrainConfig(
        arch=arch,  # type: ignore[arg-type]
        d_sae=d_sae,
        expansion=expansion if expansion is not None else 4.0,
        k=k,
        l1=l1,
        tied=tied,
        aux_k=aux_k,
        dead_rows=dead_rows,
        steps=steps,
        epochs=epochs if epochs is not None else 1.0,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        checkpoint_every=checkpoint_every,
    )
    if threads is not None:
        if threads < 1:
            raise RlsaeError("--threads must be at least 1")
        import torch

        torch.set_num_threads(threads)
    store = ActivationStore(acts)
    cfg.resolve(store.d_in)  # bad settings (k > d_sae, ...) fail before anything is written
    train_sae(store, out, cfg, resume=resume)
    info = json.loads((out / "training.json").read_text())
    emit(
        {"out": str(out), "steps": info["steps"], "rows_seen": info["rows_seen"], **info["final"]},
        as_json,
    )


@sae_app.command("eval")
def sae_eval(
    sae_dir: Path = typer.Option(..., "--sae", help="SAE directory (rlsae or SAELens format)."),
    acts: Path = typer.Option(..., "--acts", help="Activation store to evaluate on."),
    batch_size: int = typer.Option(4096, "--batch-size", help="Rows per batch."),
    max_rows: int | None = typer.Option(None, "--max-rows", help="Evaluate only the first N rows."),
    save_stats: bool = typer.Option(
        True,
        "--save-stats/--no-save-stats",
        help="Write feature_stats.safetensors into the SAE dir.",
    ),
    any_hook: bool = typer.Option(
        False, "--any-hook", help="Allow a store recorded at a different hook than the SAE's."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Reconstruction (FVU, MSE, explained variance), L0, dead and dense latents over a store."""
    from rlsae.sae.io import load_sae
    from rlsae.sae.metrics import evaluate_sae, json_metrics, save_feature_stats
    from rlsae.sae.store import ActivationStore

    sae = load_sae(sae_dir)
    store = ActivationStore(acts)
    result = evaluate_sae(
        sae, store, batch_size=batch_size, max_rows=max_rows, check_hook=not any_hook, progress=True
    )
    out = json_metrics(result)
    if save_stats:
        out["feature_stats"] = str(save_feature_stats(result, sae_dir))
    emit(out, as_json)
