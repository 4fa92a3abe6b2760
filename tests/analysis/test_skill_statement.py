"""The Atari report says plainly when a population is no better than random play (the demo's
agents: 120-592 points, human-normalised below 0.05), and names how to study the poster's own."""

from __future__ import annotations

import pandas as pd

from rlsae.analysis.report import POSTER_COMMAND, skill_statement


def _hn(points: float) -> float:
    return (points - 307.3) / (6951.6 - 307.3)


def test_demo_population_is_called_no_better_than_random() -> None:
    demo = [215, 285, 257.5, 332.5, 147.5, 592.5, 332.5, 120]
    df = pd.DataFrame({"mean_return": demo, "human_normalized": [_hn(r) for r in demo]})
    text = skill_statement(df)
    assert "120–592 points" in text and "human-normalised -0.03 to 0.04" in text
    assert "no better than random" in text and POSTER_COMMAND in text


def test_a_skilled_agent_lifts_the_statement() -> None:
    scores = [300.0, 1427.5]  # the poster's dqn5, imported, scored 1427.5 greedy
    df = pd.DataFrame({"mean_return": scores, "human_normalized": [_hn(r) for r in scores]})
    text = skill_statement(df)
    assert "human-normalised -0.00 to 0.17" in text and "no better than random" not in text
    assert skill_statement(pd.DataFrame({"mean_return": scores})) == ""
