"""Export on partial run directories, dead features, the CLI verb and bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from rlsae.cli import main
from rlsae.errors import RlsaeError
from rlsae.viewer.export import export_site


def _import_run(root: Path, dead: int = 2, d: int = 6, d_sae: int = 10) -> Path:
    """A run with one imported store (no context) and a ReLU SAE whose feature ``dead`` can't fire."""
    from rlsae.sae import SAE, ActivationWriter, SAEConfig

    run = root / "run"
    x = torch.randn(300, d, generator=torch.Generator().manual_seed(0))
    with ActivationWriter(run / "acts" / "imp" / "h", d, source="imp", hook="h") as w:
        w.append(x)
    sae = SAE(SAEConfig(d_in=d, d_sae=d_sae, arch="relu"), seed=0)
    with torch.no_grad():
        sae.b_enc[dead] = -1e3
    sae.save(run / "saes" / "imp" / "h" / "relu")
    return run


def test_dead_feature_listed_and_pages_for_every_feature(tmp_path, viewer_data):
    run = _import_run(tmp_path)
    site = export_site(run, top=4).parent
    assert site == run / "viewer"
    summary = viewer_data(site / "data" / "saes" / "s0" / "summary.js")
    assert summary["d_sae"] == 10 and summary["kind"] == "generic"
    assert summary["density"][2] == 0
    assert sorted(p.name for p in (site / "data/saes/s0/features").iterdir()) == sorted(
        f"{i}.js" for i in range(10)
    )
    dead = viewer_data(site / "data" / "saes" / "s0" / "features" / "2.js")
    assert dead["dead"] is True and dead["top"] == [] and dead["count"] == 0
    index = viewer_data(site / "data" / "index.js")
    assert index["saes"][0]["metrics"]["dead"] >= 1
    live = viewer_data(site / "data" / "saes" / "s0" / "features" / "0.js")
    assert len(live["top"]) == 4 and live["count"] == sum(live["hist"])
    assert (site / "index.html").is_file() and (site / "static" / "viewer.js").is_file()
    assert not (site / "static" / "plotly.min.js").exists()  # no study, no plotly
    # a re-export replaces the old one and leaves no temporary folders behind
    export_site(run, top=2)
    assert len(viewer_data(site / "data" / "saes" / "s0" / "features" / "0.js")["top"]) == 2
    assert sorted(p.name for p in run.iterdir()) == ["acts", "saes", "viewer"]


def test_analysis_only_run_shows_study_figure(tmp_path, browser, viewer_data):
    from rlsae.analysis.fit import fit_xy

    run = tmp_path / "study"
    (run / "analysis").mkdir(parents=True)
    live = np.array([120, 200, 310, 400, 480, 520, 600])
    ret = np.array([300.0, 650, 900, 1100, 1150, 1000, 700])
    names = [f"agent{i}" for i in range(6)] + ["<b>bold</b>"]
    rows = ["agent,live,mean_return"] + [
        f"{n},{x},{y}" for n, x, y in zip(names, live, ret, strict=True)
    ]
    (run / "analysis" / "agents.csv").write_text("\n".join(rows) + "\n")
    fit = replace(fit_xy(live, ret, bootstrap=0), x="live", y="mean_return")
    fit.write(run / "analysis" / "fit_live_vs_return.json")
    (run / "analysis" / "report.html").write_text("<html><body>report</body></html>")
    site = export_site(run)
    assert viewer_data(site.parent / "data" / "index.js")["reports"] == [
        ["report", "../analysis/report.html"]
    ]
    st = viewer_data(site.parent / "data" / "index.js")["study"]
    assert st["x_label"] == "live" and st["n"] == 7
    g = np.array(st["grid"])
    q = fit.quadratic.coef
    np.testing.assert_allclose(st["quadratic"]["curve"], q[0] + q[1] * g + q[2] * g**2, rtol=1e-9)
    assert st["quadratic"]["r2"] == pytest.approx(fit.quadratic.r2)
    with browser() as w:
        pg = w.page
        pg.goto(site.resolve().as_uri())
        pg.wait_for_selector("#study-plot .main-svg", timeout=20000)
        legend = " ".join(pg.locator("#study-plot .legendtext").all_text_contents())
        assert "linear (R²=" in legend and "quadratic (R²=" in legend
        cells = pg.locator("table.grid-table td").all_text_contents()
        assert "<b>bold</b>" in cells
        assert pg.locator("table.grid-table tbody tr").count() == 7
        assert "No SAEs" in pg.locator("main").text_content()
        pg.click("#reports a")
        pg.wait_for_load_state()
        assert pg.url.endswith("/analysis/report.html") and "report" in pg.content()
        assert w.errors == [] and w.dialogs == []


def test_sae_without_store_is_listed_with_a_note(tmp_path, viewer_data):
    run = _import_run(tmp_path)
    import shutil

    shutil.copytree(run / "saes" / "imp", run / "saes" / "other")
    site = export_site(run).parent
    saes = viewer_data(site / "data" / "index.js")["saes"]
    assert [s["name"] for s in saes] == ["imp/h/relu", "other/h/relu"]
    assert saes[1]["kind"] == "none" and "no activation store" in saes[1]["notes"][0]
    assert not (site / "data" / "saes" / "s1").exists()


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


def test_cli_export_json(tmp_path, capsys):
    run = _import_run(tmp_path)
    code, out, err = _cli(
        [
            "viewer",
            "export",
            "--run",
            str(run),
            "--out",
            str(tmp_path / "site"),
            "--top",
            "3",
            "--json",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    res = json.loads(out)
    assert out.count("\n") == 1
    assert res["index"] == str(tmp_path / "site" / "index.html")
    assert res["saes"][0]["dead"] >= 1 and res["saes"][0]["d_sae"] == 10
    assert res["files"] == sum(1 for p in (tmp_path / "site").rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "not found"),
        ("empty", "nothing to export"),
        ("out_in_run", "would overwrite"),
        ("top0", "--top must be at least 1"),
        ("not_a_viewer", "is not a viewer export"),
        ("width", "d_in"),
    ],
)
def test_cli_bad_input(tmp_path, capsys, case, message):
    run = _import_run(tmp_path)
    args = ["viewer", "export", "--run", str(run), "--quiet"]
    if case == "missing":
        args[3] = str(tmp_path / "nope")
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        args[3] = str(tmp_path / "empty")
    elif case == "out_in_run":
        args += ["--out", str(run / "saes")]
    elif case == "top0":
        args += ["--top", "0"]
    elif case == "not_a_viewer":
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "thesis.tex").write_text("keep me")
        args += ["--out", str(tmp_path / "docs")]
    elif case == "width":
        from rlsae.sae import SAE, SAEConfig

        SAE(SAEConfig(d_in=7, d_sae=4, arch="relu"), seed=0).save(
            run / "saes" / "imp" / "h" / "relu"
        )
    code, out, err = _cli(args, capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert out == ""
    assert not (run / "viewer").exists()
    if case == "not_a_viewer":
        assert (tmp_path / "docs" / "thesis.tex").read_text() == "keep me"


def test_corrupt_sae_keeps_previous_export(tmp_path):
    run = _import_run(tmp_path)
    index = export_site(run)
    before = (index.parent / "data" / "index.js").read_text()
    w = run / "saes" / "imp" / "h" / "relu" / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[:50])
    with pytest.raises(RlsaeError):
        export_site(run)
    assert (index.parent / "data" / "index.js").read_text() == before
    assert sorted(p.name for p in run.iterdir()) == ["acts", "saes", "viewer"]
