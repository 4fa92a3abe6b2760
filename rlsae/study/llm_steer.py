"""The IRM study's ``steer`` stage (issue 16): does pushing a shared feature move the reward?

For each model (base and tuned), each chosen layer and each of the small SAE's ``features`` top
shared features (the MMCS ranking of the ``mmcs`` stage), completions of test prefixes are
sampled with ``+alpha`` and ``-alpha`` times the feature's decoder row added at the hook of that
model (:func:`rlsae.llm.steer.steer_model`), ``alpha`` being ``scale`` times the mean norm of the
hook's recorded activations, and with the feature ablated (its part of the SAE's reconstruction
removed), each scored with the study's reward against the unsteered completions of the same
prefixes and seed. When the study's ``diff`` stage is on, the crosscoder's top ``features``
tuned-only and base-only latents (by how often they fire) are pushed too: ``±alpha`` times the
latent's unit decoder direction on the tuned (tuned-only) or base (base-only) side, in both
models (:func:`rlsae.llm.steer.steer_direction`) — does a latent RLHF added raise the reward when
pushed into the base model? Off unless the study config has ``steer`` (a
:class:`~rlsae.llm.causal_configs.StudySteerConfig`). Writes ``analysis/llm_steer.json`` (this
stage's result, :class:`~rlsae.analysis.steer_table.SteerTable`) and the table
``analysis/llm_steer.md``; the model's ``report`` (after this stage) shows it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rlsae.analysis.mmcs import SharedFeatures
from rlsae.analysis.steer_table import STEER_FILE, SteerRow, SteerTable
from rlsae.fsutil import atomic_write_bytes
from rlsae.llm.causal_configs import LMSteerConfig
from rlsae.study.engine import Context, Stage
from rlsae.study.llm_config import LLMStudyConfig
from rlsae.study.results import BaseModel, SAEPairs, Stores, TunedModel

SOURCES = ("base", "tuned")


def mean_norm(store_dir: str | Path, max_rows: int = 65536) -> float:
    """Mean Euclidean norm of the first ``max_rows`` rows of an activation store."""
    from rlsae.sae.store import ActivationStore

    store = ActivationStore(store_dir)
    x = store.read_rows(range(min(max_rows, store.rows)))
    return float(x.float().norm(dim=1).mean())


def steer_rows(
    model: str,
    src: str,
    layer: int,
    sae_dir: str | Path,
    features: list[int],
    alpha: float,
    base_cfg: LMSteerConfig,
    loaded: tuple[Any, Any] | None = None,
) -> list[SteerRow]:
    """Rows for ``features`` of one SAE steered with +alpha and -alpha in ``model``, and
    ablated (``loaded``: the model and tokenizer, already loaded)."""
    from rlsae.llm.models import load_model
    from rlsae.llm.steer import steer_model
    from rlsae.sae.model import load_sae

    hf_model, tokenizer = loaded or load_model(model)
    sae = load_sae(sae_dir)
    rows = []
    for f in features:
        for a, ablate in ((alpha, False), (-alpha, False), (0.0, True)):
            cfg = dataclasses.replace(base_cfg, alpha=a, ablate=ablate)
            res = steer_model(model, sae, f, cfg, hf_model=hf_model, tokenizer=tokenizer)
            rows.append(_row(src, layer, f, res, "ablate" if ablate else "add", "shared"))
    return rows


def crosscoder_rows(
    model: str,
    src: str,
    layer: int,
    hook: str,
    cc_dir: str | Path,
    kind: str,
    features: int,
    alpha: float,
    base_cfg: LMSteerConfig,
    loaded: tuple[Any, Any] | None = None,
) -> list[SteerRow]:
    """Rows for the crosscoder's top ``features`` latents of ``kind`` (``tuned_only`` or
    ``base_only``, by how often they fire), each latent's unit decoder direction on its own
    side pushed with +alpha and -alpha at ``hook`` of ``model`` (``loaded``: the model and
    tokenizer, already loaded)."""
    from rlsae.llm.models import load_model
    from rlsae.llm.steer import steer_direction
    from rlsae.sae.crosscoder import load_crosscoder
    from rlsae.sae.latents import LatentAnalysis

    info = LatentAnalysis.read(Path(cc_dir) / "latents.json")
    chosen = sorted((r for r in info.latents if r.kind == kind), key=lambda r: -r.fires)
    if not chosen[:features]:
        return []
    cc = load_crosscoder(cc_dir)
    side = 1 if kind == "tuned_only" else 0
    hf_model, tokenizer = loaded or load_model(model)
    rows = []
    for r in chosen[:features]:
        d = cc.W_dec[side, r.latent].detach().float()
        for a in (alpha, -alpha):
            cfg = dataclasses.replace(base_cfg, alpha=a)
            res = steer_direction(
                model, hook, d / d.norm(), cfg, label=r.latent, source=str(cc_dir),
                hf_model=hf_model, tokenizer=tokenizer,
            )  # fmt: skip
            rows.append(_row(src, layer, r.latent, res, "add", kind))
    return rows


def _row(src: str, layer: int, feature: int, res: Any, intervention: str, latents: str) -> SteerRow:
    return SteerRow(
        model=src,
        layer=layer,
        feature=feature,
        alpha=res.alpha,
        mean_unsteered=res.mean_reward_unsteered,
        mean_steered=res.mean_reward_steered,
        delta=res.delta,
        ci95=res.ci95,
        changed=res.changed,
        intervention=intervention,
        latents=latents,
    )


def steer_stage(ctx: Context[LLMStudyConfig], unit: Any) -> SteerTable:
    """Steer each model's top shared features both ways (see the module doc)."""
    from rlsae.llm.models import load_model

    cfg = ctx.config
    scfg = cfg.steer
    assert scfg is not None  # the stage is off without it
    home = ctx.run_dir / unit.dir if unit.dir else ctx.run_dir
    base = ctx.result(BaseModel, "pretrain", unit.name)
    refs = {"base": base.ref, "tuned": ctx.result(TunedModel, "rlhf", unit.name).ref}
    hooks = ctx.result(Stores, "record", unit.name).hooks
    pairs = ctx.result(SAEPairs, "saes", unit.name)
    shared = SharedFeatures.read(home / "analysis" / "llm_shared_features.json")
    steer_cfg = LMSteerConfig(
        prefixes=scfg.prefixes,
        prefix_tokens=cfg.score_prefix_tokens,
        max_new_tokens=scfg.max_new_tokens,
        seed=cfg.seed,
        data=base.data,
        reward=cfg.rlhf.reward,
        table=cfg.rlhf.table,
        classifier=cfg.rlhf.classifier,
    )
    table = SteerTable(features=scfg.features, scale=scfg.scale, prefixes=scfg.prefixes)
    for src in SOURCES:
        loaded = load_model(refs[src])  # once per model, for every layer and kind of row
        for key, hook in hooks.items():
            layer = int(key)
            feats = [m.feature for m in shared.layer(layer).models[src].top_k][: scfg.features]
            alpha = scfg.scale * mean_norm(home / "acts" / src / hook)
            sae_dir = home / pairs.path(src, layer, "small")
            table.rows += steer_rows(
                refs[src], src, layer, sae_dir, feats, alpha, steer_cfg, loaded
            )
            if cfg.diff is not None:
                cc_dir = home / "crosscoders" / hook
                for kind in ("tuned_only", "base_only"):
                    table.rows += crosscoder_rows(
                        refs[src], src, layer, hook, cc_dir, kind, scfg.features, alpha,
                        steer_cfg, loaded,
                    )  # fmt: skip
    analysis = home / "analysis"
    table.write(analysis / STEER_FILE)
    atomic_write_bytes(analysis / "llm_steer.md", (table.markdown(unit.name) + "\n").encode())
    return table


def no_steer(cfg: LLMStudyConfig) -> bool:
    """The stage is off unless the config has ``steer``."""
    return cfg.steer is None


STEER_STAGE = Stage(
    "steer",
    steer_stage,
    SteerTable,
    after=("pretrain", "rlhf", "record", "saes", "mmcs", "diff"),
    per="model",
    skip_if=no_steer,
)
"""The stage as the study declares it."""
