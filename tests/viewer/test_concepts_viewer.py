"""Agent feature pages show each feature's best game-state concepts (from SAE_DIR/concepts.json,
read by the agents' viewer source), and the feature browser filters and sorts by them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rlsae.agents.concepts import ConceptMatches

SAE = Path("saes") / "a0" / "fc1" / "topk_64"


@pytest.fixture(scope="module")
def concept_site(agent_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the agent fixture run with its SAE matched against the RAM concepts (the real
    path: replayed RAM, the SAE's encoding), exported without frames or effect grids."""
    from rlsae.agents.concept_run import sae_concepts
    from rlsae.agents.viewer_source import viewer_source
    from rlsae.viewer.config import ExportConfig
    from rlsae.viewer.export import export_site

    run = tmp_path_factory.mktemp("concepts") / "run"
    shutil.copytree(agent_run, run, ignore=shutil.ignore_patterns("viewer"))
    res = sae_concepts(run / "agents" / "a0", run / SAE, run / "acts" / "a0" / "fc1")
    res.write(run / SAE / "concepts.json")
    cfg = ExportConfig(top=3, frames=False, effects=False)
    return run, export_site(run, run / "viewer", config=cfg, sources=[viewer_source()])


def test_pages_carry_each_features_concepts(concept_site, viewer_data) -> None:
    run, site = concept_site
    matches = ConceptMatches.read(run / SAE / "concepts.json")
    data = site.parent / "data"
    index = viewer_data(data / "index.js")
    entry = index["saes"][0]
    assert entry["concept_coverage"] == pytest.approx(matches.coverage)
    summary = viewer_data(data / "saes" / entry["id"] / "summary.js")
    assert matches.features
    for fc in matches.features:
        page = viewer_data(data / "saes" / entry["id"] / "features" / f"{fc.feature}.js")
        shown = page["concepts"]
        assert [c["concept"] for c in shown] == [m.concept for m in fc.matches]
        best = fc.matches[0]
        assert shown[0]["score"] == pytest.approx(best.score, rel=1e-3)
        assert bool(shown[0].get("negated")) == best.negated
        assert summary["labels"][fc.feature] == fc.explanation
        assert summary["concepts"][fc.feature] == ("NOT " if best.negated else "") + best.concept
        assert summary["match"][fc.feature] == pytest.approx(best.strength, rel=1e-3)
    matched = {fc.feature for fc in matches.features}
    assert all(summary["concepts"][f] is None for f in range(64) if f not in matched)


def test_browser_shows_concepts_and_filters_and_sorts_by_them(
    concept_site, browser, viewer_data
) -> None:
    run, site = concept_site
    matches = ConceptMatches.read(run / SAE / "concepts.json")
    by_strength = sorted(matches.features, key=lambda fc: (-round(fc.matches[0].strength, 4),
                                                           fc.feature))  # fmt: skip
    top = by_strength[0]
    best = top.matches[0]
    name = ("NOT " if best.negated else "") + best.concept
    with_name = sorted(
        fc.feature
        for fc in matches.features
        if ("NOT " if fc.matches[0].negated else "") + fc.matches[0].concept == name
    )
    with browser() as w:
        pg = w.page
        pg.goto(site.resolve().as_uri())
        pg.wait_for_selector("#sae-table")
        pg.click("a.sae-link")
        pg.wait_for_selector("#feature-table")
        assert "concept coverage" in pg.locator("p.muted").first.text_content()
        pg.select_option("#sort", "match")
        w.poll("location.hash.includes('sort=match')")
        pg.wait_for_selector("#feature-table")
        first = pg.locator("#feature-table a.feat-link").first
        assert first.text_content() == f"#{top.feature}"
        pg.select_option("#concept", name)
        w.poll("location.hash.includes('concept=')")
        w.poll(
            f"document.querySelectorAll('#feature-table a.feat-link').length == {len(with_name)}"
        )
        shown = pg.locator("#feature-table a.feat-link").all_text_contents()
        assert sorted(int(t[1:]) for t in shown) == with_name
        pg.select_option("#concept", "")
        pg.select_option("#filter", "strong")
        w.poll("location.hash.includes('filter=strong')")
        strong = sum(fc.matches[0].strength >= 0.8 for fc in matches.features)
        w.poll(f"document.querySelectorAll('#feature-table a.feat-link').length == {strong}")

        pg.goto(site.resolve().as_uri() + f"#sae=s0&f={top.feature}")
        pg.wait_for_selector("#concepts")
        rows = pg.locator("#concepts tr.concept")
        assert rows.count() == len(top.matches)
        assert rows.first.locator("td.concept-name").text_content() == name
        score = "AUROC " if best.kind == "bool" else "Spearman "
        assert rows.first.locator("td").nth(1).text_content().startswith(score)
        assert w.errors == [] and w.dialogs == []
