"""The language-model pipeline: presets, the paper's dictionary sizes, and (slow) the smoke
preset end to end, interrupted and resumed, with the files the viewer reads."""

from __future__ import annotations

import json
import re
import time

import pytest
import torch

from rlsae.configs import from_mapping
from rlsae.errors import RlsaeError
from rlsae.study.engine import open_run
from rlsae.study.llm import (
    LLM,
    LLMStudyConfig,
    SAEPairConfig,
    dict_sizes,
    preset_config,
    run_llm_pipeline,
)

# The paper's protocol as /work/shared/DESIGN.md states it (quoted, the oracle for ``paper``).
PAPER = """PPO-tune Pythia (70m/160m/410m) on IMDb review prefixes with
   a utility-table reward (VADER lexicon: reward = clip(Σ U(word) / 5, −10, 10)) or a sentiment
   classifier (DistilBERT-IMDb, logit of the positive label). Hyperparameters: batch 64, mini-batch
   16, initial KL coefficient 0.5 (adaptive), max grad norm 1, lr 1e-6. Rank layers by parameter
   divergence Δ (sum of Euclidean distances between corresponding tensors of base and tuned model),
   train a large and a small SAE on each of the top-n layers of both models (tied weights, L1 0.001,
   lr 1e-3, batch 32, 3 epochs; sizes e.g. 1024/512 for Pythia-70m)"""


def _num(pattern: str) -> float:
    return float(re.search(pattern, PAPER).group(1))


def test_paper_preset_follows_the_papers_protocol():
    """The resolved paper preset against the numbers read from the protocol's text."""
    cfg = preset_config("paper")
    sizes = re.search(r"Pythia \(([\dm/]+)\)", PAPER).group(1).split("/")
    assert cfg.models == [f"EleutherAI/pythia-{s}" for s in sizes]
    assert cfg.data == "imdb" and cfg.rlhf.data == "imdb"
    assert (cfg.rlhf.reward, cfg.rlhf.algo, cfg.rlhf.reward_scale) == ("utility", "ppo", 1 / 5)
    assert cfg.rlhf.reward_clip == _num(r"−(\d+), \d+\)\)")
    ppo = cfg.rlhf.ppo
    assert ppo.batch_size == _num(r"batch (\d+), mini")
    assert ppo.mini_batch_size == _num(r"mini-batch\s+(\d+)")
    assert ppo.init_kl_coef == _num(r"initial KL coefficient ([\d.]+)") and ppo.adaptive_kl
    assert ppo.max_grad_norm == _num(r"max grad norm ([\d.]+)")
    assert ppo.learning_rate == _num(r"grad norm \d+, lr ([\de.-]+)\.")
    s = cfg.sae
    assert (s.arch, s.tied) == ("relu", "tied weights" in PAPER)
    assert s.l1 == _num(r"L1 ([\d.]+)") and s.lr == _num(r"L1 [\d.]+,\s+lr ([\de.-]+),")
    assert s.batch_size == _num(r"batch (\d+), \d+ epochs") and s.epochs == _num(r"(\d+) epochs")
    large, small = map(int, re.search(r"sizes e.g. (\d+)/(\d+) for Pythia-70m", PAPER).groups())
    assert dict_sizes(cfg.models[0], 512, s) == (large, small)


def test_dictionary_sizes_follow_table_2():
    pair = SAEPairConfig()
    assert dict_sizes("EleutherAI/pythia-70m", 512, pair) == (1024, 512)
    assert dict_sizes("EleutherAI/pythia-160m", 768, pair) == (1536, 768)
    assert dict_sizes("EleutherAI/pythia-410m", 1024, pair) == (2048, 1024)
    assert dict_sizes("tiny", 128, pair) == (256, 128)  # 2 x d_model and d_model otherwise
    assert dict_sizes("tiny", 128, SAEPairConfig(large=300, small=100)) == (300, 100)


def test_yaml_preset_and_bad_presets(tmp_path):
    p = tmp_path / "study.yaml"
    p.write_text("models: [tiny]\ntop_n_layers: 3\nsae: {arch: topk, k: 8}\n")
    cfg = preset_config(str(p))
    assert cfg.top_n_layers == 3 and cfg.sae.arch == "topk" and cfg.sae.k == 8
    p.write_text("top_n_layer: 3\n")
    with pytest.raises(RlsaeError, match=f"^{re.escape(str(p))}: top_n_layer: unknown key"):
        preset_config(str(p))
    with pytest.raises(RlsaeError, match="unknown preset 'huge'"):
        preset_config("huge")
    assert isinstance(from_mapping(LLMStudyConfig, {}), LLMStudyConfig)


def test_existing_run_needs_resume(tmp_path):
    open_run(LLM, preset_config("smoke"), tmp_path / "run", "preset:smoke", resume=False)
    with pytest.raises(RlsaeError, match="--resume"):
        run_llm_pipeline(tmp_path / "run", "smoke")


@pytest.mark.slow
def test_smoke_pipeline_interrupted_and_resumed(tmp_path, monkeypatch):
    import rlsae.llm.score as score_mod

    run = tmp_path / "llm"
    real = score_mod.score_model

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(score_mod, "score_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_llm_pipeline(run, "smoke", progress=False)
    monkeypatch.setattr(score_mod, "score_model", real)
    markers = run / "analysis" / "stages" / "model" / "tiny"
    done_before = {p.stem: p.read_bytes() for p in markers.glob("*.json")}
    assert {"pretrain", "rlhf", "divergence", "record", "saes", "mmcs", "explain"} <= set(
        done_before
    )
    sae_files = sorted(run.glob("saes/*/*/*/sae_weights.safetensors"))
    assert len(sae_files) == 4  # base/tuned x large/small on the top layer
    mtimes = {p: p.stat().st_mtime_ns for p in sae_files}
    base_mtime = (run / "models" / "base" / "model.safetensors").stat().st_mtime_ns

    threads = torch.get_num_threads()
    res = run_llm_pipeline(run, "smoke", resume=True, progress=False)
    assert torch.get_num_threads() == threads  # the preset's threads: 1, restored afterwards
    # nothing already done was redone
    assert {p: p.stat().st_mtime_ns for p in sae_files} == mtimes
    assert (run / "models" / "base" / "model.safetensors").stat().st_mtime_ns == base_mtime
    stages = {p.stem: p.read_bytes() for p in markers.glob("*.json")}
    assert stages["saes"] == done_before["saes"] and "score" in stages
    assert json.loads((run / "run.json").read_text())["status"] == "finished"

    # the viewer's inputs
    shared = json.loads((run / "analysis" / "llm_shared_features.json").read_text())
    (entry,) = shared["layers"]
    assert entry["layer"] == res["layers"][0]
    small = entry["models"]["tuned"]
    assert small["sae_a"].endswith("/small") and small["sae_b"].endswith("/large")
    assert len(small["top_k"]) == 5 and len(small["top_k_utility"]) == 8
    cos = [r["cosine"] for r in small["top_k_utility"]]
    assert cos == sorted(cos, reverse=True) and cos[0] <= 1.0 + 1e-6
    assert entry["base_vs_tuned"]["sae_a"].startswith("saes/base/")
    expl = json.loads((run / small["sae_a"] / "explanations.json").read_text())["features"]
    assert {str(r["feature"]) for r in small["top_k_utility"]} <= set(expl)
    store_meta = json.loads(next(run.glob("acts/tuned/*/meta.json")).read_text())
    assert store_meta["provider"] == "lm" and store_meta["extra"]["model"].endswith("models/tuned")

    # the tables: Table 3 from the explanations, Table 4 from the completions' scores
    util = json.loads((run / "analysis" / "utility.json").read_text())
    from rlsae.llm.rewards import UtilityTable

    table = UtilityTable.vader()
    want = sum(
        table.abs_utility(expl[str(r["feature"])]["explanation"]) for r in small["top_k_utility"]
    )
    assert util["table3"]["tuned"]["score"] == pytest.approx(want)
    scored = json.loads((run / "analysis" / "score_tuned.json").read_text())
    assert util["table4"]["tuned"]["aggregate_abs_utility"] == scored["aggregate_abs_utility"]
    assert (run / "analysis" / "utility.html").is_file()
    assert (run / "analysis" / "divergence.html").is_file()
    assert res["table3"]["tuned"] == util["table3"]["tuned"]["score"]
    report = (run / "analysis" / "report.html").read_text()
    assert "Plotly.newPlot" in report and "Tables 3 and 4" in report
    # the explained features' held-out scores (offline stand-in, labelled) and Table 3 above
    # the detection threshold beside the unrestricted one
    tops = [str(r["feature"]) for r in small["top_k_utility"]]
    assert all(expl[f]["scores"]["scorer"] == "offline-token-set" for f in tops)
    assert res["explanation_scorer"].startswith("offline-token-set (offline token-set scorer")
    L = res["layers"][0]
    assert set(res["detection"]) == {f"base/{L}", f"tuned/{L}"}
    assert set(res["detection"][f"tuned/{L}"]) == set(tops)
    assert res["detection_scored"]["tuned"].endswith(f"/{len(tops)}")
    assert util["score_threshold"] == 0.75 and set(res["table3_scored"]) == {"base", "tuned"}
    assert "detection ≥ 0.75" in (run / "analysis" / "utility_scored.md").read_text()
    assert "detection ≥ 0.75" in report and "not a language model" in report

    # the finished study resumed: no stage runs, no file is rewritten, within two seconds
    every_file = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    t0 = time.perf_counter()
    again = run_llm_pipeline(run, "smoke", resume=True, progress=False)
    assert time.perf_counter() - t0 < 2.0
    assert again["stages_run"] == 0 and again["stages_skipped"] == 10
    assert again["table3"] == res["table3"] and again["table4"] == res["table4"]
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == every_file


def test_cli_pipeline_bad_preset_is_one_line(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlsae",
            "pipeline",
            "llm",
            "--preset",
            "huge",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: unknown preset 'huge'; use one of smoke, demo, paper or a YAML/TOML config file"
    ]
    assert r.stdout == "" and not (tmp_path / "run").exists()


@pytest.mark.parametrize("preset", ["smoke", "demo", "paper"])
def test_preset_options_are_valid_for_the_stages(preset):
    """Each preset's options are accepted by the stage they go to (no failure hours in)."""
    from rlsae.llm.explain import ExplainConfig
    from rlsae.llm.rlhf import RLHFConfig
    from rlsae.llm.score import ScoreConfig
    from rlsae.llm.tiny import TinyConfig
    from rlsae.sae.train import TrainConfig

    cfg = preset_config(preset)
    assert isinstance(cfg.rlhf, RLHFConfig) and isinstance(cfg.tiny, TinyConfig)
    cfg.rlhf.validate()
    cfg.tiny.validate()
    TrainConfig(
        arch=cfg.sae.arch,
        l1=cfg.sae.l1,
        tied=cfg.sae.tied,
        epochs=cfg.sae.epochs,
        batch_size=cfg.sae.batch_size,
        lr=cfg.sae.lr,
    ).resolve(64)
    ExplainConfig(method=cfg.explainer, samples=cfg.explainer_samples)
    ScoreConfig(prefixes=cfg.score_prefixes, prefix_tokens=cfg.score_prefix_tokens)
    assert cfg.explainer in ("offline", "llm") and cfg.utility_k >= cfg.top_k


@pytest.mark.slow
def test_two_models_one_run_dir_each_and_combined_tables(tmp_path):
    """A study of several models (the paper preset's shape, offline): one directory per model
    under OUT, the combined Table 3/4 rows in OUT/analysis/utility.md, one run.json."""
    from rlsae.llm.tiny import pretrain_tiny
    from rlsae.study.llm import run_llm_study
    from rlsae.study.presets import LLM_SMOKE

    other = pretrain_tiny(tmp_path / "other-tiny", progress=False, **LLM_SMOKE["tiny"], seed=1)
    d = {**LLM_SMOKE, "models": ["tiny", str(other)], "data": str(other / "corpus_test.txt")}
    cfg = from_mapping(LLMStudyConfig, d, "two models")
    out = tmp_path / "out"
    res = run_llm_study(cfg, out, progress=False)
    assert [r["model"] for r in res["runs"]] == ["tiny", str(other)]
    assert [r["run_dir"] for r in res["runs"]] == [str(out / "tiny"), str(out / "other-tiny")]
    for r in res["runs"]:
        util = json.loads((tmp_path / r["run_dir"] / "analysis" / "utility.json").read_text())
        assert r["table3"]["tuned"] == util["table3"]["tuned"]["score"]
    md = (out / "analysis" / "utility.md").read_text().splitlines()
    per_model = [
        (tmp_path / r["run_dir"] / "analysis" / "utility.md").read_text().splitlines()
        for r in res["runs"]
    ]
    assert md == per_model[0][:2] + [lines[-1] for lines in per_model]
    summary = json.loads((out / "analysis" / "summary.json").read_text())
    assert [r["model"] for r in summary["runs"]] == ["tiny", str(other)]
    assert sorted(p.name for p in out.iterdir()) == ["analysis", "other-tiny", "run.json", "tiny"]
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["units"]["model"] == ["tiny", "other-tiny"]
