"""Shared set-up of the study tests: stand-in Atari stages (fast, counted), external agents,
and the CLI runner (through ``rlsae.cli.main``, so the one-line-error contract is what is
tested)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from rlsae.agents.results import Evaluation, SpliceResult
from rlsae.errors import RlsaeError
from rlsae.sae.config import TrainConfig
from rlsae.study import atari as study
from rlsae.study.atari import ATARI, AgentSpec
from rlsae.study.engine import Context
from rlsae.study.results import AgentConcepts, LiveFeatures, Recording, TrainedSAE


def _score(spec: AgentSpec, run_dir: Path) -> float:
    return json.loads((spec.path(run_dir) / "score.json").read_text())["mean_return"]


def stand_in_result(stage: str, ctx: Context, spec: AgentSpec):
    """What each real stage returns, cheaply: eval gives score.json's return, live a count
    that is exactly linear in it."""
    ret = _score(spec, ctx.run_dir)
    if stage == "eval":
        return Evaluation(
            agent=spec.agent_dir, arch="poster", steps_trained=None, episodes=1, epsilon=0.05,
            seed=0, mean_return=ret, std_return=0.0, min_return=ret, max_return=ret,
            median_return=ret, human_normalized=0.0, mean_length=1.0,
        )  # fmt: skip
    if stage == "record":
        return Recording(path="acts", rows=1, d_in=1)
    if stage == "sae":
        return TrainedSAE(path="sae", train_config=TrainConfig(), train_seconds=0.0)
    if stage == "live":
        live = int(400 + (ret - 500) / 4)
        return LiveFeatures(
            live=live, dead=2048 - live, d_sae=2048, live_threshold=1, rows=1,
            firing_counts_q10_q50_q90=[0.0, 0.0, 0.0], source_of_counts="test", fvu=0.1, l0=50.0,
        )  # fmt: skip
    if stage == "concepts":
        return AgentConcepts(note="stand-in: not matched")
    return SpliceResult(
        agent=spec.agent_dir, sae="sae", layer="fc1", episodes=1, seed=0, epsilon=0.05,
        return_original=ret, return_sae=ret, return_ablated=0.0, return_recovered=1.0,
        action_agreement=1.0, action_agreement_spliced=1.0, q_fvu=0.0, states=1,
    )  # fmt: skip


@pytest.fixture
def external_agents(tmp_path: Path) -> list[str]:
    dirs = []
    for i, ret in enumerate([100.0, 400.0, 900.0, 700.0, 300.0]):
        d = tmp_path / "ext" / f"agent{i}"
        d.mkdir(parents=True)
        (d / "model.zip").write_bytes(b"")
        (d / "score.json").write_text(json.dumps({"mean_return": ret}))
        dirs.append(str(d))
    return dirs


@pytest.fixture
def counted() -> dict:
    """The study with every per-agent stage replaced by a counted stand-in (``state["study"]``)."""
    calls: dict[str, list[str]] = {s: [] for s in study.STAGES}
    state: dict = {"fail": None, "calls": calls}

    def make(stage: str):
        def fn(ctx: Context, spec: AgentSpec):
            if state["fail"] == (spec.name, stage):
                raise RlsaeError("simulated failure")
            calls[stage].append(spec.name)
            return stand_in_result(stage, ctx, spec)

        return fn

    variant = ATARI
    for s in study.STAGES:
        variant = variant.with_stage(replace(ATARI.stage(s), run=make(s)))
    state["study"] = variant
    return state
