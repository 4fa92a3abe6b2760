"""Slow: the language-model smoke pipeline end to end, then its viewer in a real browser."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_llm_smoke_pipeline_viewer(tmp_path, browser, viewer_data):
    from rlsae.analysis.mmcs import SharedFeatures
    from rlsae.commands.viewer import viewer_sources
    from rlsae.llm.explain import Explanations
    from rlsae.study.llm import run_llm_pipeline
    from rlsae.viewer.export import export_site

    run = tmp_path / "llm"
    run_llm_pipeline(run, preset="smoke")
    index = export_site(run, top=10, sources=viewer_sources())
    data = viewer_data(index.parent / "data" / "index.js")
    saes = {s["name"]: s for s in data["saes"]}
    small = next(s for n, s in saes.items() if n.startswith("base/") and n.endswith("/small"))
    assert small["kind"] == "lm" and small["unembedding"] is True
    assert small["explained"] > 0 and small["shared"] > 0
    expl = Explanations.read(run / "saes" / small["name"] / "explanations.json")
    f = int(next(iter(expl.features)))
    page = viewer_data(index.parent / "data" / "saes" / small["id"] / "features" / f"{f}.js")
    assert page["explanation"]["explanation"] == expl.features[str(f)].explanation
    shared = SharedFeatures.read(run / "analysis" / "llm_shared_features.json")
    pair = shared.layers[0].base_vs_tuned
    assert pair is not None
    bt = pair.top_k[0]
    paired = viewer_data(
        index.parent / "data" / "saes" / small["id"] / "features" / f"{bt.feature}.js"
    )
    tuned_small = next(
        s["id"] for n, s in saes.items() if n.startswith("tuned/") and n.endswith("/small")
    )
    assert {"other": tuned_small, "feature": bt.match}.items() <= {
        k: v for p in paired["pairs"] for k, v in p.items() if p["kind"] == "base_vs_tuned"
    }.items()
    with browser() as w:
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
