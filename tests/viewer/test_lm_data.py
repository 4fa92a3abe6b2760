"""Language-model page data against direct computation with the SAE, the store and the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rlsae.sae import ActivationStore, load_sae

HOOK = "blocks.1.hook_resid_post"


def test_contexts_logits_and_intervals(lm_run: Path, lm_site: Path, viewer_data):
    from transformers import AutoModelForCausalLM

    site = lm_site.parent
    store = ActivationStore(lm_run / "acts" / "base" / HOOK)
    sae = load_sae(lm_run / "saes" / "base" / HOOK / "relu_64")
    ctx = store.context()
    with torch.no_grad():
        acts = sae.encode(store.read_rows(np.arange(store.rows))).numpy()
    model = AutoModelForCausalLM.from_pretrained(lm_run / "models" / "base", local_files_only=True)
    logits = (sae.W_dec.detach() @ model.get_output_embeddings().weight.detach().T).numpy()
    for f in (0, 1, 5):
        page = viewer_data(site / "data" / "saes" / "s0" / "features" / f"{f}.js")
        col = acts[:, f]
        assert page["count"] == int((col > 0).sum())
        # promoted / suppressed: the decoder direction through the unembedding
        np.testing.assert_allclose(
            [v for _, v in page["logits"]["promoted"]], np.sort(logits[f])[::-1][:10], rtol=1e-3
        )
        np.testing.assert_allclose(
            [v for _, v in page["logits"]["suppressed"]], np.sort(logits[f])[:10], rtol=1e-3
        )
        for c in page["top"]:
            r = c["row"]
            toks = c["tokens"]
            focus = [i for i, t in enumerate(toks) if t[2]]
            assert len(focus) == 1
            rows = np.arange(r - focus[0], r - focus[0] + len(toks))
            assert (ctx["document"].to_numpy()[rows] == c["doc"]).all()  # inside one document
            assert [t[0] for t in toks] == ctx["token"].to_numpy()[rows].tolist()
            np.testing.assert_allclose(
                [t[1] for t in toks], col[rows], atol=1e-3 * col.max(), rtol=0
            )
        for iv in page["intervals"]:
            for smp in iv["samples"]:
                a = col[smp["row"]]
                assert iv["lo"] * col.max() < a <= iv["hi"] * col.max() + 1e-9
