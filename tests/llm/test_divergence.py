"""Layer divergence: known perturbations give known Δ, sorted; mismatched models are refused."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from rlsae.errors import RlsaeError
from rlsae.llm.divergence import DivergenceResult, layer_divergence, write_divergence_html


def _perturbed(base):
    """Layer 1: dense weight + 0.01 everywhere (32x32 -> norm 0.32), dense bias + 0.5 at one
    entry (norm 0.5). Layer 2: mlp bias + 0.1 everywhere (64 entries -> norm 0.8).
    Embedding: one row + 3, 4 at two entries (norm 5)."""
    tuned = copy.deepcopy(base)
    sd = tuned.state_dict()
    with torch.no_grad():
        sd["gpt_neox.layers.1.attention.dense.weight"] += 0.01
        sd["gpt_neox.layers.1.attention.dense.bias"][3] += 0.5
        sd["gpt_neox.layers.2.mlp.dense_h_to_4h.bias"] += 0.1
        sd["gpt_neox.embed_in.weight"][5, 0] += 3.0
        sd["gpt_neox.embed_in.weight"][5, 1] += 4.0
    return tuned


def test_known_perturbation_gives_exact_divergence(make_lm):
    base = make_lm(0)
    res = layer_divergence(base, _perturbed(base))
    by_layer = {r.layer: r.divergence for r in res.layers}
    assert by_layer[1] == pytest.approx(0.01 * 32 + 0.5, rel=1e-5)
    assert by_layer[2] == pytest.approx(0.1 * math.sqrt(64), rel=1e-5)
    assert by_layer[0] == 0.0
    assert res.embeddings == pytest.approx(5.0, rel=1e-6)
    assert res.final_norm == 0.0
    assert [r.layer for r in res.layers] == [1, 2, 0]  # 0.82 > 0.8 > 0


def test_sorted_descending_and_top_layers(make_lm):
    base = make_lm(0)
    res = layer_divergence(base, _perturbed(base))
    divs = [r.divergence for r in res.layers]
    assert divs == sorted(divs, reverse=True)
    assert res.ranked(2) == [1, 2]
    n1 = sum(1 for name, _ in base.named_parameters() if ".layers.1." in name)
    assert res.head(1).to_json()["layers"] == [{"layer": 1, "divergence": divs[0], "tensors": n1}]
    chosen = res.choose(2)
    assert (chosen.top_n, chosen.top_layers, chosen.layers) == (2, [1, 2], res.layers)
    assert res.n_layers == 3
    # every tensor of the model is accounted for exactly once
    n_params = len(dict(base.named_parameters()))
    assert len(res.tensors) == n_params


def test_identical_models_have_zero_divergence(make_lm):
    base = make_lm(0)
    res = layer_divergence(base, copy.deepcopy(base))
    assert all(r.divergence == 0.0 for r in res.layers)
    assert len(res.layers) == 3


def test_random_models_match_direct_sum(make_lm):
    a, b = make_lm(0), make_lm(1)
    res = layer_divergence(a, b)
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    want = sum(
        float((pa[n] - pb[n]).detach().norm()) for n in pa if n.startswith("gpt_neox.layers.2.")
    )
    got = next(r.divergence for r in res.layers if r.layer == 2)
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("kwargs", [{"hidden": 48}, {"layers": 4}, {"vocab": 50}])
def test_different_architectures_are_refused(make_lm, kwargs):
    with pytest.raises(RlsaeError, match="different architectures"):
        layer_divergence(make_lm(0), make_lm(0, **kwargs))


def test_html_figure_is_offline(make_lm, tmp_path):
    base = make_lm(0)
    res = layer_divergence(base, _perturbed(base))
    path = write_divergence_html(res, tmp_path / "div.html", top_n=2)
    html = path.read_text()
    assert "<script src=" not in html and 'src="http' not in html  # nothing fetched
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js embedded


def test_divergence_artifact_round_trip(make_lm, tmp_path):
    base = make_lm(0)
    res = layer_divergence(base, _perturbed(base)).choose(2)
    path = res.write(tmp_path / "divergence.json")
    data = json.loads(path.read_text())
    assert (data["format"], data["version"]) == ("rlsae.divergence", 1)
    assert data["top_layers"] == [1, 2] and data["total"] == pytest.approx(
        0.32 + 0.5 + 0.8 + 5.0, rel=1e-5
    )
    assert DivergenceResult.read(path) == res
    data["format"] = "rlsae.score"
    (tmp_path / "other.json").write_text(json.dumps(data))
    with pytest.raises(RlsaeError, match="is a 'rlsae.score' file, not 'rlsae.divergence'"):
        DivergenceResult.read(tmp_path / "other.json")


def test_cli_divergence_json_and_errors(make_lm, save_lm, tmp_path, run_cli):
    base = make_lm(0)
    bdir = save_lm(base, tmp_path / "base")
    tdir = save_lm(_perturbed(base), tmp_path / "tuned")
    odir = save_lm(make_lm(0, hidden=48), tmp_path / "other")
    html = tmp_path / "fig.html"
    code, out, err = run_cli(
        "llm",
        "divergence",
        "--base",
        str(bdir),
        "--tuned",
        str(tdir),
        "--top-n",
        "2",
        "--json",
        "--html",
        str(html),
    )
    assert code == 0, err
    out = json.loads(out)
    assert out["format"] == "rlsae.divergence"
    assert [row["layer"] for row in out["layers"]] == [1, 2]
    assert out["layers"][0]["divergence"] == pytest.approx(0.82, rel=1e-5)
    assert out["embeddings"] == pytest.approx(5.0, rel=1e-6)
    assert html.is_file()

    code, out, err = run_cli("llm", "divergence", "--base", str(bdir), "--tuned", str(odir))
    assert code == 2 and out == "" and err.startswith("error: base and tuned models have")
    assert err.count("\n") == 1


def test_missing_model_directory_is_one_line(tmp_path):
    with pytest.raises(RlsaeError) as e:
        layer_divergence(str(tmp_path / "nope"), str(tmp_path / "nope2"))
    assert "\n" not in str(e.value) and "nope" in str(e.value)
