"""The implicit-reward-model study end to end (the paper's Algorithm 1), resumable stage by stage.

For each model of the preset, in its own run directory::

    models/base/            base model (the tiny model is pretrained here; hub models stay names)
    rlhf/                   the RLHF run (rlsae.llm.rlhf.rlhf_tune): log, curve, checkpoint
    models/tuned/           the tuned model (hard links to rlhf/model)
    analysis/divergence.json, divergence.html      Δ per layer, the paper's Figure 3
    acts/{base,tuned}/blocks.L.hook_resid_post/    activations of the top-n divergent layers
    saes/{base,tuned}/blocks.L.hook_resid_post/{large,small}/   the SAE pairs
    analysis/llm_shared_features.json              MMCS per pair, top-k shared features
    saes/.../small/explanations.json               explanations of the shared features
    analysis/score_{base,tuned}.json               completions' utility (Table 4)
    analysis/utility.json, utility.html, utility.md   Tables 3 and 4
    run.json                                       config, stage timings, versions

Every stage skips work already on disk (each artifact is written atomically), so
``resume=True`` continues an interrupted run. A preset with several models (``paper``) writes
one such run directory per model under ``OUT/<label>/`` and the combined tables in
``OUT/analysis/``.

Shared features: for each model and layer, MMCS(D_small, D_large); the small SAE's features
with the highest max cosine in the large dictionary are the shared set D_g (the paper's
feature indices, e.g. Appendix E, are those of the small dictionary). They are explained and
scored. ``base_vs_tuned`` entries also compare the base and tuned small dictionaries of a layer.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_dir, atomic_write_bytes, atomic_write_json, read_json
from rlsae.provenance import git_commit, package_versions

TINY = "tiny"

# The paper's Table 2 (large, small). Other models: 2 x d_model and d_model (Algorithm 1).
PAPER_DICT_SIZES = {
    "EleutherAI/pythia-70m": (1024, 512),
    "EleutherAI/pythia-160m": (1536, 768),
    "EleutherAI/pythia-410m": (2048, 1024),
    "EleutherAI/gpt-neo-125m": (768, 1536),
}


@dataclass
class SAEPairConfig:
    """How each SAE of a pair is trained (defaults: the paper's section 5.2)."""

    arch: str = "relu"
    """``relu`` (ReLU + L1, the paper) or ``topk``."""
    tied: bool = True
    """Tied encoder/decoder weights (the paper)."""
    l1: float = 1e-3
    """L1 coefficient (the paper: 0.001)."""
    k: int = 32
    """Active latents for ``topk``."""
    lr: float = 1e-3
    """Adam learning rate (the paper: 1e-3)."""
    batch_size: int = 32
    """Rows per step (the paper: 32)."""
    epochs: float = 3.0
    """Passes over the activations (the paper: 3)."""
    large: int | None = None
    """Large dictionary size; None: the paper's Table 2 for its models, else 2 x d_model."""
    small: int | None = None
    """Small dictionary size; None: Table 2, else d_model."""
    seed: int = 0
    """Seed of the SAE initialisation and data order."""


@dataclass
class LLMStudyConfig:
    """One preset of the study. Saved in run.json."""

    models: list[str] = field(default_factory=lambda: [TINY])
    """Base models: hub names, model directories, or ``tiny`` (pretrained offline here)."""
    tiny: dict[str, Any] = field(default_factory=dict)
    """Overrides of :class:`rlsae.llm.tiny.TinyConfig` for the ``tiny`` model."""
    rlhf: dict[str, Any] = field(default_factory=dict)
    """Overrides of :class:`rlsae.llm.rlhf.RLHFConfig` (reward, algo, steps, ...)."""
    top_n_layers: int = 5
    """Layers (most divergent first) that get SAE pairs (the paper: 5)."""
    hook: str = "resid_post"
    """Hook recorded in each chosen block."""
    data: str | None = None
    """Documents for activations: None = the tiny model's test corpus or IMDb test."""
    prefixes: int = 1000
    """Documents recorded per model."""
    prefix_tokens: int = 50
    """Tokens per document (the paper explains on the first 50)."""
    sae: SAEPairConfig = field(default_factory=SAEPairConfig)
    """SAE pair training."""
    top_k: int = 10
    """Shared features listed per pair (the paper: 10)."""
    utility_k: int = 30
    """Shared features explained and scored for Table 3 (the paper: 30)."""
    explainer: str = "offline"
    """``offline`` (token lift) or ``llm`` (OpenAI-compatible endpoint from the environment)."""
    explainer_samples: int = 1
    """LLM explanations per feature; Table 3 uses their mean utility (the paper: 3)."""
    explainer_temperature: float = 0.0
    """LLM sampling temperature (above 0 when drawing several samples)."""
    score_prefixes: int = 100
    """Completions scored for Table 4 (the paper: 100)."""
    score_prefix_tokens: int = 30
    """Prefix length for Table 4 (the paper: 30)."""
    score_new_tokens: int = 30
    """Completion length for Table 4."""
    seed: int = 0
    """Seed for the tiny model, tuning and scoring."""
    device: str = "cpu"
    """Where models run."""
    threads: int | None = None
    """torch CPU threads (None: torch's default). 1 is much faster on a shared, busy machine."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LLMStudyConfig:
        d = dict(d)
        if isinstance(d.get("sae"), dict):
            d["sae"] = SAEPairConfig(**d["sae"])
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise RlsaeError(f"unknown llm study option(s) {sorted(unknown)}")
        return cls(**d)


def preset_config(preset: str) -> LLMStudyConfig:
    """``smoke`` (CI, about a minute), ``demo`` (tiny model end to end, minutes) or ``paper``."""
    if preset == "paper":
        return LLMStudyConfig(
            models=["EleutherAI/pythia-70m", "EleutherAI/pythia-160m", "EleutherAI/pythia-410m"],
            rlhf={"reward": "utility", "algo": "ppo", "data": "imdb", "steps": 200},
            top_n_layers=5,
            data="imdb",
            prefixes=2000,
            prefix_tokens=50,
            sae=SAEPairConfig(),
            top_k=10,
            utility_k=30,
            explainer="llm",
            explainer_samples=3,
            explainer_temperature=1.0,
            score_prefixes=100,
            score_prefix_tokens=30,
        )
    if preset == "demo":
        return LLMStudyConfig(
            models=[TINY],
            tiny={"steps": 300, "n_train_reviews": 4000, "n_test_reviews": 1000},
            rlhf={
                "reward": "utility",
                "algo": "ppo",
                "steps": 40,
                "ppo": {
                    "batch_size": 32,
                    "mini_batch_size": 8,
                    "learning_rate": 3e-5,
                    "init_kl_coef": 0.05,
                    "max_new_tokens": 16,
                },
            },
            top_n_layers=2,
            prefixes=1000,
            prefix_tokens=32,
            # The paper's tied ReLU SAE, lr, batch and epochs; L1 3.0 instead of 0.001: the tiny
            # model's residual stream has norm ~30 and with 0.001 every latent fires on half the
            # rows (L0 = d_sae / 2); 3.0 gives L0 ~ 20 of 128 at FVU ~ 0.03.
            sae=SAEPairConfig(l1=3.0, epochs=3.0, batch_size=32),
            top_k=10,
            utility_k=30,
            score_prefixes=100,
            score_prefix_tokens=8,
            score_new_tokens=20,
            threads=1,  # fastest on a busy shared CPU, and still well within budget when idle
        )
    if preset == "smoke":
        return LLMStudyConfig(
            models=[TINY],
            tiny={
                "steps": 30,
                "n_train_reviews": 400,
                "n_test_reviews": 100,
                "n_layers": 2,
                "d_model": 32,
                "d_mlp": 64,
                "vocab_size": 300,
            },
            rlhf={
                "reward": "utility",
                "algo": "ppo",
                "steps": 2,
                "ppo": {
                    "batch_size": 8,
                    "mini_batch_size": 4,
                    "learning_rate": 1e-4,
                    "max_new_tokens": 8,
                },
            },
            top_n_layers=1,
            prefixes=60,
            prefix_tokens=16,
            sae=SAEPairConfig(l1=3.0, epochs=1.0, batch_size=64),
            top_k=5,
            utility_k=8,
            score_prefixes=12,
            score_prefix_tokens=6,
            score_new_tokens=8,
            threads=1,
        )
    path = Path(preset)
    if path.is_file():
        import yaml

        try:
            return LLMStudyConfig.from_dict(yaml.safe_load(path.read_text()) or {})
        except yaml.YAMLError as e:
            raise RlsaeError(f"{path} is not valid YAML ({str(e).splitlines()[0]})") from None
    raise RlsaeError(f"unknown preset {preset!r}; use smoke, demo, paper or a YAML config file")


# ----------------------------------------------------------------------------- helpers


def _label(model: str) -> str:
    return "tiny" if model == TINY else Path(model.rstrip("/")).name


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


def dict_sizes(model: str, d_model: int, cfg: SAEPairConfig) -> tuple[int, int]:
    """(large, small) dictionary sizes for ``model`` of width ``d_model``."""
    large, small = PAPER_DICT_SIZES.get(model, (2 * d_model, d_model))
    return int(cfg.large or large), int(cfg.small or small)


class _Run:
    """run.json bookkeeping: config, per-stage seconds and status, written after each stage."""

    def __init__(self, run_dir: Path, info: dict[str, Any]) -> None:
        self.dir = run_dir
        self.path = run_dir / "run.json"
        old = read_json(self.path) if self.path.is_file() else {}
        self.info = {**info, "stages": old.get("stages", {}), "started": old.get("started")}
        self.info["started"] = self.info["started"] or time.strftime("%Y-%m-%dT%H:%M:%S")

    def stage(self, name: str, seconds: float, status: str, **extra: Any) -> None:
        if status.startswith("skipped") and name in self.info["stages"]:
            return  # keep the record of the run that did the work
        self.info["stages"][name] = {"status": status, "seconds": round(seconds, 2), **extra}
        atomic_write_json(self.path, self.info)


# ----------------------------------------------------------------------------- one model


def run_model_study(
    run_dir: str | os.PathLike,
    model: str,
    cfg: LLMStudyConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    preset: str = "",
) -> dict[str, Any]:
    """Run every stage for one base model into ``run_dir``; returns the summary."""
    run = Path(run_dir)
    if run.exists() and any(run.iterdir()) and not resume:
        raise RlsaeError(f"{run} already holds a run; pass --resume to continue it or remove it")
    run.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    book = _Run(
        run,
        {
            "pipeline": "llm",
            "preset": preset,
            "model": model,
            "config": dataclasses.asdict(cfg),
            "versions": package_versions(
                "rlsae", "torch", "transformers", "transformer-lens", "sae-lens"
            ),
            "git_commit": git_commit(),
        },
    )
    analysis = run / "analysis"
    analysis.mkdir(exist_ok=True)

    # 1. base model
    t = time.time()
    if model == TINY:
        from rlsae.llm.tiny import pretrain_tiny

        base = run / "models" / "base"
        if not (base / "config.json").is_file():
            pretrain_tiny(base, seed=cfg.seed, progress=progress, **cfg.tiny)
            book.stage("pretrain", time.time() - t, "done")
        else:
            book.stage("pretrain", 0.0, "skipped (exists)")
        base_ref = str(base)
        # the tuned model's directory has no corpus: both read the base's test corpus
        data = cfg.data or str(base / "corpus_test.txt")
    else:
        base_ref = model
        data = cfg.data or "imdb"
    # 2. RLHF
    t = time.time()
    tuned = run / "models" / "tuned"
    if not (tuned / "config.json").is_file():
        from rlsae.llm.rlhf import rlhf_tune

        rl_dir = run / "rlhf"
        rl_opts = {"seed": cfg.seed, **cfg.rlhf}
        if not (rl_dir / "result.json").is_file():
            rlhf_tune(base_ref, rl_dir, resume=rl_dir.exists(), progress=progress, **rl_opts)
        _link_tree(rl_dir / "model", tuned)
        book.stage("rlhf", time.time() - t, "done", **_rlhf_summary(rl_dir))
    else:
        book.stage("rlhf", 0.0, "skipped (exists)", **_rlhf_summary(run / "rlhf"))
    tuned_ref = str(tuned)

    # 3. divergence
    t = time.time()
    from rlsae.llm.divergence import layer_divergence, write_divergence_html

    div_path = analysis / "divergence.json"
    if div_path.is_file():
        div = read_json(div_path)
        book.stage("divergence", 0.0, "skipped (exists)")
    else:
        res = layer_divergence(base_ref, tuned_ref)
        div = res.to_json()
        div["top_n"] = cfg.top_n_layers
        div["top_layers"] = res.top_layers(cfg.top_n_layers)
        write_divergence_html(res, analysis / "divergence.html", cfg.top_n_layers)
        atomic_write_json(div_path, div)
        book.stage("divergence", time.time() - t, "done")
    layers = [int(x) for x in div["top_layers"]]

    # 4. activations
    t = time.time()
    from rlsae.llm.record import record_lm_activations

    hook_names: dict[int, str] = {}
    recorded = 0
    for src, ref in (("base", base_ref), ("tuned", tuned_ref)):
        missing = [L for L in layers if not _store_done(run / "acts" / src, L, cfg.hook)]
        if missing:
            paths = record_lm_activations(
                ref,
                missing,
                run / "acts" / src,
                hook=cfg.hook,
                prefixes=cfg.prefixes,
                prefix_tokens=cfg.prefix_tokens,
                data=data,
                source=src,
                seed=cfg.seed,
                device=cfg.device,
                progress=progress,
            )
            recorded += len(paths)
    for L in layers:
        hook_names[L] = _store_path(run / "acts" / "base", L, cfg.hook).name
    book.stage("record", time.time() - t, "done" if recorded else "skipped (exists)")

    # 5. SAE pairs
    t = time.time()
    from rlsae.sae.store import ActivationStore
    from rlsae.sae.train import TrainConfig, train_sae

    sae_dirs: dict[tuple[str, int, str], Path] = {}
    trained = 0
    for src in ("base", "tuned"):
        for L in layers:
            hp = hook_names[L]
            store = ActivationStore(run / "acts" / src / hp)
            large, small = dict_sizes(model, store.d_in, cfg.sae)
            # different seeds: same-seed pairs start from identical leading decoder rows
            for size_name, d_sae, seed in (
                ("large", large, cfg.sae.seed + 1),
                ("small", small, cfg.sae.seed),
            ):
                out = run / "saes" / src / hp / size_name
                sae_dirs[(src, L, size_name)] = out
                if (out / "cfg.json").is_file():
                    continue
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
                    hook_name=hp,
                    source=src,
                )
                train_sae(store, out, tc, resume=True, progress=progress)
                trained += 1
    book.stage("saes", time.time() - t, "done" if trained else "skipped (exists)")

    # 6. MMCS and shared features
    t = time.time()
    shared = shared_features(run, layers, hook_names, sae_dirs, cfg)
    atomic_write_json(analysis / "llm_shared_features.json", shared)
    book.stage("mmcs", time.time() - t, "done")

    # 7. explanations
    t = time.time()
    from rlsae.llm.explain import ExplainConfig, explain_features
    from rlsae.llm.rewards import UtilityTable

    table = UtilityTable.load(cfg.rlhf.get("table", "vader"))
    ecfg = ExplainConfig(
        method=cfg.explainer,
        samples=cfg.explainer_samples,
        temperature=cfg.explainer_temperature,
    )
    for src in ("base", "tuned"):
        for L in layers:
            entry = _layer_entry(shared, L)["models"][src]
            feats = [row["feature"] for row in entry["top_k_utility"]]
            explain_features(
                sae_dirs[(src, L, "small")],
                run / "acts" / src / hook_names[L],
                feats,
                cfg=ecfg,
                table=table,
                layer=L,
            )
    book.stage("explain", time.time() - t, "done")

    # 8. completions (Table 4)
    t = time.time()
    from rlsae.llm.score import ScoreConfig, score_model

    scores = {}
    for src, ref in (("base", base_ref), ("tuned", tuned_ref)):
        path = analysis / f"score_{src}.json"
        if path.is_file():
            scores[src] = read_json(path)
            continue
        scfg = ScoreConfig(
            prefixes=cfg.score_prefixes,
            prefix_tokens=cfg.score_prefix_tokens,
            max_new_tokens=cfg.score_new_tokens,
            seed=cfg.seed,
            data=data,
            table=cfg.rlhf.get("table", "vader"),
        )
        scores[src] = score_model(ref, scfg)
        atomic_write_json(path, scores[src])
    book.stage("score", time.time() - t, "done")

    # 9. utility tables
    t = time.time()
    result = utility_result(run, layers, hook_names, sae_dirs, shared, scores, table, model, cfg)
    book.stage("utility", time.time() - t, "done")
    report = write_llm_report(run)
    book.info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    book.info["seconds"] = round(sum(s["seconds"] for s in book.info["stages"].values()), 1)
    atomic_write_json(book.path, book.info)
    return {
        "run_dir": str(run),
        "model": model,
        "layers": layers,
        "divergence": div["layers"][: cfg.top_n_layers],
        "mmcs": {
            f"{src}/{L}": round(_layer_entry(shared, L)["models"][src]["mmcs_ab"], 4)
            for src in ("base", "tuned")
            for L in layers
        },
        "table3": {m: v["score"] for m, v in result["table3"].items()},
        "table4": {m: v["aggregate_abs_utility"] for m, v in result["table4"].items()},
        "utility_json": str(analysis / "utility.json"),
        "utility_html": str(analysis / "utility.html"),
        "report": str(report),
        "seconds": book.info["seconds"],
    }


def _rlhf_summary(rl_dir: Path) -> dict[str, Any]:
    p = rl_dir / "result.json"
    if not p.is_file():
        return {}
    r = read_json(p)
    return {k: r.get(k) for k in ("reward_first", "reward_last", "steps", "kl_last")}


def _store_path(parent: Path, layer: int, hook: str) -> Path:
    short = hook[len("hook_") :] if hook.startswith("hook_") else hook
    for cand in (parent / f"blocks.{layer}.hook_{short}", parent / f"blocks.{layer}.{short}"):
        if (cand / "meta.json").is_file():
            return cand
    return parent / f"blocks.{layer}.hook_{short}"


def _store_done(parent: Path, layer: int, hook: str) -> bool:
    return (_store_path(parent, layer, hook) / "meta.json").is_file()


def _layer_entry(shared: dict[str, Any], layer: int) -> dict[str, Any]:
    for e in shared["layers"]:
        if e["layer"] == layer:
            return e
    raise KeyError(layer)


def shared_features(
    run: Path,
    layers: list[int],
    hook_names: dict[int, str],
    sae_dirs: dict[tuple[str, int, str], Path],
    cfg: LLMStudyConfig,
) -> dict[str, Any]:
    """MMCS(small, large) per model and layer with the top-k shared features, and base vs tuned."""
    from rlsae.analysis.mmcs import compare_dictionaries
    from rlsae.sae import load_sae

    def rel(p: Path) -> str:
        return p.relative_to(run).as_posix()

    out: dict[str, Any] = {"k": cfg.top_k, "utility_k": cfg.utility_k, "layers": []}
    for L in layers:
        entry: dict[str, Any] = {"layer": L, "hook": hook_names[L], "models": {}}
        for src in ("base", "tuned"):
            small, large = sae_dirs[(src, L, "small")], sae_dirs[(src, L, "large")]
            ws, wl = load_sae(small).W_dec.detach(), load_sae(large).W_dec.detach()
            res = compare_dictionaries(ws, wl, top_k=max(cfg.top_k, cfg.utility_k))
            entry["models"][src] = {
                "sae_a": rel(small),
                "sae_b": rel(large),
                "d_sae_a": int(ws.shape[0]),
                "d_sae_b": int(wl.shape[0]),
                "mmcs_ab": res["mmcs_ab"],
                "mmcs_ba": res["mmcs_ba"],
                "top_k": res["top_k"][: cfg.top_k],
                "top_k_utility": res["top_k"][: cfg.utility_k],
            }
        a, b = sae_dirs[("base", L, "small")], sae_dirs[("tuned", L, "small")]
        res = compare_dictionaries(
            load_sae(a).W_dec.detach(), load_sae(b).W_dec.detach(), cfg.top_k
        )
        entry["base_vs_tuned"] = {
            "sae_a": rel(a),
            "sae_b": rel(b),
            "mmcs_ab": res["mmcs_ab"],
            "mmcs_ba": res["mmcs_ba"],
            "top_k": res["top_k"],
        }
        out["layers"].append(entry)
    return out


def utility_result(
    run: Path,
    layers: list[int],
    hook_names: dict[int, str],
    sae_dirs: dict[tuple[str, int, str], Path],
    shared: dict[str, Any],
    scores: dict[str, Any],
    table: Any,
    model: str,
    cfg: LLMStudyConfig,
) -> dict[str, Any]:
    """Tables 3 and 4 for one model, written as utility.json / .html / .md."""
    from rlsae.analysis.utility import (
        feature_scores,
        tables_markdown,
        utility_tables,
        write_utility_html,
    )
    from rlsae.llm.explain import load_explanations

    per_model: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for src in ("base", "tuned"):
        per_model[src] = {}
        for L in layers:
            expl = load_explanations(sae_dirs[(src, L, "small")] / "explanations.json")
            feats = [r["feature"] for r in _layer_entry(shared, L)["models"][src]["top_k_utility"]]
            per_model[src][L] = feature_scores(expl["features"], feats, table)
    result = utility_tables(per_model, scores, k=cfg.utility_k, label=_label(model))
    result["layers"] = layers
    result["explainer"] = cfg.explainer
    result["features"] = {
        src: {str(L): rows for L, rows in d.items()} for src, d in per_model.items()
    }
    analysis = run / "analysis"
    atomic_write_json(analysis / "utility.json", result)
    write_utility_html(result, analysis / "utility.html", per_model)
    atomic_write_bytes(analysis / "utility.md", (tables_markdown(result) + "\n").encode())
    return result


# ----------------------------------------------------------------------------- entry point


def run_llm_pipeline(
    out_dir: str | os.PathLike,
    preset: str = "demo",
    resume: bool = False,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the study for ``preset`` (smoke | demo | paper | a YAML file) into ``out_dir``."""
    cfg = preset_config(preset)
    out = Path(out_dir)
    if len(cfg.models) == 1:
        return run_model_study(
            out, cfg.models[0], cfg, resume=resume, progress=progress, preset=preset
        )
    if out.exists() and any(out.iterdir()) and not resume:
        raise RlsaeError(f"{out} already holds a run; pass --resume to continue it or remove it")
    results = []
    for m in cfg.models:
        results.append(
            run_model_study(
                out / _label(m), m, cfg, resume=resume, progress=progress, preset=preset
            )
        )
    from rlsae.analysis.utility import tables_markdown

    rows = []
    for r in results:
        u = read_json(Path(r["run_dir"]) / "analysis" / "utility.json")
        rows.append(tables_markdown(u).splitlines()[-1])
    head = tables_markdown(read_json(Path(results[0]["run_dir"]) / "analysis" / "utility.json"))
    md = "\n".join(head.splitlines()[:2] + rows) + "\n"
    atomic_write_bytes(out / "analysis" / "utility.md", md.encode())
    summary = {"runs": results, "utility_md": str(out / "analysis" / "utility.md")}
    atomic_write_json(out / "analysis" / "summary.json", summary)
    return summary


# ----------------------------------------------------------------------------- report


def write_llm_report(run: str | os.PathLike) -> Path:
    """``analysis/report.html`` of one model's run: RLHF, divergence chart, MMCS, shared
    features with explanations, Tables 3 and 4. One file, plotly.js embedded, offline."""
    import html as _html

    from rlsae.analysis.figures import figure_div, plotly_js_tag
    from rlsae.llm.divergence import DivergenceResult, divergence_figure

    run = Path(run)
    e = _html.escape
    info = read_json(run / "run.json")
    div = read_json(run / "analysis" / "divergence.json")
    shared = read_json(run / "analysis" / "llm_shared_features.json")
    util = read_json(run / "analysis" / "utility.json")
    rl = info.get("stages", {}).get("rlhf", {})
    res = DivergenceResult(
        layers=div["layers"],
        embeddings=div["embeddings"],
        final_norm=div["final_norm"],
        other=div.get("other", 0.0),
        n_layers=div["n_layers"],
        tensors={},
    )
    t3, t4 = util["table3"], util["table4"]

    def num(v: Any, f: str = ".1f") -> str:
        return "–" if v is None else format(v, f)

    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>rlsae: implicit reward model"
        f"</title>{plotly_js_tag()}<style>body{{font-family:system-ui,sans-serif;margin:2em auto;"
        "max-width:1100px;padding:0 1em}table{border-collapse:collapse;margin:.6em 0}"
        "th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;font-size:13px}"
        "td.l,th.l{text-align:left}h2{border-bottom:1px solid #ddd;margin-top:1.6em}</style>"
        "</head><body>",
        f"<h1>Implicit reward model of {e(str(info.get('model')))}</h1>",
        "<p><a href='../viewer/index.html'>feature viewer</a> · "
        "<a href='utility.html'>utility tables</a> · <a href='divergence.html'>divergence</a></p>",
        "<h2>RLHF</h2>",
        f"<p>mean reward {num(rl.get('reward_first'), '.3f')} → {num(rl.get('reward_last'), '.3f')}"
        f" over {e(str(rl.get('steps')))} steps (final KL {num(rl.get('kl_last'), '.3f')}).</p>",
        "<h2>Tables 3 and 4: utility of features and of completions</h2>",
        "<table><tr><th class='l'></th><th>M_base</th><th>M_RLHF</th></tr>",
        f"<tr><td class='l'>summed |utility| of the top-{e(str(util.get('k')))} shared features' "
        f"explanations</td><td>{num(t3.get('base', {}).get('score'))}</td>"
        f"<td>{num(t3.get('tuned', {}).get('score'))}</td></tr>",
        "<tr><td class='l'>aggregate |utility| of completions</td>"
        f"<td>{num(t4.get('base', {}).get('aggregate_abs_utility'))}</td>"
        f"<td>{num(t4.get('tuned', {}).get('aggregate_abs_utility'))}</td></tr>",
        "<tr><td class='l'>mean reward of completions</td>"
        f"<td>{num(t4.get('base', {}).get('mean_reward'), '.3f')}</td>"
        f"<td>{num(t4.get('tuned', {}).get('mean_reward'), '.3f')}</td></tr></table>",
        "<h2>Layer divergence (Figure 3)</h2>",
        figure_div(divergence_figure(res, div.get("top_n"))),
        "<h2>SAE pairs: MMCS(small, large)</h2><table><tr><th>layer</th><th class='l'>model</th>"
        "<th>d_sae small</th><th>d_sae large</th><th>MMCS small→large</th>"
        "<th>MMCS large→small</th></tr>",
    ]
    for entry in shared["layers"]:
        for src, m in entry["models"].items():
            parts.append(
                f"<tr><td>{entry['layer']}</td><td class='l'>{e(src)}</td><td>{m['d_sae_a']}</td>"
                f"<td>{m['d_sae_b']}</td><td>{m['mmcs_ab']:.4f}</td><td>{m['mmcs_ba']:.4f}</td></tr>"
            )
        bt = entry["base_vs_tuned"]
        parts.append(
            f"<tr><td>{entry['layer']}</td><td class='l'>base small ↔ tuned small</td><td></td>"
            f"<td></td><td>{bt['mmcs_ab']:.4f}</td><td>{bt['mmcs_ba']:.4f}</td></tr>"
        )
    parts.append("</table><h2>Top shared features and their explanations</h2>")
    for src, layers in util.get("features", {}).items():
        for layer, rows in layers.items():
            entry = next(x for x in shared["layers"] if str(x["layer"]) == str(layer))
            cos = {r["feature"]: r["cosine"] for r in entry["models"][src]["top_k_utility"]}
            parts.append(
                f"<h3>{e(src)}, layer {e(str(layer))}</h3><table><tr><th>feature</th>"
                "<th>max cos</th><th>|utility|</th><th class='l'>explanation</th></tr>"
            )
            for r in rows:
                parts.append(
                    f"<tr><td>{r['feature']}</td><td>{cos.get(r['feature'], float('nan')):.3f}</td>"
                    f"<td>{r['utility']:.2f}</td><td class='l'>{e(r['explanation'])}</td></tr>"
                )
            parts.append("</table>")
    parts.append("</body></html>\n")
    path = run / "analysis" / "report.html"
    atomic_write_bytes(path, "".join(parts).encode())
    return path
