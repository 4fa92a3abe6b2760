"""Activation store: round trips, shuffling, resumable iteration, imports."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from rlsae.errors import RlsaeError
from rlsae.sae.store import ActivationStore, ActivationWriter, import_activations


def test_store_round_trip_meta_and_context(tmp_path, small_acts):
    with ActivationWriter(
        tmp_path / "s", 16, shard_rows=300, hook="blocks.0", source="m", extra={"layer": 0}
    ) as w:
        w.append(small_acts[:400], context={"step": list(range(400))})
        w.append(small_acts[400:], context=pd.DataFrame({"step": range(400, 1000)}))
        w.add_file("episodes.json", b"{}")
    st = ActivationStore(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert (
        meta["rows"] == 1000
        and meta["d_in"] == 16
        and [s["rows"] for s in meta["shards"]] == [300, 300, 300, 100]
    )
    assert (st.hook, st.source, st.provider, st.extra) == ("blocks.0", "m", "import", {"layer": 0})
    assert meta["context_columns"] == ["step"]
    assert st.context()["step"].tolist() == list(range(1000))
    assert (tmp_path / "s" / "episodes.json").read_bytes() == b"{}"
    assert torch.equal(torch.cat(list(st.iter_sequential(77))), small_acts)
    assert torch.equal(st.read_rows([999, 0, 301]), small_acts[[999, 0, 301]])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_float16_store_reads_float32(tmp_path, small_acts):
    with ActivationWriter(tmp_path / "s", 16, dtype="float16") as w:
        w.append(small_acts)
    x = torch.cat(list(ActivationStore(tmp_path / "s").iter_sequential(1000)))
    assert x.dtype == torch.float32
    assert torch.equal(x, small_acts.half().float())


def test_shuffled_batches_cover_every_row_once_and_depend_on_seed(small_store, small_acts):
    st = ActivationStore(small_store, window_rows=600)
    a = list(st.iter_batches(128, seed=1))
    assert [b.shape[0] for b in a] == [128] * 7 + [104]
    allrows = torch.cat(a)
    # every row exactly once: compare sorted row sets
    key = lambda t: t[torch.argsort(t[:, 0])]  # noqa: E731
    assert torch.equal(key(allrows), key(small_acts))
    assert not torch.equal(allrows, small_acts)  # actually shuffled
    assert all(torch.equal(x, y) for x, y in zip(a, st.iter_batches(128, seed=1), strict=True))
    assert not torch.equal(torch.cat(list(st.iter_batches(128, seed=2))), allrows)
    assert len(list(st.iter_batches(128, seed=1, drop_last=True))) == 7
    assert len(list(st.iter_batches(128, seed=1, epochs=3, drop_last=True))) == 21


def test_start_batch_resumes_the_same_sequence(small_store):
    st = ActivationStore(small_store, window_rows=300)
    full = list(st.iter_batches(100, seed=3, epochs=2, drop_last=True))
    for start in (0, 3, 7, 12):
        rest = list(st.iter_batches(100, seed=3, epochs=2, drop_last=True, start_batch=start))
        assert len(rest) == len(full) - start
        assert all(torch.equal(x, y) for x, y in zip(full[start:], rest, strict=True))


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".safetensors"])
def test_import_each_format(tmp_path, small_acts, suffix):
    src = tmp_path / f"m{suffix}"
    if suffix == ".npy":
        np.save(src, small_acts.numpy())
    elif suffix == ".pt":
        torch.save(small_acts, src)
    else:
        from safetensors.torch import save_file

        save_file({"whatever": small_acts}, str(src))
    out = import_activations(src, tmp_path / "acts", shard_rows=400)
    st = ActivationStore(out)
    assert st.rows == 1000 and st.d_in == 16 and st.provider == "import"
    assert torch.equal(torch.cat(list(st.iter_sequential(1000))), small_acts)


def test_writer_rejects_bad_rows_and_leaves_nothing(tmp_path, small_acts):
    with pytest.raises(RlsaeError, match=r"shape \(rows, 16\)"):
        with ActivationWriter(tmp_path / "s", 16) as w:
            w.append(small_acts[:, :8])
    bad = small_acts.clone()
    bad[37, 3] = float("nan")
    with pytest.raises(RlsaeError, match="NaN.*row 537"):
        with ActivationWriter(tmp_path / "s", 16) as w:
            w.append(small_acts[:500])
            w.append(bad[:500])
    with pytest.raises(RlsaeError, match="no activations"):
        with ActivationWriter(tmp_path / "s", 16):
            pass
    assert list(tmp_path.iterdir()) == []
