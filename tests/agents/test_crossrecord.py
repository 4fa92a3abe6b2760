"""Another agent's activations on a recording's game states (issue 14: crosscoders between
two checkpoints of one run, on the same recorded states)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlsae.agents.crossrecord import record_on_recording
from rlsae.errors import RlsaeError
from rlsae.sae.crosscoder_config import CrosscoderConfig
from rlsae.sae.crosscoder_train import train_crosscoder
from rlsae.sae.latents import analyse_latents
from rlsae.sae.paired import PairedStore
from rlsae.sae.store import ActivationStore


def test_the_recording_agent_replayed_on_its_own_recording_gives_its_activations(
    poster_agent, poster_recording, tmp_path
):
    """The known answer: the agent that recorded the store, run on the replayed states, writes
    the recorded activations and Q-values again, row for row."""
    out = record_on_recording(poster_recording, poster_agent, tmp_path / "again")
    a, b = ActivationStore(poster_recording), ActivationStore(out)
    assert (a.rows, a.d_in, a.hook) == (b.rows, b.d_in, b.hook)
    xa, xb = a.read_rows(np.arange(a.rows)), b.read_rows(np.arange(b.rows))
    assert torch.allclose(xa, xb, atol=1e-5)
    ca, cb = a.context(), b.context()
    assert list(ca.columns) == list(cb.columns)
    for col in ca.columns:
        if col.startswith("q_"):
            assert np.allclose(ca[col], cb[col], atol=1e-5), col
        else:
            assert (ca[col].to_numpy() == cb[col].to_numpy()).all(), col
    assert (out / "episodes.json").read_bytes() == (poster_recording / "episodes.json").read_bytes()


def test_a_checkpoint_on_the_final_agents_states_makes_an_aligned_pair(
    poster_agent, poster_recording, tmp_path
):
    early = record_on_recording(
        poster_recording, poster_agent / "checkpoints" / "step_100", tmp_path / "early"
    )
    pair = PairedStore(early, poster_recording)  # aligned: same episodes and steps
    assert pair.rows == 240
    assert not torch.equal(pair.base.read_rows([0, 1]), pair.tuned.read_rows([0, 1]))
    cfg = CrosscoderConfig(d_sae=64, k=4, steps=30, batch_size=64)
    cc = train_crosscoder(early, poster_recording, tmp_path / "cc", cfg, progress=False)
    info = analyse_latents(cc, pair)
    assert sum(info.counts.values()) == 64
    with pytest.raises(RlsaeError, match="already exists"):
        record_on_recording(poster_recording, poster_agent, early)


def test_cli_record_then_a_crosscoder_between_checkpoints(
    poster_agent, poster_recording, tmp_path, run_cli
):
    import json

    early = tmp_path / "early"
    ckpt = poster_agent / "checkpoints" / "step_100"
    code, stdout, err = run_cli(
        "diff", "record", "--on", poster_recording, "--agent", ckpt, "--out", early, "--json"
    )
    assert code == 0, err
    assert json.loads(stdout) == {"out": str(early), "rows": 240, "d_in": 512, "hook": "fc1"}
    code, stdout, err = run_cli(
        "diff", "train", "--base", early, "--tuned", poster_recording, "--out", tmp_path / "cc",
        "--d-sae", 64, "--k", 4, "--steps", 20, "--batch-size", 64, "--json",
    )  # fmt: skip
    assert code == 0, err
    code, stdout, err = run_cli("diff", "record", "--on", poster_recording, "--agent", ckpt,
                                "--out", early)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "already exists" in err
    code, stdout, err = run_cli("diff", "record", "--on", tmp_path / "nope", "--agent", ckpt,
                                "--out", tmp_path / "x")  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "--on" in err and not (tmp_path / "x").exists()


def test_consecutive_checkpoints_get_crosscoders_joined_with_their_returns(
    poster_agent, poster_recording, tmp_path, run_cli
):
    import json

    from rlsae.agents.checkpoint_diff import CheckpointCrosscoders

    out = tmp_path / "ckpts"
    code, stdout, err = run_cli(
        "diff", "checkpoints", "--agent", poster_agent, "--acts", poster_recording, "--out", out,
        "--d-sae", 64, "--k", 4, "--steps", 20, "--batch-size", 64, "--eval-episodes", 1,
        "--max-episode-steps", 50, "--json",
    )  # fmt: skip
    assert code == 0, err
    res = CheckpointCrosscoders.from_json(json.loads(stdout))
    assert [c.step for c in res.checkpoints] == [100, 200] and res.layer == "fc1"
    assert all(c.mean_return is not None for c in res.checkpoints)
    (pair,) = res.pairs
    assert (pair.earlier, pair.later) == (100, 200) and sum(pair.counts.values()) == 64
    assert pair.return_change == res.checkpoints[1].mean_return - res.checkpoints[0].mean_return
    assert CheckpointCrosscoders.read(out / "checkpoints.json") == res
    # each checkpoint's store is row-aligned with the recording
    assert PairedStore(out / "acts" / "step_100", poster_recording).rows == 240
    code, stdout, err = run_cli(
        "diff", "checkpoints", "--agent", poster_agent, "--acts", poster_recording, "--out", out,
        "--eval-episodes", 0,
    )  # fmt: skip
    assert code == 2 and "eval_episodes" in err and err.count("\n") == 1
