"""``rlsae dqn survey``: the poster's live-feature survey of an agent (epsilon 0.2, sticky actions
off, the first 66 steps of every episode skipped) into an activation store. Options take their
defaults and help from :class:`rlsae.agents.survey_config.SurveyConfig`; every value is checked
before torch loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rlsae.agents.agent_dir import check_agent_dir
from rlsae.agents.layers import check_layer
from rlsae.agents.survey_config import SurveyConfig
from rlsae.commands._apps import JsonOpt, config_option, dqn_app, emit
from rlsae.errors import RlsaeError


def _opt(name: str, flag: str) -> Any:
    return config_option(SurveyConfig, name, flag)


@dqn_app.command("survey")
def dqn_survey(
    agent: Path = typer.Option(..., "--agent", help="Agent directory."),
    out: Path = typer.Option(..., "--out", help="New activation-store directory."),
    layer: str = _opt("layer", "--layer"),
    episodes: int = _opt("episodes", "--episodes"),
    epsilon: float = _opt("epsilon", "--epsilon"),
    sticky_actions: float = _opt("sticky_actions", "--sticky-actions"),
    skip_first_steps: int = _opt("skip_first_steps", "--skip-first-steps"),
    seed: int = _opt("seed", "--seed"),
    n_envs: int = _opt("n_envs", "--n-envs"),
    max_episode_steps: int | None = _opt("max_episode_steps", "--max-episode-steps"),
    as_json: bool = JsonOpt,
) -> None:
    """Survey whole episodes for live features (the poster's protocol; a replayable store)."""
    cfg = SurveyConfig(
        layer=layer, episodes=episodes, epsilon=epsilon, sticky_actions=sticky_actions,
        skip_first_steps=skip_first_steps, seed=seed, n_envs=n_envs,
        max_episode_steps=max_episode_steps,
    )  # fmt: skip
    cfg.validate("dqn survey")
    check_layer(check_agent_dir(agent).arch, cfg.layer)
    if out.exists():
        raise RlsaeError(f"{out} already exists; choose another --out or remove it")

    from rlsae.agents.survey import survey_activations
    from rlsae.sae.store import ActivationStore

    path = survey_activations(agent, out, cfg)
    st = ActivationStore(path)
    emit({"out": str(path), "rows": st.rows, "d_in": st.d_in, "episodes": cfg.episodes}, as_json)
