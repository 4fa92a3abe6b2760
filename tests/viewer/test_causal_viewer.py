"""Agent feature pages: each top state's saliency overlay (a toggle) and the feature's ablation
result from SAE_DIR/ablation_sweep.json (Δreturn with its CI, the action shift, the state where
the greedy action changed most), checked against computations by another path and in a real
headless browser."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rlsae.agents.results import AblationSweep

SAE = Path("saes") / "a0" / "fc1" / "topk_64"
ACTS = Path("acts") / "a0" / "fc1"


@pytest.fixture(scope="module")
def causal_site(agent_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the agent fixture run with an ablation sweep of its four most-firing features
    (the real sweep: the agent plays), exported with frames, saliency and no effect grids."""
    from rlsae.agents.sweep import ABLATION_FILE, ablation_sweep
    from rlsae.agents.viewer_source import viewer_source
    from rlsae.viewer.config import ExportConfig
    from rlsae.viewer.export import export_site

    run = tmp_path_factory.mktemp("causal") / "run"
    shutil.copytree(agent_run, run, ignore=shutil.ignore_patterns("viewer"))
    sweep = ablation_sweep(
        _reading_agent(run), run / SAE, run / ACTS, episodes=2, max_episode_steps=60,
        epsilon=0.2, max_features=4, bootstrap=200,
    )  # fmt: skip
    sweep.write(run / SAE / ABLATION_FILE)
    cfg = ExportConfig(top=3, saliency=2, effects=False, clip_before=2, clip_after=1)
    return run, export_site(run, run / "viewer", config=cfg, sources=[viewer_source()])


def _reading_agent(run: Path):
    """The fixture's untrained agent with fc2 removed and a hand-built head (its own greedy
    action hardly varies): RIGHT reads the first feature the sweep takes, c v . (h - b_dec) = c f_j on a
    reconstruction (v: column j of W_dec's pseudo-inverse, so W_dec v = e_j), UP is half its
    mean over the recording, every other action far below. Ablating feature j then turns RIGHT
    into UP wherever f_j is above half its mean."""
    from rlsae.agents.dqn import load_agent
    from rlsae.agents.steer import feature_range
    from rlsae.agents.sweep import live_features
    from rlsae.sae import ActivationStore, load_sae

    agent, sae = load_agent(run / "agents" / "a0"), load_sae(run / SAE)
    sae.eval()
    rng = feature_range(sae, run / ACTS)
    assert rng is not None
    j = live_features(rng.firing_counts, 4)[0]
    store = ActivationStore(run / ACTS)
    agent.q_network.features_extractor.fc2 = torch.nn.Identity()  # the head reads fc1
    with torch.no_grad():
        mean = float(sae.encode(store.read_rows(np.arange(store.rows)))[:, j].mean())
        c = 1000.0
        w = c * torch.linalg.pinv(sae.W_dec.double())[:, j].float()
        agent.head.weight.zero_()
        agent.head.bias.fill_(-1e3)
        agent.head.weight[2] = w  # RIGHT
        agent.head.bias[2] = -float(w @ sae.b_dec.float())
        agent.head.bias[1] = c * mean / 2  # UP
    return agent


def _feature(site: Path, viewer_data, f: int) -> dict:
    return viewer_data(site.parent / "data" / "saes" / "s0" / "features" / f"{f}.js")


def _png(site: Path, url: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO((site.parent / url).read_bytes())))


def test_saliency_overlays_equal_gradient_x_input_on_the_replayed_state(
    causal_site, viewer_data
) -> None:
    """The overlay of a top state is the heat map of gradient × input of the feature on the
    observation replayed from the store (one state at a time here; batched at export)."""
    from PIL import Image

    from rlsae.agents.dqn import load_agent
    from rlsae.agents.replay import replay_observations
    from rlsae.agents.saliency import (
        OVERLAY_LEVELS,
        feature_activation,
        gradient_x_input,
        heat_map,
        overlay_png,
    )
    from rlsae.sae import load_sae

    run, site = causal_site
    agent, sae = load_agent(run / "agents" / "a0"), load_sae(run / SAE)
    sae.eval()
    sweep = AblationSweep.read(run / SAE / "ablation_sweep.json")
    checked = 0
    for row in sweep.rows:
        page = _feature(site, viewer_data, row.feature)
        top = page["top"]
        assert [("saliency" in t) for t in top] == [k < 2 for k in range(len(top))]
        for t in top[:2]:
            got = _png(site, t["saliency"])  # palette indices = opacity levels
            assert got.shape == (210, 160)  # over the 160x210 frame
            obs = replay_observations(run / ACTS, t["episode"], [t["step"]])[0]
            fn = feature_activation(agent, sae, "fc1", row.feature)
            attr = gradient_x_input(fn, torch.as_tensor(obs, dtype=torch.float32)).numpy()
            want = _png_bytes_array(overlay_png(heat_map(attr, "poster")[0]))
            # float32 batched vs single backward passes: a block may round to the next level
            diff = np.abs(got.astype(int) - want.astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01
            assert got.max() > 0  # it shows something
            # each level's opacity is 0.8 x level / (levels - 1)
            rgba = np.asarray(Image.open(site.parent / t["saliency"]).convert("RGBA"))
            level = got.astype(np.float64) / (OVERLAY_LEVELS - 1)
            assert rgba.shape == (210, 160, 4)
            np.testing.assert_array_equal(rgba[..., 3], (0.8 * level * 255).astype(np.uint8))
            checked += 1
    assert checked == 2 * len(sweep.rows)


def _png_bytes_array(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def test_pages_carry_the_ablation_result_and_the_changed_state(causal_site, viewer_data) -> None:
    """Each swept feature's page holds its row of the sweep; the frame of the state where the
    greedy action changed most is that state of the sweep's spliced episode: fed to the spliced
    and the ablated networks, the replayed observation gives the two greedy actions named."""
    from rlsae.agents.replay import replay_episode
    from rlsae.agents.results import read_episodes
    from rlsae.agents.steer import steered_features
    from rlsae.sae import load_sae

    run, site = causal_site
    sweep = AblationSweep.read(run / SAE / "ablation_sweep.json")
    agent, sae = _reading_agent(run), load_sae(run / SAE)
    sae.eval()
    doc = read_episodes(run / ACTS)
    doc.episodes = sweep.episodes_spliced
    changed = 0
    for rank, row in enumerate(sweep.rows, 1):
        iv = _feature(site, viewer_data, row.feature)["intervention"]
        assert iv["kind"] == "ablation" and (iv["rank"], iv["swept"]) == (rank, 4)
        assert iv["delta_return"] == pytest.approx(row.delta_return, rel=1e-3, abs=1e-9)
        assert iv["ci"] == pytest.approx(row.delta_return_ci, rel=1e-3, abs=1e-9)
        assert iv["action_tv"] == pytest.approx(row.action_tv, rel=1e-3, abs=1e-9)
        assert iv["greedy_changed"] == pytest.approx(row.greedy_changed, rel=1e-3, abs=1e-9)
        assert iv["return_base"] == pytest.approx(sweep.return_spliced, rel=1e-3)
        m = row.most_changed
        if m is None:
            assert "changed" not in iv
            continue
        changed += 1
        c = iv["changed"]
        assert (c["episode"], c["step"], c["action_before"], c["action_after"]) == (
            m.episode, m.step, m.action_spliced, m.action_ablated,
        )  # fmt: skip
        (_, obs, frame), *_ = [
            x for x in replay_episode(doc=doc, episode=m.episode, until=m.step) if x[0] == m.step
        ]
        np.testing.assert_array_equal(_png(site, c["frame"]), frame)
        with torch.no_grad():
            _, h = agent.forward(obs[None], "fc1")
            f = sae.encode(h.float())
            q = agent.forward_from("fc1", sae.decode(f))
            q_abl = agent.forward_from(
                "fc1", sae.decode(steered_features(f, [row.feature], None, None))
            )
        assert (int(q.argmax()), int(q_abl.argmax())) == (m.action_spliced, m.action_ablated)
    assert changed >= 1
    # features not swept have no panel
    swept = {r.feature for r in sweep.rows}
    other = next(f for f in range(64) if f not in swept)
    assert "intervention" not in _feature(site, viewer_data, other)


def _js_number(x: float) -> str:
    """How the viewer's fmt() prints a number of moderate size (5 significant digits)."""
    if x == 0:
        return "0"
    y = float(f"{x:.5g}")
    return str(int(y)) if y.is_integer() else repr(y)


def test_browser_toggles_saliency_and_shows_the_ablation_numbers(
    causal_site, browser, viewer_data
) -> None:
    run, site = causal_site
    sweep = AblationSweep.read(run / SAE / "ablation_sweep.json")
    row = next((r for r in sweep.rows if r.most_changed is not None), sweep.rows[0])
    with browser() as w:
        pg = w.page
        pg.goto(f"{site.resolve().as_uri()}#sae=s0&f={row.feature}")
        pg.wait_for_selector("#intervention")
        w.poll("Array.from(document.images).every(i => i.complete)")
        # the panel shows the numbers of the result file
        delta = pg.text_content("#intervention .delta-return")
        assert delta == ("+" if row.delta_return > 0 else "") + _js_number(row.delta_return)
        lo, hi = row.delta_return_ci
        assert pg.text_content("#intervention .delta-ci") == f"[{_js_number(lo)}, {_js_number(hi)}]"
        assert pg.text_content("#intervention .action-tv") == _js_number(row.action_tv)
        assert pg.text_content("#intervention .rank").startswith(
            f"{sweep.rows.index(row) + 1} of 4"
        )
        if row.most_changed is not None:
            cap = pg.text_content("#intervention .changed-caption")
            m = row.most_changed
            assert f"episode {m.episode} · step {m.step}" in cap
            assert pg.locator("#intervention img.frame").count() == 1
        # the saliency overlays: hidden, shown by the toggle, hidden again
        overlays = pg.locator("#states-section img.saliency")
        assert overlays.count() == 2
        assert not overlays.first.is_visible() and not overlays.nth(1).is_visible()
        pg.check("#saliency-toggle")
        assert overlays.first.is_visible() and overlays.nth(1).is_visible()
        box_o, box_f = (
            overlays.first.bounding_box(),
            pg.locator("#states-section img.frame").first.bounding_box(),
        )
        assert box_o is not None and box_f is not None
        assert abs(box_o["x"] - box_f["x"]) <= 1 and abs(box_o["y"] - box_f["y"]) <= 1
        pg.uncheck("#saliency-toggle")
        assert not overlays.first.is_visible()
        assert w.images_loaded() == []
        assert w.errors == [] and w.dialogs == []
