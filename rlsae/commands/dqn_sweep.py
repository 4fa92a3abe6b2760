"""``rlsae dqn sweep``: every live SAE feature ablated in turn, ranked by |Δreturn| with its
bootstrap interval (:func:`rlsae.agents.sweep.ablation_sweep`). Options take their defaults and
help from :class:`rlsae.agents.config.SteerConfig`; every value is checked before torch loads."""

from __future__ import annotations

from pathlib import Path

import typer

from rlsae.agents.agent_dir import check_agent_dir
from rlsae.agents.config import SteerConfig, check_int
from rlsae.commands._apps import JsonOpt, config_option, dqn_app, emit
from rlsae.commands.dqn import parse_features

ABLATION_FILE = "ablation_sweep.json"
"""Default output, in the SAE's folder (the viewer reads it there); the same name as
:data:`rlsae.agents.sweep.ABLATION_FILE` (a test checks), without importing torch here."""


@dqn_app.command("sweep")
def dqn_sweep(
    agent: Path = typer.Option(..., "--agent", help="Agent directory."),
    sae: Path = typer.Option(..., "--sae", help="SAE directory trained on one of its layers."),
    features: str | None = typer.Option(
        None, "--features", help="Features to ablate, e.g. 3,17 (default: every live feature)."
    ),
    max_features: int | None = typer.Option(
        None, "--max-features", help="Sweep only this many live features, those firing most."
    ),
    acts: Path | None = typer.Option(
        None,
        "--acts",
        help="Recorded store telling which features are live; "
        "default: the SAE's feature_stats.safetensors.",
    ),
    episodes: int = config_option(
        SteerConfig, "episodes", "--episodes", help="Episodes per variant (spliced, each ablation)."
    ),
    seed: int = config_option(SteerConfig, "seed", "--seed"),
    layer: str | None = config_option(SteerConfig, "layer", "--layer"),
    epsilon: float = config_option(SteerConfig, "epsilon", "--epsilon"),
    n_envs: int = config_option(SteerConfig, "n_envs", "--n-envs"),
    max_episode_steps: int | None = config_option(
        SteerConfig, "max_episode_steps", "--max-episode-steps"
    ),
    bootstrap: int = config_option(SteerConfig, "bootstrap", "--bootstrap"),
    out: Path | None = typer.Option(
        None, "--out", help=f"Where to write the sweep (default: SAE/{ABLATION_FILE})."
    ),
    show: int = typer.Option(10, "--show", help="Rows printed (largest |Δreturn| first)."),
    as_json: bool = JsonOpt,
) -> None:
    """Ablate every live SAE feature in turn: rows ranked by |Δreturn| with a bootstrap CI."""
    chosen = parse_features(features, "dqn sweep") if features is not None else None
    cfg = SteerConfig(
        episodes=episodes, epsilon=epsilon, seed=seed, n_envs=n_envs,
        max_episode_steps=max_episode_steps, layer=layer, features=chosen or [0], ablate=True,
        bootstrap=bootstrap,
    )  # fmt: skip
    cfg.validate("dqn sweep")  # every feature ablated in turn: the settings of steer --ablate
    if max_features is not None:
        check_int("dqn sweep", "max_features", max_features, 1)
    check_int("dqn sweep", "show", show, 1)
    check_agent_dir(agent)

    from rlsae.agents.sweep import ablation_sweep

    res = ablation_sweep(
        agent, sae, acts, chosen, episodes=cfg.episodes, seed=cfg.seed, layer=cfg.layer,
        epsilon=cfg.epsilon, n_envs=cfg.n_envs, max_episode_steps=cfg.max_episode_steps,
        bootstrap=cfg.bootstrap, max_features=max_features,
    )  # fmt: skip
    path = res.write(out if out is not None else sae / ABLATION_FILE)
    lines = [
        f"{len(res.rows)} features ablated at {res.layer} over {res.episodes} episodes "
        f"({res.states} states; spliced return {res.return_spliced:.1f}); "
        f"{res.features_per_minute:.1f} features per minute",
        *(
            f"  feature {r.feature}: delta {r.delta_return:+.1f} "
            f"[{r.delta_return_ci[0]:.1f}, {r.delta_return_ci[1]:.1f}], greedy action changed "
            f"on {r.greedy_changed:.1%} of states, action TV {r.action_tv:.3f}"
            for r in res.rows[:show]
        ),
        f"wrote {path}",
    ]
    emit(res.to_json(), as_json, "\n".join(lines))
