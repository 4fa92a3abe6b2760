"""``rlsae llm``: tiny Pythia, RLHF, scoring, divergence, recording, explanations.

The options of a verb backed by a config (``pretrain-tiny``, ``rlhf``, ``score``, ``record``,
``explain``, ``score-explanations``) take their defaults and help texts from the config's dataclass fields
(:mod:`rlsae.llm.configs`), listed once per verb in a table ``parameter -> (field, flag)``.
The values go through :func:`rlsae.configs.from_mapping`, so the config's own ``validate``
refuses a bad value in one line naming the option, before torch is imported or anything is
written.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import typer

from rlsae.commands._apps import JsonOpt, config_option, emit, llm_app
from rlsae.configs import check_range, from_mapping, to_mapping
from rlsae.errors import RlsaeError
from rlsae.llm.causal_configs import MAX_ALPHA, AmplifyConfig, KLConfig, LMSteerConfig
from rlsae.llm.configs import (
    ExplainConfig,
    ExplanationScoreConfig,
    LMRecordConfig,
    RLHFConfig,
    ScoreConfig,
    TinyConfig,
    parse_layers,
)
from rlsae.llm.data import check_data_source
from rlsae.llm.models import resolve_model_ref
from rlsae.llm.rewards import UtilityTable
from rlsae.llm.tuning import preflight

Spec = dict[str, tuple[str, str]]
"""CLI parameter -> (dotted config field, option flag)."""

TINY_OPTIONS: Spec = {
    "steps": ("steps", "--steps"),
    "layers": ("n_layers", "--layers"),
    "d_model": ("d_model", "--d-model"),
    "seed": ("seed", "--seed"),
}
RLHF_OPTIONS: Spec = {
    "model": ("model", "--model"),
    "reward": ("reward", "--reward"),
    "algo": ("algo", "--algo"),
    "steps": ("steps", "--steps"),
    "seed": ("seed", "--seed"),
    "lr": ("ppo.learning_rate", "--lr"),
    "batch_size": ("ppo.batch_size", "--batch-size"),
    "mini_batch_size": ("ppo.mini_batch_size", "--mini-batch-size"),
    "init_kl_coef": ("ppo.init_kl_coef", "--kl-coef"),
    "ppo_epochs": ("ppo.ppo_epochs", "--ppo-epochs"),
    "max_new_tokens": ("ppo.max_new_tokens", "--max-new-tokens"),
    "prefix_tokens": ("prefix_tokens", "--prefix-tokens"),
    "rloo_k": ("rloo_k", "--rloo-k"),
    "data": ("data", "--data"),
    "table": ("table", "--table"),
    "classifier": ("classifier", "--classifier"),
    "completion_only": ("completion_only", "--completion-only"),
    "checkpoint_every": ("checkpoint_every", "--checkpoint-every"),
}
SCORE_OPTIONS: Spec = {
    "prefixes": ("prefixes", "--prefixes"),
    "prefix_tokens": ("prefix_tokens", "--prefix-tokens"),
    "max_new_tokens": ("max_new_tokens", "--max-new-tokens"),
    "seed": ("seed", "--seed"),
    "data": ("data", "--data"),
    "table": ("table", "--table"),
}
RECORD_OPTIONS: Spec = {
    "hook": ("hook", "--hook"),
    "prefixes": ("prefixes", "--prefixes"),
    "prefix_tokens": ("prefix_tokens", "--prefix-tokens"),
    "data": ("data", "--data"),
    "batch_size": ("batch_size", "--batch-size"),
    "dtype": ("dtype", "--dtype"),
    "seed": ("seed", "--seed"),
}
EXPLAIN_OPTIONS: Spec = {
    "method": ("method", "--method"),
    "base_url": ("base_url", "--base-url"),
    "explainer_model": ("model", "--explainer-model"),
    "samples": ("samples", "--samples"),
    "temperature": ("temperature", "--temperature"),
}
SCORE_EXPLANATIONS_OPTIONS: Spec = {
    "scorer": ("scorer", "--scorer"),
    "methods": ("methods", "--methods"),
    "n_activating": ("n_activating", "--n-activating"),
    "n_non_activating": ("n_non_activating", "--n-non-activating"),
    "window": ("window", "--window"),
    "seed": ("seed", "--seed"),
    "base_url": ("base_url", "--base-url"),
    "scorer_model": ("model", "--scorer-model"),
    "timeout": ("timeout", "--timeout"),
}
STEER_OPTIONS: Spec = {
    "ablate": ("ablate", "--ablate"),
    "prefixes": ("prefixes", "--prefixes"),
    "prefix_tokens": ("prefix_tokens", "--prefix-tokens"),
    "max_new_tokens": ("max_new_tokens", "--max-new-tokens"),
    "seed": ("seed", "--seed"),
    "data": ("data", "--data"),
    "reward": ("reward", "--reward"),
    "table": ("table", "--table"),
    "classifier": ("classifier", "--classifier"),
    "bootstrap": ("bootstrap", "--bootstrap"),
}
KL_OPTIONS: Spec = {
    "prefixes": ("prefixes", "--prefixes"),
    "prefix_tokens": ("prefix_tokens", "--prefix-tokens"),
    "data": ("data", "--data"),
    "top": ("top", "--top"),
    "seed": ("seed", "--seed"),
}
AMPLIFY_OPTIONS: Spec = {
    "alpha": ("alpha", "--alpha"),
    "prefixes": ("prefixes", "--prefixes"),
    "prefix_tokens": ("prefix_tokens", "--prefix-tokens"),
    "max_new_tokens": ("max_new_tokens", "--max-new-tokens"),
    "seed": ("seed", "--seed"),
    "data": ("data", "--data"),
    "table": ("table", "--table"),
}
CONFIG_OPTIONS: dict[str, tuple[type, Spec]] = {
    "pretrain-tiny": (TinyConfig, TINY_OPTIONS),
    "rlhf": (RLHFConfig, RLHF_OPTIONS),
    "score": (ScoreConfig, SCORE_OPTIONS),
    "record": (LMRecordConfig, RECORD_OPTIONS),
    "explain": (ExplainConfig, EXPLAIN_OPTIONS),
    "score-explanations": (ExplanationScoreConfig, SCORE_EXPLANATIONS_OPTIONS),
}
"""Each config-backed verb: its config class and its options (checked by the tests;
``steer``'s, ``kl``'s and ``amplify``'s tables by tests/llm/test_causal_lm.py and
tests/llm/test_diffing.py)."""

_STEER_ALPHA = (
    "Multiple of the feature's decoder row W_dec[F] added at the hook (0: no change; negative "
    "pushes the other way; |alpha| <= 1e6)."
)
_THREADS_HELP = "Torch CPU threads (default: torch's choice; 1 is fastest on a busy machine)."


def field_owner(cls: type, dotted: str) -> tuple[type, str]:
    """The dataclass that declares ``dotted`` (``ppo.batch_size`` -> PPOConfig) and the name."""
    *parents, name = dotted.split(".")
    for part in parents:
        cls = typing.get_type_hints(cls)[part]
    return cls, name


def _opt(cls: type, spec: Spec, param: str) -> Any:
    """A typer option whose default and help are those of the config field behind ``param``."""
    dotted, flag = spec[param]
    owner, name = field_owner(cls, dotted)
    return config_option(owner, name, flag)


def build_config(cls: type, spec: Spec, values: dict[str, Any], where: str) -> Any:
    """The config from the CLI values; a bad value is one line naming its option."""
    data: dict[str, Any] = {}
    for param, (dotted, _) in spec.items():
        *parents, name = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = values[param]
    try:
        return from_mapping(cls, data, where)
    except RlsaeError as e:
        msg = str(e)
        for dotted, flag in spec.values():
            if msg.startswith(f"{where}: {dotted}: "):
                raise RlsaeError(f"{flag}: {msg[len(where) + len(dotted) + 4 :]}") from None
        raise


def _check_threads(threads: int | None) -> None:
    if threads is not None:
        check_range("--threads", "", threads, 1)


@llm_app.command("pretrain-tiny")
def pretrain_tiny_cmd(
    out: Path = typer.Option(..., "--out", help="Model directory to create."),
    steps: int = _opt(TinyConfig, TINY_OPTIONS, "steps"),
    layers: int = _opt(TinyConfig, TINY_OPTIONS, "layers"),
    d_model: int = _opt(TinyConfig, TINY_OPTIONS, "d_model"),
    seed: int = _opt(TinyConfig, TINY_OPTIONS, "seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing directory."),
    threads: int = typer.Option(None, "--threads", help=_THREADS_HELP),
    as_json: bool = JsonOpt,
) -> None:
    """Train the tiny offline Pythia (GPT-NeoX) on synthetic movie reviews; save in HF format."""
    cfg = build_config(TinyConfig, TINY_OPTIONS, locals(), "llm pretrain-tiny")
    _check_threads(threads)
    if out.exists() and not overwrite:
        raise RlsaeError(f"{out} already exists; pass --overwrite or choose another --out")
    from rlsae.llm.tiny import pretrain_tiny, read_tiny_meta
    from rlsae.threads import torch_threads

    with torch_threads(threads):
        path = pretrain_tiny(out, overwrite=overwrite, **to_mapping(cfg))
    meta = read_tiny_meta(path) or {}
    keys = ("n_params", "vocab_size", "train_loss_last", "test_loss", "seconds")
    emit({"model_dir": str(path), **{k: meta.get(k) for k in keys}}, as_json)


@llm_app.command("rlhf")
def rlhf_cmd(
    model: str = _opt(RLHFConfig, RLHF_OPTIONS, "model"),
    reward: str = _opt(RLHFConfig, RLHF_OPTIONS, "reward"),
    algo: str = _opt(RLHFConfig, RLHF_OPTIONS, "algo"),
    out: Path = typer.Option(..., "--out", help="Run directory (tuned model in OUT/model)."),
    steps: int = _opt(RLHFConfig, RLHF_OPTIONS, "steps"),
    seed: int = _opt(RLHFConfig, RLHF_OPTIONS, "seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    lr: float = _opt(RLHFConfig, RLHF_OPTIONS, "lr"),
    batch_size: int = _opt(RLHFConfig, RLHF_OPTIONS, "batch_size"),
    mini_batch_size: int = _opt(RLHFConfig, RLHF_OPTIONS, "mini_batch_size"),
    init_kl_coef: float = _opt(RLHFConfig, RLHF_OPTIONS, "init_kl_coef"),
    ppo_epochs: int = _opt(RLHFConfig, RLHF_OPTIONS, "ppo_epochs"),
    prefix_tokens: int = _opt(RLHFConfig, RLHF_OPTIONS, "prefix_tokens"),
    max_new_tokens: int = _opt(RLHFConfig, RLHF_OPTIONS, "max_new_tokens"),
    rloo_k: int = _opt(RLHFConfig, RLHF_OPTIONS, "rloo_k"),
    data: str = _opt(RLHFConfig, RLHF_OPTIONS, "data"),
    table: str = _opt(RLHFConfig, RLHF_OPTIONS, "table"),
    classifier: str = _opt(RLHFConfig, RLHF_OPTIONS, "classifier"),
    completion_only: bool = _opt(RLHFConfig, RLHF_OPTIONS, "completion_only"),
    checkpoint_every: int = _opt(RLHFConfig, RLHF_OPTIONS, "checkpoint_every"),
    threads: int = typer.Option(None, "--threads", help=_THREADS_HELP),
    as_json: bool = JsonOpt,
) -> None:
    """RLHF-tune a language model with PPO (ours) or RLOO (TRL) on a reward; resumable."""
    cfg = build_config(RLHFConfig, RLHF_OPTIONS, locals(), "llm rlhf")
    _check_threads(threads)
    preflight(cfg, out, resume)  # refuses bad input before torch loads
    from rlsae.llm.rlhf import run_rlhf
    from rlsae.threads import torch_threads

    with torch_threads(threads):
        result = run_rlhf(cfg, out, resume=resume)
    emit(result.to_json(), as_json)


@llm_app.command("score")
def score_cmd(
    model: str = typer.Option(..., "--model", help="Hub name or model directory."),
    prefixes: int = _opt(ScoreConfig, SCORE_OPTIONS, "prefixes"),
    prefix_tokens: int = _opt(ScoreConfig, SCORE_OPTIONS, "prefix_tokens"),
    max_new_tokens: int = _opt(ScoreConfig, SCORE_OPTIONS, "max_new_tokens"),
    seed: int = _opt(ScoreConfig, SCORE_OPTIONS, "seed"),
    data: str = _opt(ScoreConfig, SCORE_OPTIONS, "data"),
    table: str = _opt(ScoreConfig, SCORE_OPTIONS, "table"),
    threads: int = typer.Option(None, "--threads", help=_THREADS_HELP),
    as_json: bool = JsonOpt,
) -> None:
    """Aggregate absolute utility of completions of test prefixes (the paper's Table 4)."""
    cfg = build_config(ScoreConfig, SCORE_OPTIONS, locals(), "llm score")
    _check_threads(threads)

    resolve_model_ref(model)
    check_data_source(cfg.data)
    UtilityTable.load(cfg.table)  # a bad table is refused before torch loads
    from rlsae.llm.score import score_model
    from rlsae.threads import torch_threads

    with torch_threads(threads):
        result = score_model(model, cfg)
    emit(result.to_json() if as_json else result.summary(), as_json)


@llm_app.command("divergence")
def divergence_cmd(
    base: str = typer.Option(..., "--base", help="Base model: hub name or model directory."),
    tuned: str = typer.Option(..., "--tuned", help="Tuned model: hub name or model directory."),
    top_n: int = typer.Option(None, "--top-n", help="Only list the N most divergent."),
    html: Path = typer.Option(None, "--html", help="Write the per-layer bar chart here."),
    as_json: bool = JsonOpt,
) -> None:
    """Rank layers by parameter divergence Δ = Σ‖W_tuned − W_base‖₂ (high to low)."""
    if top_n is not None:
        check_range("--top-n", "", top_n, 1)

    resolve_model_ref(base)
    resolve_model_ref(tuned)
    from rlsae.llm.divergence import layer_divergence, write_divergence_html

    res = layer_divergence(base, tuned).head(top_n)
    out = res.to_json()
    if html is not None:
        out["html"] = str(write_divergence_html(res, html, top_n))
    lines = [f"{'layer':>5}  divergence"]
    lines += [f"{r.layer:>5}  {r.divergence:.6g}" for r in res.layers]
    lines.append(f"embeddings {res.embeddings:.6g}   final_norm {res.final_norm:.6g}")
    if "html" in out:
        lines.append(f"chart: {out['html']}")
    emit(out, as_json, "\n".join(lines))


@llm_app.command("record")
def record_cmd(
    model: str = typer.Option(..., "--model", help="Hub name or model directory."),
    layers: str = typer.Option(..., "--layers", help="Comma-separated block indices, e.g. 3,4."),
    out: Path = typer.Option(..., "--out", help="Parent dir; one store per layer inside."),
    hook: str = _opt(LMRecordConfig, RECORD_OPTIONS, "hook"),
    prefixes: int = _opt(LMRecordConfig, RECORD_OPTIONS, "prefixes"),
    prefix_tokens: int = _opt(LMRecordConfig, RECORD_OPTIONS, "prefix_tokens"),
    data: str = _opt(LMRecordConfig, RECORD_OPTIONS, "data"),
    batch_size: int = _opt(LMRecordConfig, RECORD_OPTIONS, "batch_size"),
    dtype: str = _opt(LMRecordConfig, RECORD_OPTIONS, "dtype"),
    source: str = typer.Option(None, "--source", help="Source name in the stores' meta."),
    seed: int = _opt(LMRecordConfig, RECORD_OPTIONS, "seed"),
    device: str = typer.Option("cpu", "--device"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing stores."),
    as_json: bool = JsonOpt,
) -> None:
    """Record a hook of some layers through TransformerLens into activation stores."""
    cfg = build_config(LMRecordConfig, RECORD_OPTIONS, locals(), "llm record")

    layer_list = parse_layers(layers)
    resolve_model_ref(model)
    if cfg.data is not None:
        check_data_source(cfg.data)
    from rlsae.llm.record import record_lm_activations
    from rlsae.sae.store import ActivationStore

    paths = record_lm_activations(
        model, layer_list, out, cfg, source=source, device=device, overwrite=overwrite
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
    method: str = _opt(ExplainConfig, EXPLAIN_OPTIONS, "method"),
    base_url: str = _opt(ExplainConfig, EXPLAIN_OPTIONS, "base_url"),
    explainer_model: str = _opt(ExplainConfig, EXPLAIN_OPTIONS, "explainer_model"),
    samples: int = _opt(ExplainConfig, EXPLAIN_OPTIONS, "samples"),
    temperature: float = _opt(ExplainConfig, EXPLAIN_OPTIONS, "temperature"),
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
    cfg = build_config(ExplainConfig, EXPLAIN_OPTIONS, locals(), "llm explain")

    feature_list = parse_layers(features, what="--features")
    if layer is not None:  # a layer index; checked against the SAE's hook once it is read
        check_range("--layer", "", layer, 0)
    utility_table = UtilityTable.load(table)
    from rlsae.llm.explain import explain_features

    res = explain_features(
        sae,
        acts,
        feature_list,
        cfg=cfg,
        out=out,
        table=utility_table,
        layer=layer,
        redo=redo,
        progress=True,
    )
    feats = {
        str(k): {"explanation": v.explanation, "utility": v.utility, "method": v.method}
        for k, v in res.features.items()
    }
    lines = [f"{k:>6}  {v['utility']:5.2f}  {v['explanation']}" for k, v in feats.items()]
    emit(
        {"features": feats, "out": str(out or Path(sae) / "explanations.json")},
        as_json,
        "\n".join(lines),
    )


@llm_app.command("score-explanations")
def score_explanations_cmd(
    sae: Path = typer.Option(..., "--sae", help="SAE directory (its explanations.json)."),
    acts: Path = typer.Option(..., "--acts", help="The LM activation store it was trained on."),
    features: str = typer.Option(None, "--features", help="Feature indices (default: all)."),
    scorer: str = _opt(ExplanationScoreConfig, SCORE_EXPLANATIONS_OPTIONS, "scorer"),
    methods: str = _opt(ExplanationScoreConfig, SCORE_EXPLANATIONS_OPTIONS, "methods"),
    n_activating: int = _opt(ExplanationScoreConfig, SCORE_EXPLANATIONS_OPTIONS, "n_activating"),
    n_non_activating: int = _opt(
        ExplanationScoreConfig, SCORE_EXPLANATIONS_OPTIONS, "n_non_activating"
    ),
    window: int = _opt(ExplanationScoreConfig, SCORE_EXPLANATIONS_OPTIONS, "window"),
    seed: int = _opt(ExplanationScoreConfig, SCORE_EXPLANATIONS_OPTIONS, "seed"),
    base_url: str = _opt(ExplanationScoreConfig, SCORE_EXPLANATIONS_OPTIONS, "base_url"),
    scorer_model: str = _opt(ExplanationScoreConfig, SCORE_EXPLANATIONS_OPTIONS, "scorer_model"),
    timeout: float = _opt(ExplanationScoreConfig, SCORE_EXPLANATIONS_OPTIONS, "timeout"),
    explanations: Path = typer.Option(
        None, "--explanations", help="Default: SAE_DIR/explanations.json."
    ),
    redo: bool = typer.Option(False, "--redo", help="Score again features already scored."),
    as_json: bool = JsonOpt,
) -> None:
    """Score explanations on held-out contexts: detection, fuzzing, simulation.

    The scores are stored in the explanations file. --scorer offline is a token-set stand-in
    (not a language model); --scorer llm uses an OpenAI-compatible endpoint with the key from
    OPENAI_API_KEY (never written).
    """
    cfg = build_config(
        ExplanationScoreConfig, SCORE_EXPLANATIONS_OPTIONS, locals(), "llm score-explanations"
    )
    feature_list = parse_layers(features, what="--features") if features else None
    expl = explanations if explanations is not None else Path(sae) / "explanations.json"
    if not Path(expl).is_file():  # before torch loads with the scorer: a fast one-line error
        raise RlsaeError(f"no explanations at {expl}; run `rlsae llm explain` first")
    from rlsae.llm.scoring import score_explanations, scorer_label

    res = score_explanations(
        sae,
        acts,
        feature_list,
        cfg=cfg,
        explanations=explanations,
        redo=redo,
        progress=True,
    )
    feats: dict[str, Any] = {}
    for k, v in res.features.items():
        if v.scores is not None and (feature_list is None or int(k) in feature_list):
            feats[k] = {"explanation": v.explanation, **to_mapping(v.scores)}
    scorers = sorted({f["scorer"] for f in feats.values()})
    lines = [f"scorer: {scorer_label(s)}" for s in scorers]
    lines.append(f"{'feature':>7}  detect  fuzz    simul   explanation")
    for k, f in feats.items():
        vals = "  ".join(
            "  --  " if f[m] is None else f"{f[m]:6.3f}"
            for m in ("detection", "fuzzing", "simulation")
        )
        lines.append(f"{k:>7}  {vals}  {f['explanation']}")
    out = str(explanations or Path(sae) / "explanations.json")
    emit(
        {"features": feats, "scorers": [scorer_label(s) for s in scorers], "out": out},
        as_json,
        "\n".join(lines),
    )


def _sae_width(sae: Path) -> int | None:
    """The SAE's d_sae from its cfg.json without torch (None if unreadable: load_sae says why)."""
    import json

    try:
        return int(json.loads((sae / "cfg.json").read_text())["d_sae"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@llm_app.command("steer")
def steer_cmd(
    model: str = typer.Option(..., "--model", help="Hub name or model directory."),
    sae: Path = typer.Option(..., "--sae", help="SAE directory (trained on a hook of the model)."),
    feature: int = typer.Option(..., "--feature", help="The feature whose direction is added."),
    alpha: float | None = typer.Option(None, "--alpha", help=_STEER_ALPHA),
    ablate: bool = _opt(LMSteerConfig, STEER_OPTIONS, "ablate"),
    prefixes: int = _opt(LMSteerConfig, STEER_OPTIONS, "prefixes"),
    prefix_tokens: int = _opt(LMSteerConfig, STEER_OPTIONS, "prefix_tokens"),
    max_new_tokens: int = _opt(LMSteerConfig, STEER_OPTIONS, "max_new_tokens"),
    seed: int = _opt(LMSteerConfig, STEER_OPTIONS, "seed"),
    data: str = _opt(LMSteerConfig, STEER_OPTIONS, "data"),
    reward: str = _opt(LMSteerConfig, STEER_OPTIONS, "reward"),
    table: str = _opt(LMSteerConfig, STEER_OPTIONS, "table"),
    classifier: str = _opt(LMSteerConfig, STEER_OPTIONS, "classifier"),
    bootstrap: int = _opt(LMSteerConfig, STEER_OPTIONS, "bootstrap"),
    show: int = typer.Option(3, "--show", help="Completions printed (--json has them all)."),
    threads: int = typer.Option(None, "--threads", help=_THREADS_HELP),
    as_json: bool = JsonOpt,
) -> None:
    """Add alpha x a feature's decoder direction at the SAE's hook (or --ablate: remove the
    feature) while sampling completions; the mean reward steered vs unsteered (same prefixes
    and seed) with a bootstrap CI."""
    if alpha is not None:
        check_range("--alpha", "", alpha, -MAX_ALPHA, MAX_ALPHA)
    cfg = build_config(LMSteerConfig, STEER_OPTIONS, locals(), "llm steer")
    _check_threads(threads)
    check_range("--show", "", show, 0, 100_000)
    check_range("--feature", "", feature, 0)
    if (alpha is None) == (not ablate):
        raise RlsaeError("give --alpha A (add alpha x the feature's direction) or --ablate, one")
    cfg.alpha = alpha or 0.0
    if not sae.is_dir():
        raise RlsaeError(f"SAE directory {sae} not found")
    width = _sae_width(sae)
    if width is not None and feature >= width:
        raise RlsaeError(
            f"--feature {feature} is out of range; the SAE has features 0..{width - 1}"
        )
    resolve_model_ref(model)
    check_data_source(cfg.data)
    if cfg.reward == "utility":
        UtilityTable.load(cfg.table)  # a bad table is refused before torch loads
    else:
        resolve_model_ref(cfg.classifier)
    from rlsae.llm.steer import steer_model
    from rlsae.threads import torch_threads

    with torch_threads(threads):
        result = steer_model(model, sae, feature, cfg)
    emit(result.to_json(), as_json, result.summary(show))


@llm_app.command("kl")
def kl_cmd(
    base: str = typer.Option(..., "--base", help="Base model: hub name or model directory."),
    tuned: str = typer.Option(..., "--tuned", help="Tuned model: hub name or model directory."),
    prefixes: int = _opt(KLConfig, KL_OPTIONS, "prefixes"),
    prefix_tokens: int = _opt(KLConfig, KL_OPTIONS, "prefix_tokens"),
    data: str = _opt(KLConfig, KL_OPTIONS, "data"),
    top: int = _opt(KLConfig, KL_OPTIONS, "top"),
    seed: int = _opt(KLConfig, KL_OPTIONS, "seed"),
    threads: int = typer.Option(None, "--threads", help=_THREADS_HELP),
    as_json: bool = JsonOpt,
) -> None:
    """Per-token KL(tuned || base) of the next-token distributions on test documents, and the
    positions where they differ most."""
    cfg = build_config(KLConfig, KL_OPTIONS, locals(), "llm kl")
    _check_threads(threads)
    resolve_model_ref(base)
    resolve_model_ref(tuned)
    if cfg.data is not None:
        check_data_source(cfg.data)
    from rlsae.llm.diffing import token_kl
    from rlsae.threads import torch_threads

    with torch_threads(threads):
        result = token_kl(base, tuned, cfg)
    emit(result.to_json(), as_json, result.summary())


@llm_app.command("amplify")
def amplify_cmd(
    base: str = typer.Option(..., "--base", help="Base model: hub name or model directory."),
    tuned: str = typer.Option(..., "--tuned", help="Tuned model: hub name or model directory."),
    alpha: float = _opt(AmplifyConfig, AMPLIFY_OPTIONS, "alpha"),
    prefixes: int = _opt(AmplifyConfig, AMPLIFY_OPTIONS, "prefixes"),
    prefix_tokens: int = _opt(AmplifyConfig, AMPLIFY_OPTIONS, "prefix_tokens"),
    max_new_tokens: int = _opt(AmplifyConfig, AMPLIFY_OPTIONS, "max_new_tokens"),
    seed: int = _opt(AmplifyConfig, AMPLIFY_OPTIONS, "seed"),
    data: str = _opt(AmplifyConfig, AMPLIFY_OPTIONS, "data"),
    table: str = _opt(AmplifyConfig, AMPLIFY_OPTIONS, "table"),
    show: int = typer.Option(3, "--show", help="Completions printed (--json has them all)."),
    threads: int = typer.Option(None, "--threads", help=_THREADS_HELP),
    as_json: bool = JsonOpt,
) -> None:
    """Sample from logits_tuned + alpha (logits_tuned - logits_base) and score the completions
    with the utility table, beside the tuned model's own (same prefixes and seed)."""
    cfg = build_config(AmplifyConfig, AMPLIFY_OPTIONS, locals(), "llm amplify")
    _check_threads(threads)
    check_range("--show", "", show, 0, 100_000)
    resolve_model_ref(base)
    resolve_model_ref(tuned)
    check_data_source(cfg.data)
    UtilityTable.load(cfg.table)  # a bad table is refused before torch loads
    from rlsae.llm.diffing import amplify
    from rlsae.threads import torch_threads

    with torch_threads(threads):
        result = amplify(base, tuned, cfg)
    emit(result.to_json(), as_json, result.summary(show))
