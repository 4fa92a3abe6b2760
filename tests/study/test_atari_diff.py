"""The dead-features study's ``diff`` stage: crosscoders between consecutive checkpoints of a
training run, on the same recorded states, joined with the study's own evaluations."""

from __future__ import annotations

import numpy as np
import pytest

from rlsae.agents.results import Evaluation
from rlsae.analysis.checkpoint_diffs import CheckpointCrosscoders
from rlsae.configs import from_mapping
from rlsae.errors import RlsaeError
from rlsae.study import atari
from rlsae.study.atari import ATARI
from rlsae.study.atari_config import StudyConfig
from rlsae.study.engine import Context


def _smoke(**extra) -> dict:
    d = atari.preset_dict("smoke")
    d.update(extra)
    return d


def test_the_stage_is_off_by_default_and_its_config_is_validated() -> None:
    cfg = from_mapping(StudyConfig, _smoke(), "smoke")
    assert cfg.diff is None and ATARI.stage("diff").off(cfg)
    on = from_mapping(StudyConfig, _smoke(diff={"d_sae": 32, "k": 2, "steps": 20}), "smoke")
    assert not ATARI.stage("diff").off(on) and on.diff is not None and on.diff.k == 2
    with pytest.raises(RlsaeError, match=r"^smoke: diff\.k must be between 1 and d_sae=8"):
        from_mapping(StudyConfig, _smoke(diff={"d_sae": 8, "k": 9}), "smoke")
    no_ckpt = _smoke(diff={"d_sae": 32, "k": 2})
    no_ckpt["population"] = {**no_ckpt["population"], "checkpoint_every": None}
    with pytest.raises(RlsaeError, match="set population.train_steps and population.checkpoint"):
        from_mapping(StudyConfig, no_ckpt, "smoke")


@pytest.mark.slow
def test_the_smoke_study_with_diff_compares_consecutive_checkpoints(tmp_path) -> None:
    from rlsae.sae.store import ActivationStore

    diff = {"d_sae": 64, "k": 4, "steps": 60, "batch_size": 32}
    cfg = from_mapping(StudyConfig, _smoke(diff=diff), "smoke")
    run = tmp_path / "run"
    res = atari.run_study(cfg, run, engine="serial")
    assert res["stages_skipped"] == 0
    out = run / "diff" / "seed0"
    result = CheckpointCrosscoders.read(out / "checkpoints.json")
    ctx = Context(ATARI, cfg, run)
    assert ctx.result(CheckpointCrosscoders, "diff", "seed0") == result
    steps = [c.step for c in result.checkpoints]
    assert steps == [50, 100, 150, 200] and len(result.pairs) == 3
    for c in result.checkpoints:  # the study's own evaluations, not played again
        assert c.mean_return == ctx.result(Evaluation, "eval", f"seed0-step{c.step}").mean_return
    for p, (a, b) in zip(result.pairs, zip(steps, steps[1:], strict=False), strict=True):
        assert (p.earlier, p.later) == (a, b)
        ra, rb = (result.checkpoints[steps.index(s)].mean_return for s in (a, b))
        assert p.return_change == pytest.approx(rb - ra)
        assert sum(p.counts.values()) == 64 and (out / p.crosscoder / "cfg.json").is_file()
    # every checkpoint ran on the same states: the last agent's recording; on those states the
    # last checkpoint's activations are its own recording's
    own = ActivationStore(run / "acts" / "seed0-step200" / "fc1")
    replayed = ActivationStore(out / "acts" / "step_200")
    assert replayed.rows == own.rows == ActivationStore(out / "acts" / "step_50").rows
    rows = np.arange(own.rows)
    np.testing.assert_allclose(
        replayed.read_rows(rows).numpy(), own.read_rows(rows).numpy(), atol=1e-5
    )
    html = (run / "analysis" / "report.html").read_text()
    section = html.split("Features over training")[1].split("<h2>")[0]
    assert section.count("<td class='l'>seed0</td>") == 3 and "50 → 100" in section
    again = atari.run_study(cfg, run, resume=True, engine="serial")
    assert again["stages_run"] == 0
