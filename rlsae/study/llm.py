"""The implicit-reward-model study (the paper's Algorithm 1) declared on the study engine.

The config is :class:`~rlsae.study.llm_config.LLMStudyConfig`; the presets ``smoke``, ``demo``
and ``paper`` are in :mod:`rlsae.study.presets`. The unit is a base model; for each, in its
directory (the run directory itself for one model, ``OUT/<label>/`` for several)::

    models/base/            base model (the tiny model is pretrained here; hub models stay names)
    rlhf/                   the RLHF run (rlsae.llm.rlhf.run_rlhf): log, curve, checkpoint
    models/tuned/           the tuned model (hard links to rlhf/model)
    analysis/divergence.json, divergence.html      Δ per layer, the paper's Figure 3
    acts/{base,tuned}/blocks.L.hook_resid_post/    activations of the top-n divergent layers
    saes/{base,tuned}/blocks.L.hook_resid_post/{large,small}/   the SAE pairs
    analysis/llm_shared_features.json              MMCS per pair, top-k shared features
    saes/.../small/explanations.json               explanations of the shared features
    analysis/score_{base,tuned}.json               completions' utility (Table 4)
    analysis/utility.json, utility.html, utility.md   Tables 3 and 4
    analysis/report.html                           everything on one page

The stages per model: ``pretrain``, ``rlhf``, ``divergence``, ``record``, ``saes``, ``mmcs``,
``explain``, ``score``, ``utility``, ``report``; then once per study ``tables`` (with several
models: the combined ``OUT/analysis/utility.md`` and ``summary.json``). Markers:
``OUT/analysis/stages/model/<label>/STAGE.json``; ``OUT/run.json`` owns the directory.

Each stage imports the parts it drives inside its function: they load torch, transformers or
TransformerLens, which a finished study resumed (or a refused config) never needs.

Shared features: for each model and layer, MMCS(D_small, D_large); the small SAE's features
with the highest max cosine in the large dictionary are the shared set D_g (the paper's
feature indices, e.g. Appendix E, are those of the small dictionary). They are explained and
scored. ``base_vs_tuned`` entries also compare the base and tuned small dictionaries of a layer.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlsae.analysis.mmcs import (
    LayerShared,
    SharedFeatures,
    compare_dictionaries,
    sae_pair,
    size_pair,
)
from rlsae.analysis.report import RLHFSummary, write_llm_report, write_utility_html
from rlsae.analysis.utility import (
    UtilityTables,
    feature_scores,
    table3_scored_markdown,
    tables_markdown,
    utility_tables,
)
from rlsae.configs import to_mapping
from rlsae.fsutil import atomic_dir, atomic_write_bytes, atomic_write_json, read_json
from rlsae.llm.configs import ExplainConfig, ExplanationScoreConfig, ScoreConfig
from rlsae.study.engine import Context, Stage, Study, Units, load_config
from rlsae.study.engine import resolve_config as resolve_study_config
from rlsae.study.engine import run as run_engine
from rlsae.study.llm_config import (
    PAPER_DICT_SIZES,
    TINY,
    LLMStudyConfig,
    SAEPairConfig,
    dict_sizes,
    model_label,
)
from rlsae.study.llm_diff import DIFF_STAGE, diff_summary
from rlsae.study.llm_steer import STEER_STAGE
from rlsae.study.presets import LLM_PRESETS
from rlsae.study.results import (
    BaseModel,
    ChosenLayers,
    Combined,
    FilesWritten,
    SAEEntry,
    SAEPairs,
    Stores,
    Tables,
    TunedModel,
)

__all__ = [
    "LLM",
    "PAPER_DICT_SIZES",
    "LLMStudyConfig",
    "SAEPairConfig",
    "dict_sizes",
    "preset_config",
    "resolve_config",
    "run_llm_pipeline",
    "run_llm_study",
]

SOURCES = ("base", "tuned")
SIZES = (("large", 1), ("small", 0))
"""SAE sizes of a pair and their seed offsets: same-seed pairs start from identical rows."""


@dataclass
class ModelUnit:
    """One base model of the study."""

    name: str
    """Its label (``tiny``, ``pythia-70m``): the unit's name and directory name."""
    model: str
    """Hub name, model directory, or ``tiny``."""
    dir: str
    """Its directory relative to the run directory ("" when the study has one model)."""


def _list_models(ctx: Context[LLMStudyConfig]) -> list[ModelUnit]:
    models = ctx.config.models
    one = len(models) == 1
    return [ModelUnit(model_label(m), m, "" if one else model_label(m)) for m in models]


def _home(ctx: Context[LLMStudyConfig], unit: ModelUnit) -> Path:
    return ctx.run_dir / unit.dir if unit.dir else ctx.run_dir


# --------------------------------------------------------------------------------------------
# The stages (their typed results are in rlsae.study.results)


def pretrain(ctx: Context[LLMStudyConfig], unit: ModelUnit) -> BaseModel:
    """The tiny model is pretrained offline here; a hub model or directory is used as it is."""
    cfg = ctx.config
    if unit.model != TINY:
        return BaseModel(ref=unit.model, data=cfg.data or "imdb")
    from rlsae.llm.tiny import pretrain_tiny

    base = _home(ctx, unit) / "models" / "base"
    if not (base / "config.json").is_file():
        pretrain_tiny(base, progress=ctx.progress, **to_mapping(cfg.tiny))
    # the tuned model's directory has no corpus: both read the base's test corpus
    return BaseModel(ref=str(base), data=cfg.data or str(base / "corpus_test.txt"))


def tune(ctx: Context[LLMStudyConfig], unit: ModelUnit) -> TunedModel:
    """RLHF on the base model (resuming an interrupted run), linked to ``models/tuned``."""
    from rlsae.llm.rlhf import run_rlhf

    home = _home(ctx, unit)
    base = ctx.result(BaseModel, "pretrain", unit.name)
    tuned, rl_dir = home / "models" / "tuned", home / "rlhf"
    if not (tuned / "config.json").is_file():
        if not (rl_dir / "result.json").is_file():
            rl_cfg = dataclasses.replace(ctx.config.rlhf, model=base.ref)
            run_rlhf(rl_cfg, rl_dir, resume=rl_dir.exists(), progress=ctx.progress)
        _link_tree(rl_dir / "model", tuned)
    res = read_json(rl_dir / "result.json") if (rl_dir / "result.json").is_file() else {}
    keys = ("reward_first", "reward_last", "steps", "kl_last")
    return TunedModel(ref=str(tuned), rlhf=RLHFSummary(**{k: res.get(k) for k in keys}))


def divergence(ctx: Context[LLMStudyConfig], unit: ModelUnit) -> ChosenLayers:
    """Δ per layer between base and tuned; the ``top_n_layers`` most divergent are chosen."""
    from rlsae.llm.divergence import layer_divergence, write_divergence_html

    n = ctx.config.top_n_layers
    base = ctx.result(BaseModel, "pretrain", unit.name)
    tuned = ctx.result(TunedModel, "rlhf", unit.name)
    analysis = _home(ctx, unit) / "analysis"
    div = layer_divergence(base.ref, tuned.ref).choose(n)
    write_divergence_html(div, analysis / "divergence.html", n)
    div.write(analysis / "divergence.json")
    return ChosenLayers(layers=list(div.top_layers))


def record(ctx: Context[LLMStudyConfig], unit: ModelUnit) -> Stores:
    """Activations of the chosen layers in the base and the tuned model."""
    from rlsae.llm.record import record_lm_activations

    cfg, home = ctx.config, _home(ctx, unit)
    layers = ctx.result(ChosenLayers, "divergence", unit.name).layers
    base = ctx.result(BaseModel, "pretrain", unit.name)
    refs = {"base": base.ref, "tuned": ctx.result(TunedModel, "rlhf", unit.name).ref}
    for src in SOURCES:
        missing = [L for L in layers if not _store_done(home / "acts" / src, L, cfg.hook)]
        if missing:
            record_lm_activations(
                refs[src],
                missing,
                home / "acts" / src,
                hook=cfg.hook,
                prefixes=cfg.prefixes,
                prefix_tokens=cfg.prefix_tokens,
                data=base.data,
                source=src,
                seed=cfg.seed,
                device=cfg.device,
                progress=ctx.progress,
            )
    return Stores({str(L): _store_path(home / "acts" / "base", L, cfg.hook).name for L in layers})


def train_pairs(ctx: Context[LLMStudyConfig], unit: ModelUnit) -> SAEPairs:
    """A large and a small SAE per model and layer (different seeds)."""
    from rlsae.sae.store import ActivationStore
    from rlsae.sae.train import TrainConfig, train_sae

    cfg, home = ctx.config, _home(ctx, unit)
    hooks = ctx.result(Stores, "record", unit.name).hooks
    entries = []
    for src in SOURCES:
        for layer, hook in hooks.items():
            store = ActivationStore(home / "acts" / src / hook)
            large, small = dict_sizes(unit.model, store.d_in, cfg.sae)
            for size, d_sae in (("large", large), ("small", small)):
                out = home / "saes" / src / hook / size
                entries.append(SAEEntry(src, int(layer), size, out.relative_to(home).as_posix()))
                if (out / "cfg.json").is_file():
                    continue
                seed = cfg.sae.seed + dict(SIZES)[size]
                tc = TrainConfig(
                    arch=cfg.sae.arch,
                    d_sae=d_sae,
                    k=min(cfg.sae.k, d_sae),
                    l1=cfg.sae.l1,
                    tied=cfg.sae.tied,
                    epochs=cfg.sae.epochs,
                    batch_size=cfg.sae.batch_size,
                    lr=cfg.sae.lr,
                    seed=seed,
                    hook_name=hook,
                    source=src,
                )
                train_sae(store, out, tc, resume=True, progress=ctx.progress)
    return SAEPairs(entries)


def mmcs(ctx: Context[LLMStudyConfig], unit: ModelUnit) -> FilesWritten:
    """MMCS(small, large) per model and layer with the top-k shared features, base vs tuned."""
    from rlsae.sae import load_sae

    cfg, home = ctx.config, _home(ctx, unit)
    hooks = ctx.result(Stores, "record", unit.name).hooks
    pairs = ctx.result(SAEPairs, "saes", unit.name)

    def w_dec(src: str, layer: int, size: str) -> Any:
        return load_sae(home / pairs.path(src, layer, size)).W_dec.detach()

    out = SharedFeatures(k=cfg.top_k, utility_k=cfg.utility_k)
    for key, hook in hooks.items():
        L = int(key)
        entry = LayerShared(layer=L, hook=hook)
        for src in SOURCES:
            ws, wl = w_dec(src, L, "small"), w_dec(src, L, "large")
            res = compare_dictionaries(ws, wl, top_k=max(cfg.top_k, cfg.utility_k)).result
            paths = pairs.path(src, L, "small"), pairs.path(src, L, "large")
            entry.models[src] = size_pair(res, *paths, cfg.top_k, cfg.utility_k)
        bt = compare_dictionaries(w_dec("base", L, "small"), w_dec("tuned", L, "small"), cfg.top_k)
        paths = pairs.path("base", L, "small"), pairs.path("tuned", L, "small")
        entry.base_vs_tuned = sae_pair(bt.result, *paths, cfg.top_k)
        out.layers.append(entry)
    out.write(home / "analysis" / "llm_shared_features.json")
    return FilesWritten(["analysis/llm_shared_features.json"])


def explain(ctx: Context[LLMStudyConfig], unit: ModelUnit) -> FilesWritten:
    """Explanations of each small SAE's top shared features (``explanations.json``), scored on
    held-out contexts unless ``explanation_scorer`` is none."""
    from rlsae.llm.explain import explain_features
    from rlsae.llm.rewards import UtilityTable
    from rlsae.llm.scoring import score_explanations

    cfg, home = ctx.config, _home(ctx, unit)
    shared = _shared(ctx, unit)
    hooks = ctx.result(Stores, "record", unit.name).hooks
    pairs = ctx.result(SAEPairs, "saes", unit.name)
    table = UtilityTable.load(cfg.rlhf.table)
    ecfg = ExplainConfig(
        method=cfg.explainer, samples=cfg.explainer_samples, temperature=cfg.explainer_temperature
    )
    scfg = None
    if cfg.explanation_scorer != "none":
        scfg = ExplanationScoreConfig(scorer=cfg.explanation_scorer, seed=cfg.seed)
    files = []
    for src in SOURCES:
        for key, hook in hooks.items():
            L = int(key)
            feats = [row.feature for row in shared.layer(L).models[src].top_k_utility]
            sae = pairs.path(src, L, "small")
            explain_features(
                home / sae, home / "acts" / src / hook, feats, cfg=ecfg, table=table, layer=L
            )
            if scfg is not None:
                score_explanations(home / sae, home / "acts" / src / hook, feats, cfg=scfg)
            files.append(f"{sae}/explanations.json")
    return FilesWritten(files)


def score(ctx: Context[LLMStudyConfig], unit: ModelUnit) -> FilesWritten:
    """Completions of the base and the tuned model scored under the utility table (Table 4)."""
    from rlsae.llm.score import score_model

    cfg, analysis = ctx.config, _home(ctx, unit) / "analysis"
    base = ctx.result(BaseModel, "pretrain", unit.name)
    refs = {"base": base.ref, "tuned": ctx.result(TunedModel, "rlhf", unit.name).ref}
    scfg = ScoreConfig(
        prefixes=cfg.score_prefixes,
        prefix_tokens=cfg.score_prefix_tokens,
        max_new_tokens=cfg.score_new_tokens,
        seed=cfg.seed,
        data=base.data,
        table=cfg.rlhf.table,
    )
    for src in SOURCES:
        if not (analysis / f"score_{src}.json").is_file():
            score_model(refs[src], scfg).write(analysis / f"score_{src}.json")
    return FilesWritten([f"analysis/score_{src}.json" for src in SOURCES])


def utility(ctx: Context[LLMStudyConfig], unit: ModelUnit) -> Tables:
    """Tables 3 and 4 for one model: ``analysis/utility.{json,html,md}``."""
    from rlsae.llm.explain import load_explanations
    from rlsae.llm.rewards import UtilityTable
    from rlsae.llm.score import ScoreResult
    from rlsae.llm.scoring import scorer_label

    cfg, home = ctx.config, _home(ctx, unit)
    shared = _shared(ctx, unit)
    pairs = ctx.result(SAEPairs, "saes", unit.name)
    table = UtilityTable.load(cfg.rlhf.table)
    per_model: dict[str, dict[int, Any]] = {src: {} for src in SOURCES}
    scorers: set[str] = set()
    for src in SOURCES:
        for entry in shared.layers:
            L = entry.layer
            expl = load_explanations(home / pairs.path(src, L, "small") / "explanations.json")
            feats = [r.feature for r in entry.models[src].top_k_utility]
            per_model[src][L] = feature_scores(_plain_features(expl), feats, table)
            got = (expl.features[str(f)].scores for f in feats if str(f) in expl.features)
            scorers |= {sc.scorer for sc in got if sc is not None}
    scores = {
        src: ScoreResult.read(home / "analysis" / f"score_{src}.json").to_json() for src in SOURCES
    }
    scored = cfg.explanation_scorer != "none"
    result = utility_tables(
        per_model,
        scores,
        k=cfg.utility_k,
        label=unit.name,
        explainer=cfg.explainer,
        score_threshold=cfg.score_threshold if scored else None,
        scorer=", ".join(sorted({scorer_label(name) for name in scorers})) if scored else "",
    )
    analysis = home / "analysis"
    result.write(analysis / "utility.json")
    write_utility_html(result, analysis / "utility.html")
    atomic_write_bytes(analysis / "utility.md", (tables_markdown(result) + "\n").encode())
    if result.score_threshold is not None:
        md = table3_scored_markdown(result) + "\n"
        atomic_write_bytes(analysis / "utility_scored.md", md.encode())
    return Tables(
        table3={m: v.score for m, v in result.table3.items()},
        table4={m: v.aggregate_abs_utility for m, v in result.table4.items()},
    )


def report(ctx: Context[LLMStudyConfig], unit: ModelUnit) -> FilesWritten:
    """``analysis/report.html``: RLHF, Tables 3 and 4, divergence, MMCS, explanations."""
    from rlsae.llm.divergence import DivergenceResult, divergence_figure

    analysis = _home(ctx, unit) / "analysis"
    div = DivergenceResult.read(analysis / "divergence.json")
    write_llm_report(
        analysis / "report.html",
        model=unit.model,
        rlhf=ctx.result(TunedModel, "rlhf", unit.name).rlhf,
        shared=_shared(ctx, unit),
        utility=UtilityTables.read(analysis / "utility.json"),
        divergence_figure=divergence_figure(div, div.top_n),
    )
    return FilesWritten(["analysis/report.html"])


def combine(ctx: Context[LLMStudyConfig]) -> Combined:
    """With several models: their Table 3 and 4 rows in ``analysis/utility.md``, and every
    model's summary in ``analysis/summary.json``."""

    units = _units(ctx)
    if len(units) == 1:
        return Combined()
    tables = [UtilityTables.read(_home(ctx, u) / "analysis" / "utility.json") for u in units]
    head = tables_markdown(tables[0]).splitlines()[:2]
    md = "\n".join(head + [tables_markdown(t).splitlines()[-1] for t in tables]) + "\n"
    analysis = ctx.run_dir / "analysis"
    atomic_write_bytes(analysis / "utility.md", md.encode())
    summary = {"runs": _summaries(ctx), "utility_md": str(analysis / "utility.md")}
    atomic_write_json(analysis / "summary.json", summary)
    return Combined(utility_md="analysis/utility.md")


# --------------------------------------------------------------------------------------------
# Helpers of the stages


def _units(ctx: Context[LLMStudyConfig]) -> list[ModelUnit]:
    return [u for u in ctx.units("model") if isinstance(u, ModelUnit)]


def _shared(ctx: Context[LLMStudyConfig], unit: ModelUnit) -> SharedFeatures:
    return SharedFeatures.read(_home(ctx, unit) / "analysis" / "llm_shared_features.json")


def _explanation_scores(home: Path) -> dict[str, Any]:
    """The summary's explanation scores: each explained feature's detection score by
    ``source/layer``, their mean per source and how many have one (a feature that fires in
    every held-out document has none: no non-activating context), the scorer and Table 3
    above the threshold."""
    util = UtilityTables.read(home / "analysis" / "utility.json")
    detection = {
        f"{src}/{layer}": {str(r.feature): r.detection for r in rows}
        for src, layers in util.features.items()
        for layer, rows in layers.items()
    }
    means, counts = {}, {}
    for src, layers in util.features.items():
        vals = [r.detection for rows in layers.values() for r in rows if r.detection is not None]
        means[src] = round(sum(vals) / len(vals), 4) if vals else None
        counts[src] = f"{len(vals)}/{sum(len(rows) for rows in layers.values())}"
    return {
        "explanation_scorer": util.scorer,
        "detection": detection,
        "detection_mean": means,
        "detection_scored": counts,
        "score_threshold": util.score_threshold,
        "table3_scored": {m: v.score for m, v in util.table3_scored.items()},
    }


def _plain_features(expl: Any) -> dict[str, Any]:
    """The explanations by feature as mappings (what ``feature_scores`` reads)."""
    feats = expl.features if hasattr(expl, "features") else expl["features"]
    return {k: to_mapping(v) if dataclasses.is_dataclass(v) else v for k, v in feats.items()}


def _link_tree(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically, hard-linking files where the filesystem allows."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    with atomic_dir(dst) as tmp:
        shutil.rmtree(tmp)
        shutil.copytree(src, tmp, copy_function=link)


def _store_path(parent: Path, layer: int, hook: str) -> Path:
    short = hook[len("hook_") :] if hook.startswith("hook_") else hook
    for cand in (parent / f"blocks.{layer}.hook_{short}", parent / f"blocks.{layer}.{short}"):
        if (cand / "meta.json").is_file():
            return cand
    return parent / f"blocks.{layer}.hook_{short}"


def _store_done(parent: Path, layer: int, hook: str) -> bool:
    return (_store_path(parent, layer, hook) / "meta.json").is_file()


# --------------------------------------------------------------------------------------------
# The declaration

LLM = Study(
    kind="llm-irm-study",
    config=LLMStudyConfig,
    presets=LLM_PRESETS,
    versions=("rlsae", "torch", "transformers", "transformer-lens", "sae-lens", "numpy"),
    units=(Units("model", _list_models),),
    stages=(
        Stage("pretrain", pretrain, BaseModel, per="model"),
        Stage("rlhf", tune, TunedModel, after=("pretrain",), per="model"),
        Stage("divergence", divergence, ChosenLayers, after=("pretrain", "rlhf"), per="model"),
        Stage("record", record, Stores, after=("divergence",), per="model"),
        Stage("saes", train_pairs, SAEPairs, after=("record",), per="model"),
        Stage("mmcs", mmcs, FilesWritten, after=("saes",), per="model"),
        Stage("explain", explain, FilesWritten, after=("mmcs",), per="model"),
        Stage("score", score, FilesWritten, after=("pretrain", "rlhf"), per="model"),
        Stage("utility", utility, Tables, after=("explain", "score"), per="model"),
        DIFF_STAGE,
        STEER_STAGE,
        Stage("report", report, FilesWritten, after=("utility", "steer", "diff"), per="model"),
        Stage("tables", combine, Combined, after=("utility",)),
    ),
)


# --------------------------------------------------------------------------------------------
# Entry points


def resolve_config(
    preset_or_path: str | os.PathLike | LLMStudyConfig,
) -> tuple[LLMStudyConfig, str]:
    """A preset name (smoke, demo, paper), a YAML/TOML file or a config -> (config, source)."""
    return resolve_study_config(LLM, preset_or_path)


def preset_config(preset: str) -> LLMStudyConfig:
    """``smoke`` (CI, about a minute), ``demo`` (tiny model end to end, minutes), ``paper``,
    or a YAML/TOML config file."""
    return resolve_config(preset)[0]


def load_llm_config(path: str | os.PathLike) -> LLMStudyConfig:
    """A study config from a YAML or TOML file."""
    return load_config(LLM, path)


def _model_summary(ctx: Context[LLMStudyConfig], unit: ModelUnit) -> dict[str, Any]:
    from rlsae.llm.divergence import DivergenceResult

    home, n = _home(ctx, unit), ctx.config.top_n_layers
    div = DivergenceResult.read(home / "analysis" / "divergence.json")
    shared = _shared(ctx, unit)
    tables = ctx.result(Tables, "utility", unit.name)
    markers = [ctx.marker(s.name, unit.name) for s in ctx.study.stages if s.per]
    seconds = sum(m.seconds for m in markers if m is not None)
    return {
        "run_dir": str(home),
        "model": unit.model,
        "layers": ctx.result(ChosenLayers, "divergence", unit.name).layers,
        "divergence": div.head(n).to_json()["layers"],
        "mmcs": {
            f"{src}/{e.layer}": round(e.models[src].mmcs_ab, 4)
            for src in SOURCES
            for e in shared.layers
        },
        "table3": tables.table3,
        "table4": tables.table4,
        **_explanation_scores(home),
        "utility_json": str(home / "analysis" / "utility.json"),
        "utility_html": str(home / "analysis" / "utility.html"),
        "report": str(home / "analysis" / "report.html"),
        "seconds": round(seconds, 1),
    }


def _threads(n: int | None) -> AbstractContextManager[None]:
    # rlsae.threads imports torch: only when a stage runs (a finished study resumes without it)
    from rlsae.threads import torch_threads

    return torch_threads(n)


def _summaries(ctx: Context[LLMStudyConfig]) -> list[dict[str, Any]]:
    return [{**_model_summary(ctx, u), **diff_summary(ctx, u)} for u in _units(ctx)]


def run_llm_study(
    cfg: LLMStudyConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    source: str = "config",
    progress: bool = True,
    study: Study[LLMStudyConfig] = LLM,
) -> dict[str, Any]:
    """Run (or resume) the study into ``out_dir``; returns its summary.

    One model: the model's summary (layers, MMCS, Tables 3 and 4, paths). Several: ``runs``
    (one summary per model) and ``utility_md`` (the combined tables). ``cfg.threads`` holds for
    the whole run and is restored afterwards.
    """
    out = run_engine(
        study,
        cfg,
        out_dir,
        resume=resume,
        source=source,
        progress=progress,
        around_work=lambda: _threads(cfg.threads),
    )
    ctx = Context(study, cfg, Path(out_dir))
    counts = {"stages_run": out.count("model"), "stages_skipped": out.count("model", "skipped")}
    runs = _summaries(ctx)
    if len(runs) == 1:
        return {**runs[0], **counts}
    return {"runs": runs, "utility_md": str(Path(out_dir) / "analysis" / "utility.md"), **counts}


def run_llm_pipeline(
    out_dir: str | os.PathLike,
    preset: str | os.PathLike | LLMStudyConfig = "demo",
    resume: bool = False,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the study for ``preset`` (smoke | demo | paper | a YAML/TOML file) into ``out_dir``."""
    cfg, source = resolve_config(preset)
    return run_llm_study(cfg, out_dir, resume=resume, source=source, progress=progress)
