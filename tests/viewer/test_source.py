"""The source protocol: a new provider plugs in with nothing but a claim and its pages; stores
no source claims get generic pages; the data files are strict, escaped JSON; typed inputs of
another kind are noted, not fatal; bad export settings are refused before torch loads."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from rlsae.errors import RlsaeError
from rlsae.viewer.export import export_site
from rlsae.viewer.source import (
    Explanation,
    FeatureExtras,
    StoreClaim,
    StorePages,
    StoreView,
    TokenContext,
)

WORDS = ["alpha", "beta", "gamma", "delta", "eps"]


def _toy_run(root: Path, provider: str = "toy", rows: int = 240, d: int = 6) -> Path:
    """A run with one store of ``provider`` (context: doc, word) and a ReLU SAE on it."""
    from rlsae.sae import SAE, ActivationWriter, SAEConfig

    run = root / "run"
    x = torch.randn(rows, d, generator=torch.Generator().manual_seed(0))
    ctx = {"doc": np.arange(rows) // 20, "word": [WORDS[i % 5] for i in range(rows)]}
    with ActivationWriter(
        run / "acts" / "toy" / "h", d, source="toy", hook="h", provider=provider
    ) as w:
        w.append(x, ctx)
    SAE(SAEConfig(d_in=d, d_sae=8, arch="relu"), seed=0).save(run / "saes" / "toy" / "h" / "relu")
    return run


class ToySource:
    """A provider written against the protocol alone: words around each row as its context,
    an explanation and an image for feature 0, its own effect size and a note."""

    def claim(self, store) -> StoreClaim | None:
        if store.provider != "toy":
            return None
        return StoreClaim(kind="lm", group_column="doc", intervals=True)

    def pages(self, view: StoreView) -> StorePages:
        out = StorePages(notes=["toy note"], effect_label="toy effect")
        words = view.column("word")
        assert words is not None
        for f in range(view.d_sae):
            for r in dict.fromkeys(view.top_rows(f) + view.sample_rows(f)):
                act = float(view.activations([r], [f])[0])
                out.rows[(f, r)] = TokenContext(tokens=[(str(words[r]), act, 1)], doc=r // 20)
        out.features[0] = FeatureExtras(
            explanation=Explanation("toy feature", utility=2.0), label="toy label"
        )
        out.effect = np.arange(view.d_sae, dtype=float)
        out.explained = 1
        self.url = view.assets.put("zero.bin", b"\x00\x01")
        return out


def test_a_new_source_plugs_in(tmp_path, viewer_data):
    from rlsae.sae import ActivationStore, load_sae

    run = _toy_run(tmp_path)
    source = ToySource()
    site = export_site(run, top=3, sources=[source]).parent
    index = viewer_data(site / "data" / "index.js")
    entry = index["saes"][0]
    assert entry["kind"] == "lm" and entry["explained"] == 1
    assert entry["notes"] == ["toy note"] and entry["effect_label"] == "toy effect"
    summary = viewer_data(site / "data" / "saes" / "s0" / "summary.js")
    assert summary["effect"] == list(range(8)) and summary["labels"][0] == "toy label"
    assert summary["labels"][1:] == [None] * 7
    store = ActivationStore(run / "acts" / "toy" / "h")
    sae = load_sae(run / "saes" / "toy" / "h" / "relu")
    with torch.no_grad():
        acts = sae.encode(store.read_rows(np.arange(store.rows))).numpy()
    for f in range(8):
        page = viewer_data(site / "data" / "saes" / "s0" / "features" / f"{f}.js")
        top = page["top"]
        assert len({t["row"] // 20 for t in top}) == len(top)  # distinct docs (group_column)
        for t in top + [s for iv in page.get("intervals", []) for s in iv["samples"]]:
            want = pytest.approx(acts[t["row"], f], rel=1e-4, abs=1e-6)
            assert t["tokens"] == [[WORDS[t["row"] % 5], want, 1]]
            assert t["doc"] == t["row"] // 20 and t["pos"] is None
        assert ("intervals" in page) == (acts[:, f].max() > 0)
    assert viewer_data(site / "data" / "saes" / "s0" / "features" / "0.js")["explanation"] == {
        "explanation": "toy feature",
        "utility": 2.0,
    }
    assert source.url.startswith("data/frames/") and (site / source.url).read_bytes() == b"\0\1"


def test_unclaimed_store_gets_generic_pages_and_a_note(tmp_path, viewer_data):
    run = _toy_run(tmp_path)
    site = export_site(run, top=3).parent
    entry = viewer_data(site / "data" / "index.js")["saes"][0]
    assert entry["kind"] == "generic"
    assert entry["notes"] == ["no viewer source for 'toy' stores was given; generic pages"]
    page = viewer_data(site / "data" / "saes" / "s0" / "features" / "0.js")
    assert page["top"] and "intervals" not in page
    for t in page["top"]:
        assert t["context"] == {"doc": t["row"] // 20, "word": WORDS[t["row"] % 5]}


def test_jsonp_is_strict_ascii_json(tmp_path, viewer_data):
    from rlsae.fsutil import dumps_json
    from rlsae.viewer.pages import write_jsonp

    text = "a\u2028b\u2029c </script><!-- é 🙂"
    path = tmp_path / "x.js"
    write_jsonp(path, "k/1", {"t": text, "nan": float("nan"), "n": np.float32(1.5), "a": [np.inf]})
    raw = path.read_bytes()
    assert raw.isascii() and b"\\u2028" in raw and b"\\u2029" in raw
    assert raw.startswith(b'RLSAE.put("k/1",')
    assert viewer_data(path) == {"t": text, "nan": None, "n": 1.5, "a": [None]}
    # plain JSON (every feature page) takes a fast path with the same text as the one writer
    plain = {"t": text, "x": [1, 2.5, None, True], "d": {"k": -0.0}}
    write_jsonp(path, "k/1", plain)
    assert path.read_text() == f'RLSAE.put("k/1",{dumps_json(plain, ascii_only=True)});\n'
    write_jsonp(path, "k/1", {"t": text, "nan": float("nan"), "n": np.float32(1.5), "a": [np.inf]})
    sanitised = {"t": text, "nan": None, "n": 1.5, "a": [None]}
    assert path.read_text() == f'RLSAE.put("k/1",{dumps_json(sanitised, ascii_only=True)});\n'


def test_typed_inputs_of_another_kind_are_noted(tmp_path, viewer_data):
    from rlsae.analysis.fit import fit_xy

    run = _toy_run(tmp_path)
    analysis = run / "analysis"
    analysis.mkdir()
    live = np.array([120, 200, 310, 400, 480, 520])
    ret = np.array([300.0, 650, 900, 1100, 1150, 1000])
    rows = [f"a{i},{x},{y}" for i, (x, y) in enumerate(zip(live, ret, strict=True))]
    (analysis / "agents.csv").write_text("agent,live,mean_return\n" + "\n".join(rows) + "\n")
    # an old untyped shared-features file and a fit file of another format
    old = {"layers": [{"base_vs_tuned": {"top_k": [{"feature": 0, "match": 1}]}}]}
    (analysis / "llm_shared_features.json").write_text(json.dumps(old))
    (analysis / "fit_live_vs_return.json").write_text(json.dumps({"format": "rlsae.mmcs"}))
    site = export_site(run, top=3, sources=[ToySource()]).parent
    index = viewer_data(site / "data" / "index.js")
    notes = index["notes"]
    assert any("llm_shared_features.json" in n and "no feature pairs" in n for n in notes)
    assert any("fit_live_vs_return.json" in n and "computed from agents.csv" in n for n in notes)
    fit = fit_xy(live, ret, bootstrap=0)
    assert index["study"]["quadratic"]["r2"] == pytest.approx(fit.quadratic.r2)
    assert "shared" not in index["saes"][0]
    assert "pairs" not in viewer_data(site / "data" / "saes" / "s0" / "features" / "0.js")


def test_explanations_read_typed(tmp_path):
    from rlsae.llm.explain import Explanations, FeatureExplanation
    from rlsae.llm.viewer_source import read_explanations

    notes: list[str] = []
    Explanations(features={"3": FeatureExplanation("x", 0.5, "offline-lift")}).write(
        tmp_path / "explanations.json"
    )
    got = read_explanations(tmp_path, notes)
    assert got == {3: Explanation("x", utility=0.5, method="offline-lift")} and notes == []
    from rlsae.llm.explain import ExplanationScores

    scored = FeatureExplanation("y", 0.5, "llm:m", scores=ExplanationScores("llm:j", 0.9, 0.8))
    Explanations(features={"4": scored}).write(tmp_path / "explanations.json")
    page = read_explanations(tmp_path, notes)[4].to_page()
    assert (page["scorer"], page["detection"], page["fuzzing"]) == ("llm:j", 0.9, 0.8)
    assert "simulation" not in page  # unscored values are left out
    (tmp_path / "explanations.json").write_text(json.dumps({"features": {"3": "x"}}))
    assert read_explanations(tmp_path, notes) == {}
    assert len(notes) == 1 and "explanations.json" in notes[0] and "no explanations" in notes[0]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"top": 0}, "--top must be at least 1"),
        ({"batch_size": 0}, "batch_size: must be at least 1"),
        ({"hist_bins": -2}, "hist_bins: must be at least 1"),
        ({"neighbours": -1}, "neighbours: must be at least 0"),
        ({"context_before": float("nan")}, "context_before: expected a finite number"),
        ({"lm_intervals": ((0.5, 0.25),)}, "lm_intervals: must be above 0.5"),
        ({"lm_intervals": ((-0.1, 0.25),)}, "lm_intervals: must be between 0 and 1"),
    ],
)
def test_bad_config_refused_before_any_file(tmp_path, change, message):
    from rlsae.viewer.config import ExportConfig

    run = _toy_run(tmp_path)
    with pytest.raises(RlsaeError) as e:
        export_site(run, config=replace(ExportConfig(), **change))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in run.iterdir()) == ["acts", "saes"]


def test_cli_refuses_bad_arguments_before_torch_loads(tmp_path):
    code = (
        "import sys\n"
        "from rlsae.cli import main\n"
        "try:\n"
        f"    main(['viewer', 'export', '--run', {str(tmp_path / 'nope')!r}, '--quiet'])\n"
        "except SystemExit as e:\n"
        "    print(e.code, 'torch' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.split() == ["2", "False"], res.stderr
    assert res.stderr == f"error: run directory {tmp_path / 'nope'} not found\n"


def test_viewer_imports_no_provider():
    code = (
        "import sys\n"
        "import rlsae.viewer.export, rlsae.viewer.source, rlsae.viewer.pages\n"
        "print(sorted(m for m in sys.modules if m.startswith(('rlsae.agents', 'rlsae.llm'))))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "[]", res.stderr
