"""Slow: the language-model smoke pipeline end to end, then its viewer in a real browser."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from viewer_browser import browser_page  # noqa: E402


def _data(path: Path) -> dict:
    text = path.read_text()
    return json.loads(text[text.index(",") + 1 : text.rstrip().rindex(")")])


@pytest.mark.slow
def test_llm_smoke_pipeline_viewer(tmp_path):
    from rlsae.study.llm import run_llm_pipeline
    from rlsae.viewer.export import export_site

    run = tmp_path / "llm"
    run_llm_pipeline(run, preset="smoke")
    index = export_site(run, top=10)
    data = _data(index.parent / "data" / "index.js")
    saes = {s["name"]: s for s in data["saes"]}
    small = next(s for n, s in saes.items() if n.startswith("base/") and n.endswith("/small"))
    assert small["kind"] == "lm" and small["unembedding"] is True
    assert small["explained"] > 0 and small["shared"] > 0
    expl = json.loads((run / "saes" / small["name"] / "explanations.json").read_text())
    f = int(next(iter(expl["features"])))
    page = _data(index.parent / "data" / "saes" / small["id"] / "features" / f"{f}.js")
    assert page["explanation"]["explanation"] == expl["features"][str(f)]["explanation"]
    shared = json.loads((run / "analysis" / "llm_shared_features.json").read_text())
    bt = shared["layers"][0]["base_vs_tuned"]["top_k"][0]
    paired = _data(
        index.parent / "data" / "saes" / small["id"] / "features" / f"{bt['feature']}.js"
    )
    tuned_small = next(
        s["id"] for n, s in saes.items() if n.startswith("tuned/") and n.endswith("/small")
    )
    assert {"other": tuned_small, "feature": bt["match"]}.items() <= {
        k: v for p in paired["pairs"] for k, v in p.items() if p["kind"] == "base_vs_tuned"
    }.items()
    with browser_page() as w:
        pg = w.page
        pg.goto(index.resolve().as_uri() + f"#sae={small['id']}&f={f}")
        pg.wait_for_selector("#top-contexts")
        assert (
            pg.locator("#explanation .expl-text").text_content()
            == page["explanation"]["explanation"]
        )
        assert pg.locator("#top-contexts .context").count() == len(page["top"])
        pg.goto(index.resolve().as_uri())
        pg.wait_for_selector("#sae-table")
        assert pg.locator("a.sae-link").count() == len(saes)
        assert w.errors == [] and w.dialogs == []
