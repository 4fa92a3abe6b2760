"""CLI verbs of the implicit-reward-model study: divergence, record, explain, utility, pipeline."""

from __future__ import annotations

from pathlib import Path

import typer

from rlsae.commands._apps import JsonOpt, emit, llm_app, pipeline_app


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
    from rlsae.analysis.explain import ExplainConfig, explain_features
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


@pipeline_app.command("llm")
def pipeline_llm_cmd(
    preset: str = typer.Option("demo", "--preset", help="smoke, demo, paper or a YAML file."),
    out: Path = typer.Option(..., "--out", help="Run directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    as_json: bool = JsonOpt,
) -> None:
    """The implicit-reward-model study: tune, divergence, SAE pairs, MMCS, explanations, tables."""
    from rlsae.llm.pipeline import run_llm_pipeline

    res = run_llm_pipeline(out, preset, resume=resume)
    if "runs" in res:
        human = "\n".join(f"{r['model']}: {r['run_dir']}" for r in res["runs"])
        human += f"\ntables: {res['utility_md']}"
    else:
        human = (
            f"run: {res['run_dir']}\nlayers (most divergent first): {res['layers']}\n"
            f"MMCS(small, large): {res['mmcs']}\n"
            f"Table 3 (features' summed |utility|): {res['table3']}\n"
            f"Table 4 (completions' aggregate |utility|): {res['table4']}\n"
            f"tables: {res['utility_html']}"
        )
    emit(res, as_json, human)
