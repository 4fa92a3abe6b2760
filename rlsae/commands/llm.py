"""``rlsae llm``: tiny Pythia, RLHF, scoring, divergence, recording, explanations."""

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
        ppo={
            "learning_rate": lr,
            "batch_size": batch_size,
            "mini_batch_size": mini_batch_size,
            "init_kl_coef": init_kl_coef,
            "max_new_tokens": max_new_tokens,
        },
        prefix_tokens=prefix_tokens,
        data=data,
        table=table,
        classifier=classifier,
        completion_only=completion_only,
        checkpoint_every=checkpoint_every,
    )
    emit(result.to_json(), as_json)


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


@llm_app.command("divergence")
def divergence_cmd(
    base: str = typer.Option(..., "--base", help="Base model: hub name or model directory."),
    tuned: str = typer.Option(..., "--tuned", help="Tuned model: hub name or model directory."),
    top_n: int = typer.Option(None, "--top-n", min=1, help="Only list the N most divergent."),
    html: Path = typer.Option(None, "--html", help="Write the per-layer bar chart here."),
    as_json: bool = JsonOpt,
) -> None:
    """Rank layers by parameter divergence Δ = Σ‖W_tuned − W_base‖₂ (high to low)."""
    from rlsae.llm.divergence import layer_divergence, write_divergence_html

    res = layer_divergence(base, tuned)
    out = res.to_json(top_n)
    if html is not None:
        out["html"] = str(write_divergence_html(res, html, top_n))
    lines = [f"{'layer':>5}  divergence"]
    lines += [f"{r['layer']:>5}  {r['divergence']:.6g}" for r in out["layers"]]
    lines.append(f"embeddings {out['embeddings']:.6g}   final_norm {out['final_norm']:.6g}")
    if "html" in out:
        lines.append(f"chart: {out['html']}")
    emit(out, as_json, "\n".join(lines))


@llm_app.command("record")
def record_cmd(
    model: str = typer.Option(..., "--model", help="Hub name or model directory."),
    layers: str = typer.Option(..., "--layers", help="Comma-separated block indices, e.g. 3,4."),
    out: Path = typer.Option(..., "--out", help="Parent dir; one store per layer inside."),
    hook: str = typer.Option("resid_post", "--hook", help="resid_post, mlp_out, attn_out, ..."),
    prefixes: int = typer.Option(1000, "--prefixes", min=1, help="Documents to run."),
    prefix_tokens: int = typer.Option(64, "--prefix-tokens", min=1, help="Tokens per document."),
    data: Path = typer.Option(None, "--data", help="Text/JSONL file; default IMDb test split."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    dtype: str = typer.Option("float32", "--dtype", help="float32 or float16."),
    source: str = typer.Option(None, "--source", help="Source name in the stores' meta."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing stores."),
    as_json: bool = JsonOpt,
) -> None:
    """Record a hook of some layers through TransformerLens into activation stores."""
    from rlsae.llm.record import record_lm_activations
    from rlsae.sae.store import ActivationStore

    paths = record_lm_activations(
        model,
        layers,
        out,
        hook=hook,
        prefixes=prefixes,
        prefix_tokens=prefix_tokens,
        data=data,
        batch_size=batch_size,
        dtype=dtype,
        seed=seed,
        source=source,
        device=device,
        overwrite=overwrite,
    )
    stores = []
    for p in paths:
        s = ActivationStore(p)
        stores.append({"path": str(p), "hook": s.hook, "rows": s.rows, "d_in": s.d_in})
    emit({"stores": stores}, as_json, "\n".join(f"{s['path']}  rows={s['rows']}" for s in stores))


@llm_app.command("explain")
def explain_cmd(
    sae: Path = typer.Option(..., "--sae", help="SAE directory."),
    acts: Path = typer.Option(..., "--acts", help="The LM activation store it was trained on."),
    features: str = typer.Option(..., "--features", help="Comma-separated feature indices."),
    method: str = typer.Option("offline", "--method", help="offline or llm."),
    base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint base URL."),
    explainer_model: str = typer.Option(None, "--explainer-model", help="Chat model name."),
    samples: int = typer.Option(1, "--samples", min=1, help="LLM explanations per feature."),
    temperature: float = typer.Option(0.0, "--temperature", help="LLM sampling temperature."),
    layer: int = typer.Option(None, "--layer", help="Refuse an SAE of another layer."),
    table: str = typer.Option(None, "--table", help="Utility table TSV (default VADER)."),
    out: Path = typer.Option(None, "--out", help="Default: SAE_DIR/explanations.json."),
    redo: bool = typer.Option(False, "--redo", help="Explain again features already done."),
    as_json: bool = JsonOpt,
) -> None:
    """Explain SAE features from their top contexts (offline token lift, or an LLM endpoint).

    The API key comes from OPENAI_API_KEY; base URL and model also from
    RLSAE_EXPLAINER_BASE_URL / RLSAE_EXPLAINER_MODEL.
    """
    from rlsae.llm.explain import ExplainConfig, explain_features
    from rlsae.llm.record import parse_layers
    from rlsae.llm.rewards import UtilityTable

    cfg = ExplainConfig(
        method=method,
        base_url=base_url,
        model=explainer_model,
        samples=samples,
        temperature=temperature,
    )
    res = explain_features(
        sae,
        acts,
        parse_layers(features),
        cfg=cfg,
        out=out,
        table=UtilityTable.load(table),
        layer=layer,
        redo=redo,
        progress=True,
    )
    feats = {
        k: {"explanation": v["explanation"], "utility": v["utility"], "method": v["method"]}
        for k, v in res["features"].items()
    }
    lines = [f"{k:>6}  {v['utility']:5.2f}  {v['explanation']}" for k, v in feats.items()]
    emit(
        {"features": feats, "out": str(out or Path(sae) / "explanations.json")},
        as_json,
        "\n".join(lines),
    )
