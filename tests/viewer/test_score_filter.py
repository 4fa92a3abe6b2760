"""The feature table filtered by explanation score, in a real headless browser (file://).

The LM fixture explains features 0 (scored offline: detection 0.95, fuzzing 0.75, no
simulation) and 5 (explained, not scored); every other feature has no explanation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path


def _summary(site: Path) -> dict:
    """The feature table data of the first SAE (``site`` is the index page)."""
    text = (site.parent / "data" / "saes" / "s0" / "summary.js").read_text()
    return json.loads(re.fullmatch(r'RLSAE\.put\("[^"]+",(.*)\);\n', text, re.S).group(1))


def test_summary_carries_each_features_scores(lm_site: Path) -> None:
    scores = _summary(lm_site)["scores"]
    assert set(scores) == {"detection", "fuzzing"}  # no feature has a simulation score
    assert scores["detection"][0] == 0.95 and scores["fuzzing"][0] == 0.75
    assert [i for i, v in enumerate(scores["detection"]) if v is not None] == [0]


def _listed(pg) -> list[str]:
    pg.wait_for_selector("#feature-table")
    return pg.locator("#feature-table tbody tr td:first-child").all_text_contents()


def test_feature_table_filters_by_explanation_score(lm_site: Path, browser) -> None:
    url = lm_site.resolve().as_uri()
    with browser() as w:
        pg = w.page
        pg.goto(url + "#sae=s0")
        assert len(_listed(pg)) == 64  # no score filter: every feature
        assert pg.locator("#score option").all_text_contents() == ["any", "detection", "fuzzing"]
        assert pg.locator("#score-min").input_value() == "0.75"  # the report's threshold

        pg.select_option("#score", "detection")  # detection >= 0.75: feature 0 only
        w.poll("location.hash.includes('score=detection')")
        assert _listed(pg) == ["#0"]
        heads = pg.locator("#feature-table thead th").all_text_contents()
        assert "detection" in heads
        assert pg.locator("#feature-table td.expl-score").all_text_contents() == ["0.95"]

        pg.fill("#score-min", "0.96")  # above its score: nothing left
        pg.dispatch_event("#score-min", "change")
        w.poll("location.hash.includes('min=0.96')")
        pg.wait_for_selector("#feature-table")
        assert pg.locator("#feature-table tbody tr").count() == 0
        assert "(0 features)" in pg.locator(".pager").text_content()

        pg.goto(url + "#sae=s0&score=fuzzing&min=0.75")  # 0.75 >= 0.75: kept
        assert _listed(pg) == ["#0"]
        pg.goto(url + "#sae=s0&score=fuzzing&min=0.8")
        pg.wait_for_selector("#feature-table")
        assert pg.locator("#feature-table tbody tr").count() == 0
        # with the live filter and a sort the score filter stays
        pg.goto(url + "#sae=s0&filter=live&sort=density&score=detection&min=0.5")
        assert _listed(pg) == ["#0"]
        assert pg.locator("#score").input_value() == "detection"
        pg.select_option("#score", "")  # back to any: every live feature
        w.poll("!location.hash.includes('score=')")
        assert len(_listed(pg)) > 1

        assert w.dialogs == [] and w.errors == []
