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
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlsae.fsutil import atomic_write_bytes


def explanation_utility(texts: Sequence[str], table: Any) -> float:
    """Σ over texts of Σ |U(word)| (the paper's per-feature score, summed)."""
    return float(sum(table.abs_utility(t) for t in texts))


def feature_scores(
    explanations: Mapping[str, Any], features: Sequence[int], table: Any
) -> list[dict[str, Any]]:
    """Per feature ``{feature, explanation, utility}``; missing explanations raise KeyError."""
    rows = []
    for f in features:
        entry = explanations[str(int(f))]
        samples = entry.get("samples") or [entry["explanation"]]
        util = explanation_utility(samples, table) / len(samples)
        rows.append({"feature": int(f), "explanation": entry["explanation"], "utility": util})
    return rows


def utility_tables(
    per_model: Mapping[str, Mapping[int, list[dict[str, Any]]]],
    completions: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    k: int | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Assemble Tables 3 and 4.

    ``per_model``: ``{"base": {layer: feature_scores(...)}, "tuned": {...}}``.
    ``completions``: ``{"base": score_result, "tuned": score_result}`` from
    :func:`rlsae.llm.score.score_model` (uses ``aggregate_abs_utility``, ``mean_reward``, ``n``).
    """
    table3: dict[str, Any] = {}
    for model, layers in per_model.items():
        per_layer = {
            str(layer): float(sum(r["utility"] for r in rows)) for layer, rows in layers.items()
        }
        table3[model] = {
            "score": float(sum(per_layer.values())),
            "per_layer": per_layer,
            "features": int(sum(len(rows) for rows in layers.values())),
            "nonzero_features": int(
                sum(r["utility"] > 0 for rows in layers.values() for r in rows)
            ),
        }
    table4: dict[str, Any] = {}
    for model, res in (completions or {}).items():
        table4[model] = {
            "aggregate_abs_utility": float(res["aggregate_abs_utility"]),
            "mean_reward": float(res.get("mean_reward", float("nan"))),
            "n": int(res.get("n", 0)),
        }
    out: dict[str, Any] = {"label": label, "k": k, "table3": table3, "table4": table4}
    if "base" in table3 and "tuned" in table3:
        out["table3_tuned_minus_base"] = table3["tuned"]["score"] - table3["base"]["score"]
    if "base" in table4 and "tuned" in table4:
        out["table4_tuned_minus_base"] = (
            table4["tuned"]["aggregate_abs_utility"] - table4["base"]["aggregate_abs_utility"]
        )
    return out


def tables_markdown(result: Mapping[str, Any]) -> str:
    """The two tables as Markdown (for the README and the console)."""
    label = result.get("label") or "model"
    t3, t4 = result["table3"], result["table4"]
    lines = [
        f"| Model | M_base features (top-{result.get('k')}) | M_RLHF features | "
        "M_base completions | M_RLHF completions |",
        "|---|---|---|---|---|",
    ]

    def g(d: Mapping[str, Any], model: str, key: str) -> str:
        v = d.get(model, {}).get(key)
        return "–" if v is None else f"{v:.1f}"

    lines.append(
        f"| {label} | {g(t3, 'base', 'score')} | {g(t3, 'tuned', 'score')} | "
        f"{g(t4, 'base', 'aggregate_abs_utility')} | {g(t4, 'tuned', 'aggregate_abs_utility')} |"
    )
    return "\n".join(lines)


def write_utility_html(
    result: Mapping[str, Any],
    path: str | os.PathLike,
    features: Mapping[str, Mapping[int, list[dict[str, Any]]]] | None = None,
) -> Path:
    """An HTML page with Tables 3 and 4 and, optionally, every scored explanation."""
    e = html.escape
    t3, t4 = result["table3"], result["table4"]
    k = result.get("k")
    label = e(str(result.get("label") or "model"))

    def cell(d: Mapping[str, Any], model: str, key: str) -> str:
        v = d.get(model, {}).get(key)
        return "–" if v is None else f"{v:.1f}"

    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Utility scores</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;"
        "padding:4px 10px;text-align:right}td.l,th.l{text-align:left}</style></head><body>",
        "<h1>Utility scores: features and completions</h1>",
        f"<h2>Table 3: summed absolute utility of the top-{e(str(k))} shared features' "
        "explanations</h2>",
        "<table><tr><th class='l'>Model</th><th>M_base score</th><th>M_RLHF score</th></tr>",
        f"<tr><td class='l'>{label}</td><td>{cell(t3, 'base', 'score')}</td>"
        f"<td>{cell(t3, 'tuned', 'score')}</td></tr></table>",
        "<h2>Table 4: aggregate absolute utility of completions</h2>",
        "<table><tr><th class='l'>Model</th><th>M_base</th><th>M_RLHF</th>"
        "<th>mean reward base</th><th>mean reward RLHF</th></tr>",
        f"<tr><td class='l'>{label}</td><td>{cell(t4, 'base', 'aggregate_abs_utility')}</td>"
        f"<td>{cell(t4, 'tuned', 'aggregate_abs_utility')}</td>"
        f"<td>{cell(t4, 'base', 'mean_reward')}</td><td>{cell(t4, 'tuned', 'mean_reward')}</td>"
        "</tr></table>",
    ]
    if features:
        parts.append(
            "<h2>Per layer</h2><table><tr><th class='l'>model</th><th>layer</th><th>score</th></tr>"
        )
        for model, d in t3.items():
            for layer, v in d["per_layer"].items():
                parts.append(
                    f"<tr><td class='l'>{e(model)}</td><td>{e(layer)}</td><td>{v:.2f}</td></tr>"
                )
        parts.append("</table><h2>Explanations</h2>")
        parts.append(
            "<table><tr><th class='l'>model</th><th>layer</th><th>feature</th>"
            "<th>utility</th><th class='l'>explanation</th></tr>"
        )
        for model, layers in features.items():
            for layer, rows in layers.items():
                for r in rows:
                    parts.append(
                        f"<tr><td class='l'>{e(model)}</td><td>{e(str(layer))}</td>"
                        f"<td>{r['feature']}</td><td>{r['utility']:.2f}</td>"
                        f"<td class='l'>{e(r['explanation'])}</td></tr>"
                    )
        parts.append("</table>")
    parts.append("</body></html>\n")
    path = Path(path)
    atomic_write_bytes(path, "".join(parts).encode())
    return path
