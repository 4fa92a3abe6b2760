"""Utility scores of a tuned model's features: the paper's Tables 3 and 4 side by side.

* **Table 3** (features): for each model (base, tuned), the summed absolute utility
  Σ_f Σ_{word ∈ explanation(f)} |U(word)| of the explanations of the top-k shared features
  (top-k by MMCS between the large and the small SAE) of each of the top-n divergent layers,
  under the utility table. ``score`` sums over all layers; ``per_layer`` gives each layer's sum.
  With several explanation samples per feature the score is their mean (the paper averaged
  three GPT-4 samples).
* **Table 4** (behaviour): the aggregate absolute utility of the completions of test prefixes
  (``rlsae llm score``: ``aggregate_abs_utility`` over 100 completions of 30-token prefixes).

If the tuned model learned the table, both numbers should be higher for it than for the base.
When the explanations were scored on held-out contexts (:mod:`rlsae.llm.scoring`), Table 3 is
also given restricted to the explanations whose detection score reaches ``score_threshold``
(``table3_scored``): an explanation that predicts nothing about its feature says little about
what the feature encodes. Both versions are reported.
The result is :class:`UtilityTables` (``rlsae.utility-tables``, ``analysis/utility.json``);
:func:`rlsae.analysis.report.write_utility_html` draws it as a page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from rlsae.artifacts import Artifact


class WordUtility(Protocol):
    """What the scores need of a utility table (e.g. :class:`rlsae.llm.rewards.UtilityTable`)."""

    def abs_utility(self, text: str) -> float:
        """Σ |U(word)| over the words of ``text``."""
        ...


@dataclass
class ScoredFeature:
    """One explained feature and the summed absolute utility of its explanation."""

    feature: int
    """Feature index in the (small) SAE."""
    explanation: str
    """The explanation text."""
    utility: float
    """Σ |U(word)| over the explanation (mean over samples when there are several)."""
    detection: float | None = None
    """Detection balanced accuracy of the explanation on held-out contexts; None if unscored."""
    fuzzing: float | None = None
    """Fuzzing balanced accuracy; None if unscored."""
    simulation: float | None = None
    """Simulation correlation; None if unscored."""


@dataclass
class FeatureScore:
    """Table 3 for one model."""

    score: float
    """Σ over layers and features of the explanations' absolute utility."""
    per_layer: dict[str, float] = field(default_factory=dict)
    """The same sum per layer (keys are layer indices as strings)."""
    features: int = 0
    """Features scored."""
    nonzero_features: int = 0
    """Features whose explanation has a non-zero utility."""


@dataclass
class CompletionScore:
    """Table 4 for one model."""

    aggregate_abs_utility: float
    """Aggregate absolute utility of the completions of the test prefixes."""
    mean_reward: float | None = None
    """Mean reward of those completions; None when the scorer reported none."""
    n: int = 0
    """Completions scored."""


@dataclass
class UtilityTables(Artifact):
    """The paper's Tables 3 and 4 for one model (``analysis/utility.json``)."""

    FORMAT: ClassVar[str] = "rlsae.utility-tables"
    VERSION: ClassVar[int] = 2
    """2 added the explanation scores and ``table3_scored``; version 1 files are still read."""

    label: str = ""
    """Model label shown in the tables (e.g. ``pythia-70m``)."""
    k: int | None = None
    """Shared features per layer scored (top-k by MMCS); None when not given."""
    table3: dict[str, FeatureScore] = field(default_factory=dict)
    """Per model (``base``, ``tuned``): the features' summed absolute utility."""
    table4: dict[str, CompletionScore] = field(default_factory=dict)
    """Per model: the completions' aggregate absolute utility."""
    table3_tuned_minus_base: float | None = None
    """Table 3 tuned score minus base score; None unless both models are in ``table3``."""
    table4_tuned_minus_base: float | None = None
    """Table 4 tuned minus base; None unless both models are in ``table4``."""
    layers: list[int] = field(default_factory=list)
    """Layers scored, in the study's order."""
    explainer: str = ""
    """Explanation method (e.g. ``top-tokens``); empty when not recorded."""
    features: dict[str, dict[str, list[ScoredFeature]]] = field(default_factory=dict)
    """Per model and layer (as a string): every scored feature."""
    score_threshold: float | None = None
    """Detection score an explanation needs to count in ``table3_scored``; None: no restriction."""
    table3_scored: dict[str, FeatureScore] = field(default_factory=dict)
    """Table 3 over the explanations with detection >= ``score_threshold`` only (unscored ones
    are left out); empty without a threshold."""
    table3_scored_tuned_minus_base: float | None = None
    """``table3_scored`` tuned minus base; None unless both models are in it."""
    scorer: str = ""
    """Who scored the explanations (as outputs name it); empty when unscored."""

    @classmethod
    def from_json(cls, data: Any, where: str = "") -> UtilityTables:
        """Also reads version 1 (the same layout without explanation scores)."""
        if isinstance(data, dict) and data.get("format") == cls.FORMAT and data.get("version") == 1:
            data = {**data, "version": cls.VERSION}
        return super().from_json(data, where)


def explanation_utility(texts: Sequence[str], table: WordUtility) -> float:
    """Σ over texts of Σ |U(word)| (the paper's per-feature score, summed)."""
    return float(sum(table.abs_utility(t) for t in texts))


def feature_scores(
    explanations: Mapping[str, Any], features: Sequence[int], table: WordUtility
) -> list[ScoredFeature]:
    """Score each feature's explanation; ``explanations`` maps the feature index (a string) to
    ``{"explanation": text, "samples": [texts] (optional)}`` (or an object with those
    attributes); a missing feature raises KeyError."""
    rows = []
    for f in features:
        entry = explanations[str(int(f))]
        text = str(_get(entry, "explanation"))
        samples = _get(entry, "samples") or [text]
        util = explanation_utility(samples, table) / len(samples)
        sc = _get(entry, "scores") or {}
        got = {m: _get(sc, m) for m in ("detection", "fuzzing", "simulation")}
        rows.append(ScoredFeature(int(f), text, util, **got))
    return rows


def _table3(layers: Mapping[Any, Sequence[ScoredFeature]]) -> FeatureScore:
    per_layer = {str(L): float(sum(r.utility for r in rows)) for L, rows in layers.items()}
    return FeatureScore(
        score=float(sum(per_layer.values())),
        per_layer=per_layer,
        features=sum(len(rows) for rows in layers.values()),
        nonzero_features=sum(r.utility > 0 for rows in layers.values() for r in rows),
    )


def _passes(row: ScoredFeature, threshold: float) -> bool:
    return row.detection is not None and row.detection >= threshold


def _get(obj: Any, key: str) -> Any:
    """``obj[key]`` of a mapping or ``obj.key`` of an artifact; None when absent."""
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _completion(res: CompletionScore | Mapping[str, Any] | Any) -> CompletionScore:
    """A Table 4 row from a score result (a mapping or an object with the same attributes)."""
    if isinstance(res, CompletionScore):
        return res
    agg, mean = _get(res, "aggregate_abs_utility"), _get(res, "mean_reward")
    if agg is None:
        raise KeyError("aggregate_abs_utility")
    return CompletionScore(
        aggregate_abs_utility=float(agg),
        mean_reward=None if mean is None else float(mean),
        n=int(_get(res, "n") or 0),
    )


def utility_tables(
    per_model: Mapping[str, Mapping[int, list[ScoredFeature]]],
    completions: Mapping[str, Any] | None = None,
    *,
    k: int | None = None,
    label: str = "",
    explainer: str = "",
    score_threshold: float | None = None,
    scorer: str = "",
) -> UtilityTables:
    """Assemble Tables 3 and 4.

    ``per_model``: ``{"base": {layer: feature_scores(...)}, "tuned": {...}}``.
    ``completions``: ``{"base": score, "tuned": score}``, each with ``aggregate_abs_utility``,
    ``mean_reward`` and ``n`` (as :func:`rlsae.llm.score.score_model` reports them).
    ``score_threshold``: also Table 3 over the explanations whose detection score reaches it.
    """
    out = UtilityTables(
        label=label, k=k, explainer=explainer, score_threshold=score_threshold, scorer=scorer
    )
    for model, layers in per_model.items():
        out.table3[model] = _table3(layers)
        if score_threshold is not None:
            kept = {
                L: [r for r in rows if _passes(r, score_threshold)] for L, rows in layers.items()
            }
            out.table3_scored[model] = _table3(kept)
        out.features[model] = {str(L): list(rows) for L, rows in layers.items()}
        out.layers += [int(L) for L in layers if int(L) not in out.layers]
    for model, res in (completions or {}).items():
        out.table4[model] = _completion(res)
    t3, t4 = out.table3, out.table4
    if "base" in t3 and "tuned" in t3:
        out.table3_tuned_minus_base = t3["tuned"].score - t3["base"].score
    t3s = out.table3_scored
    if "base" in t3s and "tuned" in t3s:
        out.table3_scored_tuned_minus_base = t3s["tuned"].score - t3s["base"].score
    if "base" in t4 and "tuned" in t4:
        out.table4_tuned_minus_base = (
            t4["tuned"].aggregate_abs_utility - t4["base"].aggregate_abs_utility
        )
    return out


def _cell(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def tables_markdown(result: UtilityTables) -> str:
    """The two tables as Markdown (for the README and the console)."""
    t3, t4 = result.table3, result.table4

    def s3(m: str) -> str:
        return _cell(t3[m].score if m in t3 else None)

    def s4(m: str) -> str:
        return _cell(t4[m].aggregate_abs_utility if m in t4 else None)

    lines = [
        f"| Model | M_base features (top-{result.k}) | M_RLHF features | "
        "M_base completions | M_RLHF completions |",
        "|---|---|---|---|---|",
        f"| {result.label or 'model'} | {s3('base')} | {s3('tuned')} | "
        f"{s4('base')} | {s4('tuned')} |",
    ]
    return "\n".join(lines)


def table3_scored_markdown(result: UtilityTables) -> str:
    """Table 3 unrestricted and over the explanations with detection >= the threshold (with
    the features kept of those explained), as Markdown; empty without a threshold."""
    if result.score_threshold is None:
        return ""
    t3, ts = result.table3, result.table3_scored

    def row(table: Mapping[str, FeatureScore], name: str) -> str:
        cells = [
            f"{_cell(table[m].score)} ({table[m].features}/{t3[m].features})"
            if m in table and m in t3
            else "–"
            for m in ("base", "tuned")
        ]
        return f"| {result.label or 'model'}, {name} | {cells[0]} | {cells[1]} |"

    return "\n".join(
        [
            f"| Table 3 (top-{result.k}) | M_base features | M_RLHF features |",
            "|---|---|---|",
            row(t3, "all explanations"),
            row(ts, f"detection ≥ {result.score_threshold:g}"),
            "",
            f"Explanations scored by {result.scorer or 'nobody'}.",
        ]
    )
