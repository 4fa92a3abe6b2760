"""The exported language-model viewer in a real headless browser, opened from file://."""

from __future__ import annotations

from pathlib import Path


def test_lm_site_navigates_and_renders_data_as_text(
    lm_site: Path, browser, markup: str, dead_feature: int
):
    url = lm_site.resolve().as_uri()
    with browser() as w:
        pg = w.page
        pg.goto(url)
        pg.wait_for_selector("#sae-table")
        links = pg.locator("a.sae-link")
        assert links.count() == 2
        assert links.nth(0).text_content() == "base/blocks.1.hook_resid_post/relu_64"
        links.nth(0).click()
        pg.wait_for_selector("#feature-table")
        assert pg.locator("#feature-table tbody tr").count() == 64
        assert pg.locator("#density-hist rect.bar").count() > 1

        # search by index
        pg.fill("#jump", "5")
        pg.press("#jump", "Enter")
        w.poll("document.querySelector('#feature-title')?.textContent.endsWith('#5')")
        assert "film words" in pg.locator("#explanation").text_content()

        # feature 0: its contexts and explanation hold the markup token
        pg.goto(url + "#sae=s0&f=0")
        pg.wait_for_selector("#top-contexts")
        toks = pg.locator("#top-contexts span.tok").all_text_contents()
        assert markup in toks  # shown literally, as one token
        assert markup in pg.locator("#explanation .expl-text").text_content()
        assert pg.locator("img").count() == 0  # the markup made no element
        assert pg.locator("ol.tokens.pos li").count() == 10
        assert pg.locator("ol.tokens.neg li").count() == 10
        assert "utility score 1.25" in pg.locator("#explanation").text_content()
        scores = pg.locator("#explanation .expl-scores").text_content()
        assert "detection 0.95 · fuzzing 0.75 · simulation –" in scores
        assert "offline-token-set" in scores and "not a language model" in scores
        assert pg.locator("#act-hist rect.bar").count() == 30
        assert "%" in pg.locator("#firing-rate").text_content()
        # base-vs-tuned pairing links to the tuned SAE's feature 7
        pair_items = pg.locator("#pairs li").all_text_contents()
        assert len(pair_items) == 2  # top_k and top_k_utility list the same pair once
        assert "base_vs_tuned: tuned/blocks.1.hook_resid_post/relu_64 #7" in pair_items[0]
        assert "models/base: base/blocks.1.hook_resid_post/large_missing #2" in pair_items[1]
        assert pg.locator("#pairs a.pair-link").count() == 1  # the missing SAE is not linked
        pg.click("#pairs a.pair-link")
        w.poll("document.querySelector('#feature-title')?.textContent.endsWith('#7')")
        assert pg.locator("#feature-title").text_content().startswith("tuned/")

        # the dead feature is listed and labelled as such
        pg.goto(url + "#sae=s0&filter=dead")
        pg.wait_for_selector("#feature-table")
        rows = pg.locator("#feature-table tbody tr")
        assert rows.count() == 1
        assert rows.first.locator("td").nth(0).text_content() == f"#{dead_feature}"
        assert rows.first.locator("td").nth(1).text_content() == "dead"
        rows.first.locator("a").click()
        pg.wait_for_selector("#dead-banner")

        # sorting by density puts the densest feature first
        pg.goto(url + "#sae=s0&sort=density")
        pg.wait_for_selector("#feature-table")
        first = pg.locator("#feature-table tbody tr").first.locator("td").nth(2).text_content()
        assert first.endswith("%")

        assert w.images_loaded() == []
        assert w.dialogs == []
        assert w.errors == []
        assert all(u.startswith("file://") for u in w.requests), w.requests
