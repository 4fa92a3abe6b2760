"""The dead-features report's score table: each agent's mean return with its 95% percentile
bootstrap interval over the evaluation episodes (``return_ci_low``/``return_ci_high`` of
``agents.csv``, from :class:`rlsae.agents.results.Evaluation`)."""

from __future__ import annotations

from typing import Any

from rlsae.analysis.html import esc, html_table, num


def score_section(df: Any) -> str:
    """Each agent's mean return with its 95% percentile bootstrap interval over the evaluation
    episodes (``return_ci_low``/``return_ci_high`` of agents.csv; nothing for a table without
    them)."""
    need = ("agent", "mean_return", "return_ci_low", "return_ci_high")
    if any(c not in df.columns for c in need) or df["return_ci_low"].isna().all():
        return ""
    cols = [c for c in (*need, "episodes", "human_normalized") if c in df.columns]
    rows = []
    for _, r in df.iterrows():
        ci = f"[{num(r['return_ci_low'], '.1f')}, {num(r['return_ci_high'], '.1f')}]"
        extra = [num(r[c], ".3g") for c in cols[4:]]
        rows.append([esc(r["agent"]), num(float(r["mean_return"]), ".1f"), ci, *extra])
    headers = ["agent", "mean return", "95% CI (bootstrap over episodes)", *cols[4:]]
    return (
        "<h2>Scores</h2><p>Mean return over each agent's evaluation episodes, with the 95% "
        "percentile bootstrap interval of that mean (episodes resampled).</p>"
        + html_table(headers, rows, ("agent",))
    )
