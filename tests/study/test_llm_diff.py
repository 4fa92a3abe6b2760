"""The LM study's ``diff`` stage (issue 14): off unless configured, validated with the study's
config, and, on one layer's aligned base/tuned stores laid out as the ``record`` stage lays them
out, a crosscoder trained, its latents classified, explained and scored for utility."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from rlsae.analysis.crosscoder import CrosscoderExplanations
from rlsae.configs import from_mapping
from rlsae.errors import RlsaeError
from rlsae.llm.rewards import UtilityTable
from rlsae.sae.crosscoder_config import CrosscoderConfig
from rlsae.sae.store import ActivationWriter
from rlsae.study.llm import LLM
from rlsae.study.llm_config import LLMStudyConfig
from rlsae.study.llm_diff import diff_layer

HOOK = "blocks.1.hook_resid_post"
WORDS = ["good", "great", "bad", "awful", "the", "a", "movie", "plot", "and", "it"]


def test_the_stage_is_off_by_default_and_its_config_is_validated():
    (stage,) = [s for s in LLM.stages if s.name == "diff"]
    assert stage.after == ("record",) and stage.per == "model"
    assert stage.off(LLMStudyConfig()) and not stage.off(LLMStudyConfig(diff=CrosscoderConfig()))
    cfg = from_mapping(LLMStudyConfig, {"diff": {"arch": "l1", "l1": 0.5}}, "study.yaml")
    assert cfg.diff == CrosscoderConfig(arch="l1", l1=0.5)
    with pytest.raises(RlsaeError, match=r"^config: diff: k: must be .*, got 0$"):
        LLMStudyConfig(diff=CrosscoderConfig(k=0)).validate()


def _lm_stores(home, n_docs=150, tokens=20, d=16, seed=0):
    """Base and tuned stores of one layer with token contexts: each token's embedding at a
    random scale; tuned = base plus a direction, at a random scale, on half the occurrences
    of "good" and "great" (what the tuning added)."""
    g = torch.Generator().manual_seed(seed)
    n = n_docs * tokens
    ids = torch.randint(0, len(WORDS), (n,), generator=g)
    emb = torch.randn(len(WORDS), d, generator=g)
    xb = emb[ids] * (0.5 + torch.rand(n, 1, generator=g)) + 0.05 * torch.randn(n, d, generator=g)
    added = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    positive = (torch.isin(ids, torch.tensor([0, 1])) & (torch.rand(n, generator=g) < 0.5)).float()
    xt = xb + (1 + 2 * torch.rand(n, 1, generator=g)) * positive[:, None] * added
    ctx = {
        "document": np.repeat(np.arange(n_docs), tokens),
        "position": np.tile(np.arange(tokens), n_docs),
        "token_id": ids.numpy(),
        "token": [f" {WORDS[i]}" for i in ids.tolist()],
    }
    for src, x in (("base", xb), ("tuned", xt)):
        with ActivationWriter(home / "acts" / src / HOOK, d, hook=HOOK, source=src) as w:
            w.append(x, ctx)


def test_a_layer_is_trained_classified_explained_and_scored(tmp_path, one_thread):
    _lm_stores(tmp_path)
    cfg = CrosscoderConfig(d_sae=32, k=2, steps=300, batch_size=256)
    table = tmp_path / "utility.tsv"
    table.write_text("good\t2.0\ngreat\t3.0\nbad\t-2.0\nawful\t-3.0\n")
    layer = diff_layer(tmp_path, 1, HOOK, cfg, table=str(table), utility_k=5)
    out = tmp_path / "crosscoders" / HOOK
    assert layer.path == f"crosscoders/{HOOK}" and (out / "cfg.json").is_file()
    assert (out / "norm_ratios.html").is_file()
    latents = json.loads((out / "latents.json").read_text())
    assert latents["counts"] == layer.counts and sum(layer.counts.values()) == 32
    assert layer.counts["tuned_only"] >= 1  # the added direction
    expl = CrosscoderExplanations.read(out / "explanations.json")
    tuned = [e for e in expl.latents if e.kind == "tuned_only"]
    assert tuned and all(e.explanation.startswith("tokens") for e in tuned)
    # the added direction fires on "good"/"great": its explanation carries their utility
    assert max(e.utility for e in tuned) > 0
    util = UtilityTable.from_tsv(table)
    for e in expl.latents:
        assert e.utility == util.abs_utility(e.explanation)
    groups = {g.kind: g for g in layer.utility}
    assert set(groups) == {"tuned_only", "base_only", "shared"}
    assert groups["tuned_only"].n == len(tuned)
    assert groups["tuned_only"].summed == pytest.approx(sum(e.utility for e in tuned))
    assert groups["shared"].n <= 5
    # the report's section: counts per class and the mean |utility| per explained class
    from rlsae.analysis.crosscoder import crosscoder_section

    html = crosscoder_section(tmp_path)
    cells = f"<td>{HOOK}</td>" + "".join(
        f"<td>{layer.counts[c]}</td>" for c in ("shared", "base_only", "tuned_only", "artefact")
    )
    mean = sum(e.utility for e in tuned) / len(tuned)
    summed = sum(e.utility for e in tuned)
    assert cells in html.replace("<td class='l'>", "<td>")
    assert f"{len(tuned)} / {summed:.2f} / {mean:.2f}" in html
    assert html.count("<li>latent ") == min(5, len(tuned)) and crosscoder_section(out) == ""
    # resumed: the crosscoder is loaded, not retrained
    before = (out / "crosscoder_weights.safetensors").stat().st_mtime_ns
    again = diff_layer(tmp_path, 1, HOOK, cfg, table=str(table), utility_k=5)
    assert (out / "crosscoder_weights.safetensors").stat().st_mtime_ns == before
    assert dataclasses.asdict(again) == dataclasses.asdict(layer)


@pytest.mark.slow
def test_the_smoke_study_with_diff_runs_the_stage_and_resumes_without_it(tmp_path):
    from rlsae.study.llm import resolve_config, run_llm_study
    from rlsae.study.llm_diff import CrosscoderLayers

    cfg, _ = resolve_config("smoke")
    cfg = dataclasses.replace(
        cfg, diff=CrosscoderConfig(expansion=4, k=8, epochs=3, batch_size=256)
    )
    run = tmp_path / "run"
    res = run_llm_study(cfg, run, progress=False)
    assert res["stages_run"] == 11
    (summary,) = res["diff"]  # the study's summary, beside Tables 3 and 4
    assert summary["layer"] == res["layers"][0] and "table3" in res
    assert [g["kind"] for g in summary["utility"]] == ["tuned_only", "base_only", "shared"]
    marker = json.loads((run / "analysis" / "stages" / "model" / "tiny" / "diff.json").read_text())
    result = CrosscoderLayers.from_json(marker["result"])
    (layer,) = result.layers
    assert layer.layer == res["layers"][0] and sum(layer.counts.values()) == 4 * 32
    cc = run / layer.path
    assert {p.name for p in cc.iterdir()} >= {
        "cfg.json", "crosscoder_weights.safetensors", "training.json", "latents.json",
        "norm_ratios.html", "explanations.json",
    }  # fmt: skip
    report = (run / "analysis" / "report.html").read_text()
    assert "What RLHF added: the crosscoder" in report  # beside Tables 3 and 4
    again = run_llm_study(cfg, run, resume=True, progress=False)
    assert again["stages_run"] == 0 and again["stages_skipped"] == 11
    assert again["diff"] == res["diff"]


def test_crosscoder_pages_show_the_latents_side_by_side(tmp_path, run_cli, one_thread):
    """``rlsae diff pages`` on the LM stores: an index with the histogram and a page per
    tuned-only latent with its figures and shaded tokens in both models."""
    _lm_stores(tmp_path)
    cfg = CrosscoderConfig(d_sae=32, k=2, steps=300, batch_size=256)
    diff_layer(tmp_path, 1, HOOK, cfg, utility_k=5)
    cc = tmp_path / "crosscoders" / HOOK
    base, tuned = tmp_path / "acts" / "base" / HOOK, tmp_path / "acts" / "tuned" / HOOK
    out = tmp_path / "pages"
    code, stdout, err = run_cli("diff", "pages", "--crosscoder", cc, "--base", base, "--tuned",
                                tuned, "--out", out, "--shared", 3, "--json")  # fmt: skip
    assert code == 0, err
    info = json.loads((cc / "latents.json").read_text())
    tuned_only = [r["latent"] for r in info["latents"] if r["kind"] == "tuned_only"]
    assert json.loads(stdout)["latent_pages"] == len(tuned_only) + 3
    index = (out / "index.html").read_text()
    assert "Plotly.newPlot" in index and all(f"latents/{j}.html" in index for j in tuned_only)
    page = (out / "latents" / f"{tuned_only[0]}.html").read_text()
    assert "tuned_only" in page and "nu_error" in page and "<b>base</b>" in page
    assert "good" in page or "great" in page  # its top rows are those tokens
    assert "<b>Explanation</b> (offline-lift): tokens" in page  # the diff stage's explanation
    code, _, err = run_cli("diff", "pages", "--crosscoder", cc, "--base", base, "--tuned", tuned,
                           "--out", out)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "already exists" in err
