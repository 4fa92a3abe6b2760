"""The agent side: exported frames equal the emulator's replay, activations equal the SAE's,
and the pages load every image in a real headless browser."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch


def _live(site: Path, viewer_data) -> list[int]:
    summary = viewer_data(site.parent / "data" / "saes" / "s0" / "summary.js")
    return [i for i, d in enumerate(summary["density"]) if d > 0]


def test_agent_pages_match_replay_and_sae(agent_run: Path, agent_site: Path, viewer_data):
    from PIL import Image

    from rlsae.agents.replay import replay_frames
    from rlsae.sae import ActivationStore, load_sae

    store = ActivationStore(agent_run / "acts" / "a0" / "fc1")
    sae = load_sae(agent_run / "saes" / "a0" / "fc1" / "topk_64")
    ctx = store.context()
    live = _live(agent_site, viewer_data)
    assert live
    f = live[0]
    page = viewer_data(agent_site.parent / "data" / "saes" / "s0" / "features" / f"{f}.js")
    top = page["top"]
    assert 1 <= len(top) <= 5
    assert len({t["episode"] for t in top}) == len(top)  # distinct episodes
    acts = [t["act"] for t in top]
    assert acts == sorted(acts, reverse=True)
    with torch.no_grad():
        a = sae.encode(store.read_rows(np.array([t["row"] for t in top])))[:, f].numpy()
    np.testing.assert_allclose(acts, a, rtol=1e-5)
    for t in top:
        assert int(ctx["episode"].iat[t["row"]]) == t["episode"]
        assert int(ctx["step"].iat[t["row"]]) == t["step"]
        grid = np.array(t["grid"])
        assert grid.shape == (3, 3) and np.isfinite(grid).all()
        assert len(t["clip_acts"]) == 9
        assert abs(t["clip_acts"][6] - t["act"]) <= 1e-3 * max(1.0, abs(t["act"]))  # the state
    # the exported PNG is exactly the emulator's replayed frame (computed by another path)
    t = top[0]
    frame = replay_frames(store.path, t["episode"], [t["step"]])[0]
    png = np.asarray(Image.open(io.BytesIO((agent_site.parent / t["frame"]).read_bytes())))
    np.testing.assert_array_equal(png, frame)
    gif = Image.open(agent_site.parent / t["clip"])
    assert gif.n_frames >= 2 and gif.size == (160, 210)


def test_agent_site_in_browser(agent_site: Path, browser, viewer_data):
    url = agent_site.resolve().as_uri()
    f = _live(agent_site, viewer_data)[0]
    with browser() as w:
        pg = w.page
        pg.goto(url)
        pg.wait_for_selector("#sae-table")
        pg.click("a.sae-link")
        pg.wait_for_selector("#feature-table")
        pg.select_option("#filter", "live")
        w.poll("location.hash.includes('filter=live')")
        pg.wait_for_selector("#feature-table")
        first = pg.locator("#feature-table a.feat-link").first
        assert first.text_content() == f"#{f}"
        first.click()
        pg.wait_for_selector("figure.state")
        pg.wait_for_load_state("load")
        w.poll("Array.from(document.images).every(i => i.complete)")
        n_states = pg.locator("figure.state").count()
        assert n_states >= 1
        assert pg.locator("img.frame").count() == n_states
        assert pg.locator("img.clip").count() == n_states
        assert pg.locator("table.effect-grid").count() == n_states
        assert pg.locator("table.effect-grid").first.locator("td").count() == 9
        assert w.images_loaded() == []
        widths = pg.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
        assert widths and all(x == 160 for x in widths)
        pg.fill("#jump", "3")
        pg.press("#jump", "Enter")
        w.poll("document.querySelector('#feature-title')?.textContent.endsWith('#3')")
        assert w.errors == []
        assert w.dialogs == []
