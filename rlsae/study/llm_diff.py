"""The LM study's ``diff`` stage (issue 14): a crosscoder between the base and the tuned model
on each chosen layer, its latents classified (``rlsae.sae.latents``), the model-only latents
and as many of the most-firing shared ones explained with the study's explainer, and the
paper's Table 3 question asked of the crosscoder: do the latents RLHF added carry the reward's
utility more than the shared ones?

The ``record`` stage records both models on the same documents and positions, so row i of the
base and the tuned store is the same token: the pair is aligned (``PairedStore`` checks it).
The stage is off unless the study config has ``diff`` (a ``CrosscoderConfig``). It writes, per
layer, ``crosscoders/HOOK/`` (the crosscoder), ``crosscoders/HOOK/latents.json``
(``rlsae.crosscoder_latents``), ``crosscoders/HOOK/norm_ratios.html`` and
``crosscoders/HOOK/explanations.json`` (``rlsae.crosscoder_explanations``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rlsae.analysis.crosscoder import CrosscoderExplanations, LatentExplanation
from rlsae.artifacts import Artifact
from rlsae.sae.crosscoder_config import CrosscoderConfig
from rlsae.study.engine import Context, Stage
from rlsae.study.llm_config import LLMStudyConfig
from rlsae.study.results import Stores

GROUPS = ("tuned_only", "base_only", "shared")
"""The latents explained, by class."""


@dataclass
class GroupUtility:
    """Summed and mean |utility| of one class's explained latents."""

    kind: str
    n: int
    """Latents explained (at most ``utility_k``; shared: the most-firing ones)."""
    summed: float
    mean: float | None
    """None: no latent of this class."""


@dataclass
class CrosscoderLayer:
    """One layer's crosscoder in the study."""

    layer: int
    hook: str
    path: str
    """The crosscoder directory, relative to the model's directory."""
    counts: dict[str, int]
    """Latents per class."""
    fvu_base: float
    fvu_tuned: float
    utility: list[GroupUtility]
    """Per explained class (tuned_only, base_only, shared)."""


@dataclass
class CrosscoderLayers(Artifact):
    """The ``diff`` stage's result for one model: a crosscoder per chosen layer."""

    FORMAT: ClassVar[str] = "rlsae.llm_study_crosscoders"
    VERSION: ClassVar[int] = 1
    layers: list[CrosscoderLayer]


def crosscoders(ctx: Context[LLMStudyConfig], unit: Any) -> CrosscoderLayers:
    """The ``diff`` stage (see the module docstring)."""
    cfg = ctx.config
    assert cfg.diff is not None  # the stage is off without it
    home = ctx.run_dir / unit.dir if unit.dir else ctx.run_dir
    hooks = ctx.result(Stores, "record", unit.name).hooks
    layers = [
        diff_layer(
            home,
            int(key),
            hook,
            cfg.diff,
            table=cfg.rlhf.table,
            explainer=cfg.explainer,
            utility_k=cfg.utility_k,
            progress=ctx.progress,
        )
        for key, hook in hooks.items()
    ]
    return CrosscoderLayers(layers)


def diff_layer(
    home: str | os.PathLike,
    layer: int,
    hook: str,
    cfg: CrosscoderConfig,
    *,
    table: str | None = None,
    explainer: str = "offline",
    utility_k: int = 30,
    progress: bool = False,
) -> CrosscoderLayer:
    """Train (or resume) the crosscoder of one layer from ``home/acts/{base,tuned}/HOOK``,
    classify, explain and score its latents, and write the files of the module docstring."""
    from rlsae.analysis.crosscoder import norm_ratio_figure
    from rlsae.analysis.figures import write_figure_html
    from rlsae.llm.rewards import UtilityTable
    from rlsae.sae.crosscoder_train import TRAINING, CrosscoderRecord, train_crosscoder
    from rlsae.sae.latents import analyse_latents
    from rlsae.sae.paired import PairedStore

    home = Path(home)
    base, tuned = home / "acts" / "base" / hook, home / "acts" / "tuned" / hook
    out = home / "crosscoders" / hook
    cc = train_crosscoder(base, tuned, out, cfg, resume=True, progress=progress)
    record = CrosscoderRecord.read(out / TRAINING)
    pair = PairedStore(base, tuned)
    info = analyse_latents(cc, pair)
    info.write(out / "latents.json")
    write_figure_html(norm_ratio_figure(info), out / "norm_ratios.html", title=f"{hook} latents")
    chosen: dict[str, list[int]] = {}
    for kind in GROUPS:
        rows = sorted((r for r in info.latents if r.kind == kind), key=lambda r: -r.fires)
        chosen[kind] = [r.latent for r in rows[:utility_k]]
    util = UtilityTable.load(table)
    expl = explain_latents(cc, pair, chosen, util, explainer)
    expl.write(out / "explanations.json")
    groups = []
    for kind in GROUPS:
        values = [e.utility for e in expl.latents if e.kind == kind]
        mean = sum(values) / len(values) if values else None
        groups.append(GroupUtility(kind, len(values), sum(values), mean))
    return CrosscoderLayer(
        layer=layer,
        hook=hook,
        path=out.relative_to(home).as_posix(),
        counts=info.counts,
        fvu_base=record.final.fvu_base,
        fvu_tuned=record.final.fvu_tuned,
        utility=groups,
    )


def explain_latents(
    cc: Any, pair: Any, chosen: dict[str, list[int]], table: Any, explainer: str = "offline"
) -> CrosscoderExplanations:
    """Explain the ``chosen`` latents (by class) with the study's explainer on the pair's token
    contexts (the base store's: both stores hold the same tokens), each explanation scored by
    its |utility| under ``table``."""
    import torch

    from rlsae.llm.configs import ExplainConfig
    from rlsae.llm.explain import (
        ChatEndpoint,
        feature_records,
        llm_explanation,
        offline_explanation,
    )

    ecfg = ExplainConfig(method=explainer)
    endpoint = None
    if explainer == "llm":
        endpoint = ChatEndpoint.from_options(None, None, None, ecfg.timeout, ecfg.temperature)
    context = pair.context()
    latents = [j for js in chosen.values() for j in js]
    acts: list[torch.Tensor] = []
    with torch.no_grad():
        for x in pair.iter_sequential(4096):
            acts.append(cc.encode(*pair.split(x))[:, latents])
    matrix = torch.cat(acts) if acts else torch.zeros((0, len(latents)))
    out = CrosscoderExplanations(method="offline-lift" if endpoint is None else "llm")
    col = 0
    for kind, js in chosen.items():
        for j in js:
            rec = feature_records(matrix[:, col], context, j, ecfg.n_top, ecfg.n_records)
            col += 1
            if endpoint is None:
                text, _ = offline_explanation(rec, context, ecfg)
            else:
                text = llm_explanation(rec, endpoint)
            out.latents.append(LatentExplanation(j, kind, text, table.abs_utility(text)))
    return out


def diff_summary(ctx: Context[LLMStudyConfig], unit: Any) -> dict[str, Any]:
    """``{"diff": [per layer: layer, counts, fvu, summed and mean |utility| per class]}`` for
    the study's summary beside Tables 3 and 4; ``{}`` while the stage is off or not done."""
    if ctx.config.diff is None or ctx.marker("diff", unit.name) is None:
        return {}
    layers = ctx.result(CrosscoderLayers, "diff", unit.name).layers
    return {"diff": [dataclasses.asdict(layer) for layer in layers]}


DIFF_STAGE = Stage(
    "diff",
    crosscoders,
    CrosscoderLayers,
    after=("record",),
    per="model",
    skip_if=lambda cfg: cfg.diff is None,
)
"""The stage as the LM study declares it (off without ``diff`` in the config)."""
