"""One rule for the mode of every artifact: the user's umask (issue 18).

A small run directory is built through the CLI in-process -- a synthetic store, an imported
store, an SAE trained on it, evaluated (feature statistics), a fit page and a viewer site -- under
umask 022 and 077, and every file and directory in it must have 0o666 / 0o777 less the umask
(activation stores used to keep their temporary directory's 0700). The whole smoke study is
checked the same way in the slow tier (tests/study/test_resume_hardening.py).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from rlsae.cli import main


def _cli(capsys: pytest.CaptureFixture[str], *args: object) -> str:
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().out


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_every_artifact_of_a_small_run_follows_the_umask(tmp_path, capsys, bad_modes, mask):
    src = tmp_path / "inputs"
    src.mkdir()
    rng = np.random.default_rng(0)
    np.save(src / "acts.npy", rng.standard_normal((400, 16)).astype(np.float32))
    (src / "table.csv").write_text("x,y\n" + "".join(f"{i},{i * i % 5}\n" for i in range(8)))
    old = os.umask(mask)
    try:
        run = tmp_path / "run"
        run.mkdir()
        _cli(capsys, "acts", "import", "--from", src / "acts.npy", "--out", run / "acts" / "toy")
        _cli(capsys, "acts", "synth", "--out", run / "acts" / "synth", "--rows", "256",
             "--d-in", "16", "--n-features", "32")  # fmt: skip
        sae = run / "saes" / "toy" / "topk"
        _cli(capsys, "sae", "train", "--acts", run / "acts" / "toy", "--out", sae,
             "--d-sae", "32", "--k", "4", "--steps", "6", "--batch-size", "64",
             "--checkpoint-every", "3")  # fmt: skip
        _cli(capsys, "sae", "eval", "--sae", sae, "--acts", run / "acts" / "toy", "--json")
        _cli(capsys, "analyze", "fit", "--table", src / "table.csv", "--x", "x", "--y", "y",
             "--bootstrap", "20", "--html", run / "analysis" / "fit.html")  # fmt: skip
        _cli(capsys, "viewer", "export", "--run", run, "--out", run / "viewer", "--quiet")
    finally:
        os.umask(old)
    made = {p.relative_to(run).parts[0] for p in run.iterdir()}
    assert made == {"acts", "saes", "analysis", "viewer"}
    assert (sae / "feature_stats.safetensors").is_file()
    assert bad_modes(run, mask) == []
