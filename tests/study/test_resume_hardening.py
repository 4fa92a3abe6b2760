"""Resuming a study cannot mix runs, and a killed study resumes to the uninterrupted result.

- ``--resume`` with a changed setting is refused through the CLI, for both studies, in one line
  naming the changed keys, before anything in the run directory changes (issue 18).
- Slow tier: ``rlsae pipeline atari --preset smoke`` (and ``pipeline llm``) killed with SIGKILL at seeded random
  moments, then ``--resume``d, ends with the same agents table, SAEs and stage results as an
  uninterrupted run, and no temporary file of an interrupted write is left in the run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize(
    ("pipeline", "change", "key"),
    [
        ("atari", ("sae", "k", 4), "sae.k"),
        ("atari", ("recording", "steps", 64), "recording.steps"),
        ("llm", ("tiny", "steps", 31), "tiny.steps"),
        ("llm", ("rlhf", "steps", 3), "rlhf.steps"),
    ],
)
def test_resume_with_a_changed_setting_is_refused_naming_it(
    tmp_path, run_cli, pipeline, change, key
):
    if pipeline == "atari":
        from rlsae.study.atari import ATARI as STUDY
        from rlsae.study.atari import preset_config
    else:
        from rlsae.study.llm import LLM as STUDY
        from rlsae.study.llm import preset_config
    from rlsae.configs import to_mapping
    from rlsae.study.engine import open_run

    cfg = preset_config("smoke")
    run = tmp_path / "run"
    open_run(STUDY, cfg, run, "preset:smoke", resume=False)  # a started run, nothing done yet
    (run / "analysis").mkdir(exist_ok=True)
    (run / "analysis" / "marker.txt").write_text("work of the first run")
    before = _tree(run)

    data = to_mapping(cfg)
    section, field, value = change
    data[section][field] = value
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(data))
    code, out, err = run_cli("pipeline", pipeline, "--preset", changed, "--out", run, "--resume")
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    assert f"differs in {key}" in lines[0], lines[0]
    assert _tree(run) == before

    # the unchanged config re-opens the run (the refusal was the change, not the directory)
    assert open_run(STUDY, cfg, run, "preset:smoke", resume=True).config_hash


# ---------------------------------------------------------------------------------------------
# Slow tier: kill -9 and resume


_TEMP_MARKS = (".tmp", ".partial", ".old-", ".checkpoint.tmp")


def _temp_files(run: Path) -> list[str]:
    return sorted(
        str(p.relative_to(run))
        for p in run.rglob("*")
        if any(m in p.name for m in _TEMP_MARKS) or (p.name.startswith(".") and p.is_file())
    )


def _results(run: Path) -> dict[str, bytes]:
    """What a study run computed, byte for byte: the agents table, every SAE's weights, every
    agent's weights and the recorded activations (timings and reports left out)."""
    keep = ["analysis/agents.csv"]
    keep += [str(p.relative_to(run)) for p in run.rglob("sae_weights.safetensors")]
    keep += [str(p.relative_to(run)) for p in run.rglob("shard_*.safetensors")]
    out = {k: (run / k).read_bytes() for k in sorted(keep)}
    for p in sorted(run.rglob("model.zip")):  # the zip's own timestamps differ: the weights
        with zipfile.ZipFile(p) as z:
            out[f"{p.relative_to(run)}:policy.pth"] = z.read("policy.pth")
    return out


def _pipeline(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rlsae", "pipeline", "atari", "--preset", "smoke",
            "--out", str(out), *extra]  # fmt: skip


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


@pytest.mark.slow
def test_killed_atari_study_resumes_to_the_uninterrupted_result(tmp_path, bad_modes):
    """The reference run is made under umask 077 and the killed one under 022: every file and
    directory of both whole smoke runs follows its umask."""
    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    subprocess.run(_pipeline(ref), check=True, capture_output=True, env=_env(), timeout=900,
                   preexec_fn=lambda: os.umask(0o077))  # fmt: skip
    full = time.perf_counter() - t0
    want = _results(ref)
    assert "analysis/agents.csv" in want and len(want) > 3

    rng = random.Random(18)
    for attempt in range(1):  # one seeded kill: the smoke study takes minutes on 2 cores
        run = tmp_path / f"killed{attempt}"
        proc = subprocess.Popen(
            _pipeline(run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
            preexec_fn=lambda: os.umask(0o022),
        )  # fmt: skip
        time.sleep(rng.uniform(0.3, 0.8) * full)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert (run / "run.json").exists(), "killed before the run directory was opened"
        subprocess.run(_pipeline(run, "--resume"), check=True, capture_output=True, env=_env(),
                       timeout=900, preexec_fn=lambda: os.umask(0o022))  # fmt: skip
        got = _results(run)
        assert sorted(got) == sorted(want), attempt
        for name in want:
            assert got[name] == want[name], (attempt, name)
        assert _temp_files(run) == [], attempt
        assert json.loads((run / "run.json").read_text())["status"] == "finished"
        assert bad_modes(run, 0o022) == []
    assert bad_modes(ref, 0o077) == []


def _lm_results(run: Path) -> dict[str, bytes]:
    """What the language-model study computed, byte for byte: the tuned model, the recorded
    activations, every SAE's weights and the Table 3/4 markdown (timings and reports left out)."""
    keep = [str(p.relative_to(run)) for p in run.rglob("model.safetensors")]
    keep += [str(p.relative_to(run)) for p in run.rglob("sae_weights.safetensors")]
    keep += [str(p.relative_to(run)) for p in run.rglob("shard_*.safetensors")]
    keep += ["analysis/utility.md"]
    return {k: (run / k).read_bytes() for k in sorted(keep)}


def _lm_pipeline(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rlsae", "pipeline", "llm", "--preset", "smoke",
            "--out", str(out), *extra]  # fmt: skip


@pytest.mark.slow
def test_killed_llm_study_resumes_to_the_uninterrupted_result(tmp_path):
    """``rlsae pipeline llm --preset smoke`` killed with SIGKILL during a seeded stage (right
    after the marker of the stage before it appears) and resumed ends with the uninterrupted
    run's tuned model, stores, SAEs and tables, and no temp file of an interrupted write."""
    ref = tmp_path / "ref"
    subprocess.run(_lm_pipeline(ref), check=True, capture_output=True, env=_env(), timeout=900)
    want = _lm_results(ref)
    assert "analysis/utility.md" in want and any("sae_weights" in k for k in want)

    before = random.Random(18).choice(["pretrain", "rlhf", "divergence", "record", "saes"])
    run = tmp_path / "killed"
    proc = subprocess.Popen(_lm_pipeline(run), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env())  # fmt: skip
    deadline = time.monotonic() + 600
    while not list(run.glob(f"analysis/stages/model/*/{before}.json")):
        assert proc.poll() is None and time.monotonic() < deadline, "no kill point reached"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "analysis" / "utility.md").exists(), "killed after the study finished"
    subprocess.run(_lm_pipeline(run, "--resume"), check=True, capture_output=True, env=_env(),
                   timeout=900)  # fmt: skip
    got = _lm_results(run)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], name
    assert _temp_files(run) == []
