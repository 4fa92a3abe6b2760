"""Crosscoder pages of an agent crosscoder (issue 14, Viewer): each latent's top rows are shown
as the game frames replayed from the recording, one PNG per top row."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rlsae.agents.crossrecord import record_on_recording
from rlsae.agents.replay import replay_frames
from rlsae.sae.crosscoder import load_crosscoder
from rlsae.sae.crosscoder_config import CrosscoderConfig
from rlsae.sae.crosscoder_train import train_crosscoder
from rlsae.sae.paired import PairedStore
from rlsae.sae.store import ActivationStore

TOP = 3


def _viewer_helper(name: str) -> Any:
    """A helper module of tests/viewer, loaded by path as its conftest does."""
    import importlib.util
    import sys

    path = Path(__file__).parents[1] / "viewer" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"rlsae_ccpages_tests_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_agent_crosscoder_pages_show_each_top_row_as_its_replayed_frame(
    poster_agent, poster_recording, tmp_path, run_cli
):
    early = record_on_recording(
        poster_recording, poster_agent / "checkpoints" / "step_100", tmp_path / "early"
    )
    cfg = CrosscoderConfig(d_sae=32, k=4, steps=20, batch_size=64)
    train_crosscoder(early, poster_recording, tmp_path / "cc", cfg, progress=False)
    out = tmp_path / "pages"
    code, stdout, err = run_cli(
        "diff", "pages", "--crosscoder", tmp_path / "cc", "--base", early,
        "--tuned", poster_recording, "--out", out, "--top", TOP, "--shared", 3, "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["latent_pages"] > 0

    # the top rows, computed here from the crosscoder's own encoding of the paired stores
    cc = load_crosscoder(tmp_path / "cc")
    pair = PairedStore(early, poster_recording)
    with torch.no_grad():
        acts = torch.cat([cc.encode(*pair.split(x)) for x in pair.iter_sequential(4096)]).numpy()
    context = ActivationStore(poster_recording).context()
    assert context is not None
    eps, steps = context["episode"].to_numpy(), context["step"].to_numpy()

    pages = sorted((out / "latents").glob("*.html"))
    assert pages
    checked = 0
    for page in pages:
        latent = int(page.stem)
        f = acts[:, latent]
        want = [int(i) for i in np.argsort(-f, kind="stable")[:TOP] if f[i] > 0]
        text = page.read_text()
        imgs = re.findall(
            r"<img class='frame' src='\.\./frames/r(\d+)\.png' alt='row (\d+)'>", text
        )
        assert [int(a) for a, _ in imgs] == want, page.name  # one frame per top row, in order
        assert all(a == b for a, b in imgs)
        for r in want:
            shown = np.asarray(Image.open(io.BytesIO((out / "frames" / f"r{r}.png").read_bytes())))
            # the frame rlsae's replay gives for that row's (episode, step), pixel for pixel
            (replayed,) = replay_frames(poster_recording, int(eps[r]), [int(steps[r])])
            assert shown.shape == (210, 160, 3)
            assert np.array_equal(shown, replayed), (latent, r)
            checked += 1
            assert f"episode {eps[r]}, step {steps[r]}" in text
    assert checked > 0
    # frames are only those of top rows (one file per distinct top row)
    tops = set()
    for page in pages:
        f = acts[:, int(page.stem)]
        tops |= {int(i) for i in np.argsort(-f, kind="stable")[:TOP] if f[i] > 0}
    assert {p.name for p in (out / "frames").iterdir()} == {f"r{r}.png" for r in tops}

    # a headless browser shows the frames of a latent page with no console errors
    browser = _viewer_helper("viewer_browser")
    with browser.browser_page() as w:
        w.page.goto(pages[0].as_uri())
        w.poll("document.images.length > 0 && Array.from(document.images).every(i => i.complete)")
        assert w.images_loaded() == []
        n = w.page.evaluate("document.querySelectorAll('img.frame').length")
        assert n == len(re.findall("<img class='frame'", pages[0].read_text()))
        size = w.page.evaluate(
            "[document.images[0].naturalWidth, document.images[0].naturalHeight]"
        )
        assert size == [160, 210]
        w.page.goto((out / "index.html").as_uri())
        w.poll("document.querySelector('.plotly-graph-div .main-svg') !== null")
        assert w.errors == [] and w.dialogs == []


def test_pages_of_a_non_agent_pair_get_no_frames_and_the_viewer_next_to_them_links_them(
    tmp_path, run_cli
):
    """Stores of another provider keep the context-column table (no frames folder); a feature
    viewer exported next to the pages links to them from its index, and the link opens."""
    from rlsae.sae.store import ActivationWriter
    from rlsae.sae.train import TrainConfig, train_sae
    from rlsae.viewer.crosscoder import CrosscoderPages
    from rlsae.viewer.export import export_site

    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    for side in ("base", "tuned"):
        with ActivationWriter(run / "acts" / side / "h", 8, hook="h", source=side) as w:
            w.append(rng.standard_normal((128, 8)).astype(np.float32))
    base, tuned = run / "acts" / "base" / "h", run / "acts" / "tuned" / "h"
    cfg = CrosscoderConfig(d_sae=16, k=2, steps=5, batch_size=32)
    train_crosscoder(base, tuned, tmp_path / "cc", cfg, progress=False)
    pages = tmp_path / "site" / "cc-pages"
    code, _, err = run_cli(
        "diff", "pages", "--crosscoder", tmp_path / "cc", "--base", base, "--tuned", tuned,
        "--out", pages,
    )  # fmt: skip
    assert code == 0, err
    assert not (pages / "frames").exists()
    assert all("<img" not in p.read_text() for p in (pages / "latents").iterdir())
    info = CrosscoderPages.read(pages / "pages.json")
    assert sorted(f"{j}.html" for j in info.latents) == sorted(
        p.name for p in (pages / "latents").iterdir()
    )
    assert sum(info.counts.values()) == 16 and info.frames == 0

    tcfg = TrainConfig(arch="topk", d_sae=16, k=2, steps=5, batch_size=32, seed=0)
    train_sae(tuned, run / "saes" / "tuned" / "h" / "topk_16", tcfg, progress=False)
    site = export_site(run, tmp_path / "site" / "viewer", top=3)
    text = (site.parent / "data" / "index.js").read_text()
    index = json.loads(text[text.index(",") + 1 : text.rstrip().rindex(")")])
    assert ["crosscoder cc-pages", "../cc-pages/index.html"] in index["reports"]
    browser = _viewer_helper("viewer_browser")
    with browser.browser_page() as w:
        w.page.goto(site.as_uri())
        w.poll("document.querySelector('#reports a') !== null")
        href = w.page.evaluate("document.querySelector('#reports a').href")
        assert href == (pages / "index.html").as_uri()
        w.page.goto(href)
        w.poll("document.querySelector('.plotly-graph-div .main-svg') !== null")
        assert w.errors == [] and w.dialogs == []
