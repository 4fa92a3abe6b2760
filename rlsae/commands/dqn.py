"""``rlsae dqn``: DQN agents (Ms. Pac-Man unless ``--game`` names another ALE game): train,
eval, record, layers, splice, steer, saliency, effects, replay.

Options take their defaults and help texts from the config dataclasses of
:mod:`rlsae.agents.config`, and every value is checked by the config's ``validate`` before torch
or the emulator is imported (a refused command answers at once and writes nothing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from rlsae.agents.agent_dir import (
    check_agent_dir,
    check_train_dir,
    list_checkpoints,
    read_agent_info,
)
from rlsae.agents.config import (
    DQNConfig,
    DQNTrainConfig,
    EnvConfig,
    EvalConfig,
    RecordConfig,
    SaliencyConfig,
    SpliceConfig,
    SteerConfig,
    build_configs,
    check_device,
    check_game,
    check_int,
    train_config,
)
from rlsae.agents.layers import check_layer
from rlsae.agents.results import AgentInfo, read_episodes
from rlsae.commands._apps import JsonOpt, config_option, dqn_app, emit
from rlsae.configs import field_docs
from rlsae.errors import RlsaeError

if TYPE_CHECKING:  # numpy-heavy; the concepts verb imports it when it runs
    from rlsae.agents.concepts import ConceptMatches


_opt = config_option


def _arch_default(name: str) -> str:
    return f"{field_docs(DQNConfig)[name]} (default: the arch's)"


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs (values parsed as JSON when possible: numbers, true/false)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise RlsaeError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip().replace("-", "_")] = value
    return out


GAME_CHECK = (
    "The game the agent plays is the one in its agent.json; if given, this must name it (a "
    "check that the agent is the one you mean)."
)


def check_agent_game(where: str, agent: Path, game: str | None) -> AgentInfo:
    """The agent's ``agent.json``, after refusing a ``--game`` that is not the agent's game."""
    info = check_agent_dir(agent)
    if game is not None and game != info.env.game:
        check_game(where, game)
        raise RlsaeError(
            f"{where}: {agent} plays {info.env.game} (agent.json), not {game}; agents play the "
            "game they were trained or imported for"
        )
    return info


@dqn_app.command("train")
def dqn_train(
    arch: str = typer.Option(..., "--arch", help=field_docs(DQNTrainConfig)["arch"]),
    steps: int = typer.Option(..., "--steps", help=field_docs(DQNTrainConfig)["steps"]),
    out: Path = typer.Option(..., "--out", help="Agent directory to create (or resume)."),
    seed: int = _opt(DQNTrainConfig, "seed", "--seed"),
    checkpoint_every: int | None = _opt(DQNTrainConfig, "checkpoint_every", "--checkpoint-every"),
    n_envs: int = _opt(DQNTrainConfig, "n_envs", "--n-envs"),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the last checkpoint (the settings must match)."
    ),
    buffer_size: int | None = _opt(
        DQNConfig, "buffer_size", "--buffer-size", None, _arch_default("buffer_size")
    ),
    learning_starts: int | None = _opt(
        DQNConfig, "learning_starts", "--learning-starts", None, _arch_default("learning_starts")
    ),
    batch_size: int | None = _opt(
        DQNConfig, "batch_size", "--batch-size", None, _arch_default("batch_size")
    ),
    train_freq: int | None = _opt(
        DQNConfig, "train_freq", "--train-freq", None, _arch_default("train_freq")
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Any other DQN/env setting, key=value (e.g. --set gamma=0.99)."
    ),
    device: str = typer.Option("cpu", "--device", help="Torch device for training (cpu, cuda)."),
    game: str = _opt(EnvConfig, "game", "--game"),
    as_json: bool = JsonOpt,
) -> None:
    """Train a DQN on an Atari game, Ms. Pac-Man by default (progress on stderr, TensorBoard
    logs in OUT/tensorboard)."""
    overrides = parse_set(set_)
    overrides.setdefault("game", game)
    build_configs(arch, overrides, where="--set")  # names the --set key that is wrong
    for key, value in [
        ("buffer_size", buffer_size),
        ("learning_starts", learning_starts),
        ("batch_size", batch_size),
        ("train_freq", train_freq),
    ]:
        if value is not None:
            overrides[key] = value
    kw: dict[str, Any] = dict(seed=seed, checkpoint_every=checkpoint_every, n_envs=n_envs)
    # every value and the --out directory checked before torch loads
    check_train_dir(train_config(arch, steps, **kw, **overrides), out, resume)
    check_device("dqn train", device)

    from rlsae.agents.dqn import train_dqn

    path = train_dqn(arch, steps, out, resume=resume, device=device, **kw, **overrides)
    info = read_agent_info(path)
    emit(
        {
            "agent": str(path),
            "arch": info.arch,
            "steps_trained": info.steps_trained,
            "checkpoints": [c.path.name for c in list_checkpoints(path)],
            "hyperparameters": info.to_json()["hyperparameters"],
        },
        as_json,
    )


@dqn_app.command("eval")
def dqn_eval(
    agent: Path = typer.Option(..., "--agent", help="Agent directory (or a checkpoint in one)."),
    episodes: int = _opt(EvalConfig, "episodes", "--episodes"),
    epsilon: float = _opt(EvalConfig, "epsilon", "--epsilon"),
    seed: int = _opt(EvalConfig, "seed", "--seed"),
    n_envs: int = _opt(EvalConfig, "n_envs", "--n-envs"),
    max_episode_steps: int | None = _opt(EvalConfig, "max_episode_steps", "--max-episode-steps"),
    no_save: bool = typer.Option(False, "--no-save", help="Do not write AGENT/eval.json."),
    game: str | None = typer.Option(None, "--game", help=GAME_CHECK),
    as_json: bool = JsonOpt,
) -> None:
    """Mean score over seeded episodes in the agent's game, human-normalised (Ms. Pac-Man:
    random 307.3, human 6951.6)."""
    cfg = EvalConfig(episodes, epsilon, seed, n_envs, max_episode_steps)
    cfg.validate("dqn eval")
    check_agent_game("dqn eval", agent, game)

    from rlsae.agents.evaluate import evaluate_agent

    res = evaluate_agent(
        agent,
        episodes=cfg.episodes,
        epsilon=cfg.epsilon,
        seed=cfg.seed,
        n_envs=cfg.n_envs,
        max_episode_steps=cfg.max_episode_steps,
        save=not no_save,
    )
    emit(res.to_json(), as_json)


@dqn_app.command("record")
def dqn_record(
    agent: Path = typer.Option(..., "--agent", help="Agent directory."),
    layer: str = typer.Option(..., "--layer", help=field_docs(RecordConfig)["layer"]),
    steps: int = typer.Option(..., "--steps", help=field_docs(RecordConfig)["steps"]),
    out: Path = typer.Option(..., "--out", help="New activation-store directory."),
    epsilon: float = _opt(RecordConfig, "epsilon", "--epsilon"),
    seed: int = _opt(RecordConfig, "seed", "--seed"),
    n_envs: int = _opt(RecordConfig, "n_envs", "--n-envs"),
    dtype: str = _opt(RecordConfig, "dtype", "--dtype"),
    max_episode_steps: int | None = _opt(RecordConfig, "max_episode_steps", "--max-episode-steps"),
    resume: bool = typer.Option(
        False, "--resume", help="Keep a finished store at --out recorded with these settings."
    ),
    game: str | None = typer.Option(None, "--game", help=GAME_CHECK),
    ram: bool = typer.Option(
        False,
        "--ram",
        help="Also store the emulator's RAM with every row (context column `ram`), read from "
        "lockstep emulators during the play (every game emulated twice). Without it the RAM is "
        "regenerated by replay when asked for (dqn concepts) and kept in the store.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Record a layer's activations while the agent plays its game (store + episodes.json for
    replay)."""
    cfg = RecordConfig(layer, steps, epsilon, seed, n_envs, dtype, max_episode_steps)
    cfg.validate("dqn record")
    check_layer(check_agent_game("dqn record", agent, game).arch, cfg.layer)

    from rlsae.agents.record import record_activations
    from rlsae.sae.store import ActivationStore

    path = record_activations(
        agent,
        cfg.layer,
        cfg.steps,
        out,
        epsilon=cfg.epsilon,
        seed=cfg.seed,
        n_envs=cfg.n_envs,
        dtype=cfg.dtype,
        max_episode_steps=cfg.max_episode_steps,
        resume=resume,
        ram=ram,
    )
    st = ActivationStore(path)
    emit(
        {
            "out": str(path),
            "rows": st.rows,
            "d_in": st.d_in,
            "layer": cfg.layer,
            "episodes": len(read_episodes(path).episodes),
        },
        as_json,
    )


@dqn_app.command("layers")
def dqn_layers(
    agent: Path = typer.Option(..., "--agent", help="Agent directory."),
    as_json: bool = JsonOpt,
) -> None:
    """List the hookable layer names and widths of an agent."""
    check_agent_dir(agent)
    from rlsae.agents.dqn import agent_summary

    res = agent_summary(agent)
    human = "\n".join(f"{name}\t{width}" for name, width in res["layers"].items())
    emit(res, as_json, human=None if as_json else human)


@dqn_app.command("splice")
def dqn_splice(
    agent: Path = typer.Option(..., "--agent", help="Agent directory."),
    sae: Path = typer.Option(..., "--sae", help="SAE directory trained on one of its layers."),
    episodes: int = _opt(SpliceConfig, "episodes", "--episodes"),
    seed: int = _opt(SpliceConfig, "seed", "--seed"),
    layer: str | None = _opt(SpliceConfig, "layer", "--layer"),
    epsilon: float = _opt(SpliceConfig, "epsilon", "--epsilon"),
    n_envs: int = _opt(SpliceConfig, "n_envs", "--n-envs"),
    max_episode_steps: int | None = _opt(SpliceConfig, "max_episode_steps", "--max-episode-steps"),
    prefix: int | None = _opt(SpliceConfig, "prefix", "--prefix"),
    as_json: bool = JsonOpt,
) -> None:
    """Play with the SAE reconstruction spliced in: return recovered, action agreement, Q FVU."""
    cfg = SpliceConfig(
        episodes=episodes, epsilon=epsilon, seed=seed, n_envs=n_envs,
        max_episode_steps=max_episode_steps, layer=layer, prefix=prefix,
    )  # fmt: skip
    cfg.validate("dqn splice")
    check_agent_dir(agent)

    from rlsae.agents.splice import splice_metrics

    res = splice_metrics(
        agent,
        sae,
        episodes=cfg.episodes,
        seed=cfg.seed,
        layer=cfg.layer,
        epsilon=cfg.epsilon,
        n_envs=cfg.n_envs,
        max_episode_steps=cfg.max_episode_steps,
        prefix=cfg.prefix,
    )
    emit(res.to_json(), as_json)


def parse_features(text: str, where: str) -> list[int]:
    """``3,17`` -> [3, 17] (one-line error for anything else)."""
    try:
        out = [int(x) for x in text.split(",")]
    except ValueError:
        raise RlsaeError(
            f"{where}: --feature: expected feature indices like 3 or 3,17, got {text!r}"
        ) from None
    return out


@dqn_app.command("steer")
def dqn_steer(
    agent: Path = typer.Option(..., "--agent", help="Agent directory."),
    sae: Path = typer.Option(..., "--sae", help="SAE directory trained on one of its layers."),
    feature: str = typer.Option(..., "--feature", help=field_docs(SteerConfig)["features"]),
    scale: float | None = _opt(SteerConfig, "scale", "--scale"),
    ablate: bool = _opt(SteerConfig, "ablate", "--ablate"),
    relative: bool = _opt(SteerConfig, "relative", "--relative"),
    acts: Path | None = typer.Option(
        None,
        "--acts",
        help="Recorded store for each feature's maximum (and dead features); "
        "default: the SAE's feature_stats.safetensors.",
    ),
    episodes: int = _opt(SteerConfig, "episodes", "--episodes"),
    seed: int = _opt(SteerConfig, "seed", "--seed"),
    layer: str | None = _opt(SteerConfig, "layer", "--layer"),
    epsilon: float = _opt(SteerConfig, "epsilon", "--epsilon"),
    n_envs: int = _opt(SteerConfig, "n_envs", "--n-envs"),
    max_episode_steps: int | None = _opt(SteerConfig, "max_episode_steps", "--max-episode-steps"),
    bootstrap: int = _opt(SteerConfig, "bootstrap", "--bootstrap"),
    as_json: bool = JsonOpt,
) -> None:
    """Play with SAE features steered or ablated: Δreturn (bootstrap CI), action shift, changes."""
    cfg = SteerConfig(
        episodes=episodes, epsilon=epsilon, seed=seed, n_envs=n_envs,
        max_episode_steps=max_episode_steps, layer=layer,
        features=parse_features(feature, "dqn steer"), scale=scale, ablate=ablate,
        relative=relative, bootstrap=bootstrap,
    )  # fmt: skip
    cfg.validate("dqn steer")
    check_agent_dir(agent)

    from rlsae.agents.steer import steer_features

    res = steer_features(
        agent, sae, cfg.features, cfg.scale, ablate=cfg.ablate, relative=cfg.relative, acts=acts,
        episodes=cfg.episodes, seed=cfg.seed, layer=cfg.layer, epsilon=cfg.epsilon,
        n_envs=cfg.n_envs, max_episode_steps=cfg.max_episode_steps, bootstrap=cfg.bootstrap,
    )  # fmt: skip
    lo, hi = res.delta_return_ci
    human = (
        f"features {res.features} at {res.layer}: return {res.return_spliced:.1f} -> "
        f"{res.return_steered:.1f} (delta {res.delta_return:+.1f}, 95% CI [{lo:.1f}, {hi:.1f}])\n"
        f"greedy action changed on {res.greedy_changed:.1%} of {res.states} states; "
        f"action TV {res.action_tv:.3f}, KL {res.action_kl:.3f}"
    )
    emit(res.to_json(), as_json, human)


@dqn_app.command("saliency")
def dqn_saliency(
    agent: Path = typer.Option(..., "--agent", help="Agent directory."),
    sae: Path = typer.Option(..., "--sae", help="SAE directory trained on one of its layers."),
    acts: Path = typer.Option(..., "--acts", help="Store written by `dqn record` (the state)."),
    feature: int = typer.Option(..., "--feature", help="Feature index."),
    out: Path = typer.Option(..., "--out", help="PNG to write: the heat map over the frame."),
    episode: int = typer.Option(0, "--episode", help="Recorded episode."),
    step: int = typer.Option(0, "--step", help="Step within the episode."),
    method: str = _opt(SaliencyConfig, "method", "--method"),
    baseline: str = _opt(SaliencyConfig, "baseline", "--baseline"),
    steps: int = _opt(SaliencyConfig, "steps", "--steps"),
    layer: str | None = typer.Option(None, "--layer", help="Layer (default: the SAE's hook)."),
    as_json: bool = JsonOpt,
) -> None:
    """Where in the frame a feature looks: integrated gradients or gradient x input, as a PNG."""
    cfg = SaliencyConfig(method=method, baseline=baseline, steps=steps)
    cfg.validate("dqn saliency")
    check_int("dqn saliency", "feature", feature, 0)
    check_agent_dir(agent)
    _check_state("dqn saliency", acts, episode, step)

    from rlsae.agents.saliency import state_saliency

    res = state_saliency(
        agent, sae, acts, feature, episode, step, out, method=cfg.method,
        baseline=cfg.baseline, steps=cfg.steps, layer=layer,
    )  # fmt: skip
    human = f"feature {res.feature} activation {res.activation:.4g}: {res.method} map -> {res.out}"
    if res.completeness_error is not None:
        human += f" (completeness error {res.completeness_error:.2e})"
    emit(res.to_json(), as_json, human)


@dqn_app.command("effects")
def dqn_effects(
    agent: Path = typer.Option(..., "--agent", help="Agent directory."),
    sae: Path = typer.Option(..., "--sae", help="SAE directory."),
    feature: int = typer.Option(..., "--feature", help="Feature index."),
    acts: Path | None = typer.Option(
        None, "--acts", help="Recorded store to take the state from (with --episode/--step)."
    ),
    episode: int = typer.Option(0, "--episode", help="Recorded episode."),
    step: int = typer.Option(0, "--step", help="Step within the episode."),
    layer: str | None = typer.Option(None, "--layer", help="Layer (default: the SAE's hook)."),
    as_json: bool = JsonOpt,
) -> None:
    """A feature's effect on the agent's action values: Ms. Pac-Man's 9 on the 3x3 joystick grid
    (NOOP centre), an 18-action joystick on 3x6 (with the button on the right), any other game's
    actions as one row in action order."""
    check_int("dqn effects", "feature", feature, 0)
    check_agent_dir(agent)
    if acts is not None:
        _check_state("dqn effects", acts, episode, step)

    from rlsae.agents.dqn import load_agent
    from rlsae.agents.effects import action_effect_grid, direct_effect_grid
    from rlsae.sae import load_sae

    ag = load_agent(agent)
    model = load_sae(sae)
    layer = layer or model.cfg.hook_name
    if not layer:
        raise RlsaeError("the SAE names no layer; pass --layer")
    res: dict = {"agent": str(agent), "sae": str(sae), "layer": layer, "feature": feature}
    if not check_layer(ag.arch, layer)[2]:
        res["direct_effect_grid"] = direct_effect_grid(ag, model, layer, feature).tolist()
    if acts is not None:
        from rlsae.agents.replay import replay_observations

        obs = replay_observations(acts, episode, [step])[0]
        res.update(episode=episode, step=step)
        res["effect_grid"] = action_effect_grid(ag, model, layer, feature, obs).tolist()
    emit(res, as_json)


@dqn_app.command("replay")
def dqn_replay(
    acts: Path = typer.Option(..., "--acts", help="Store written by `dqn record`."),
    episode: int = typer.Option(0, "--episode", help="Recorded episode."),
    step: int = typer.Option(0, "--step", help="Step within the episode."),
    out: Path | None = typer.Option(None, "--out", help="Write the screen as a PNG here."),
    verify: bool = typer.Option(False, "--verify", help="Check every replayed hash."),
    as_json: bool = JsonOpt,
) -> None:
    """Regenerate a recorded screen by replaying its episode (optionally verify all hashes)."""
    _check_state("dqn replay", acts, episode, step)

    from rlsae.agents.replay import replay_frames, verify_replay

    res: dict = {"acts": str(acts), "episode": episode, "step": step}
    if verify:
        v = verify_replay(acts)
        res.update(checked=v.checked, mismatches=len(v.mismatches))
    frame = replay_frames(acts, episode, [step])[0]
    res["shape"] = list(frame.shape)
    if out is not None:
        import io

        from PIL import Image

        from rlsae.fsutil import atomic_write_bytes

        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="PNG")
        atomic_write_bytes(out, buf.getvalue())
        res["png"] = str(out)
    emit(res, as_json)


def _check_state(where: str, acts: Path, episode: int, step: int) -> None:
    """Refuse a recorded state the store does not have, before the emulator is loaded."""
    check_int(where, "episode", episode, 0)
    check_int(where, "step", step, 0)
    n = len(read_episodes(acts).episode(episode).actions)
    if step > n:
        raise RlsaeError(f"episode {episode} has steps 0..{n}; cannot replay step {step}")


@dqn_app.command("concepts")
def dqn_concepts(
    agent: Path = typer.Option(..., "--agent", help="Agent directory the store was recorded from."),
    sae: Path = typer.Option(..., "--sae", help="SAE directory trained on the store."),
    acts: Path = typer.Option(..., "--acts", help="Store written by `dqn record` (poster mode)."),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write the matches (default: SAE/concepts.json)."
    ),
    concepts: list[str] = typer.Option(
        [], "--concepts", help="Match only these concepts (repeat; default: all of them)."
    ),
    top_k: int = typer.Option(5, "--top-k", help="Best concepts kept per feature."),
    max_rows: int | None = typer.Option(
        100_000, "--max-rows", help="Match on at most this many evenly spaced rows."
    ),
    show: int = typer.Option(10, "--show", help="Best-explained features printed."),
    as_json: bool = JsonOpt,
) -> None:
    """Which Ms. Pac-Man game-state concepts (from the emulator's RAM) each SAE feature encodes.

    Regenerates the RAM of every recorded row by replay, encodes the rows with the SAE, and
    writes each live feature's best concepts (AUROC / Spearman, F1 threshold) with the SAE's
    coverage (live features with a match of AUROC >= 0.9); see docs/agents.md.
    """
    check_int("dqn concepts", "top_k", top_k, 1)
    check_int("dqn concepts", "show", show, 0)
    if max_rows is not None:
        check_int("dqn concepts", "max_rows", max_rows, 1)
    # numpy-heavy (concepts, RAM decoding): imported here so other verbs start fast
    from rlsae.agents.concept_run import CONCEPTS_FILE, check_concept_inputs, sae_concepts

    check_concept_inputs(agent, sae, acts, concepts or None)  # before torch and the emulator
    res = sae_concepts(agent, sae, acts, concepts=concepts or None, top_k=top_k, max_rows=max_rows)
    path = res.write(out if out is not None else sae / CONCEPTS_FILE)
    explained = [f for f in res.features if f.matches]
    best = sorted(explained, key=lambda f: -f.matches[0].strength)[:show]
    layer_only = _layer_only(res)
    summary = {
        "out": str(path),
        "rows": res.n_rows,
        "features": res.n_features,
        "live_features": res.live_features,
        "coverage": res.coverage,
        "coverage_auroc": res.coverage_auroc,
        "top": [{"feature": f.feature, "explanation": f.explanation} for f in best],
        "layer_only": layer_only,
    }
    cov = "n/a" if res.coverage is None else f"{res.coverage:.3f}"
    lines = [
        f"{res.live_features} of {res.n_features} features live over {res.n_rows} rows; "
        f"coverage {cov} (best match AUROC >= {res.coverage_auroc:g})",
        *(f"  feature {f.feature}: {f.explanation}" for f in best),
    ]
    if layer_only:
        lines.append("the layer encodes, no single feature carries (probe AUROC vs best feature):")
        lines += [
            f"  {c['concept']}: probe {c['probe_auroc']:.2f}, best feature "
            + ("none" if c["feature"] is None else f"{c['feature']} {c['auroc']:.2f}")
            for c in layer_only[:show]
        ]
    lines.append(f"wrote {path}")
    emit(summary, as_json, human=None if as_json else "\n".join(lines))


def _layer_only(res: ConceptMatches) -> list[dict[str, Any]]:
    """Boolean concepts a linear probe on the raw layer finds (held-out AUROC >= the coverage
    threshold) but no single feature does, widest gap first."""
    out = []
    for b in res.best_per_concept:
        probe, score = b.probe_score, b.score
        if b.kind != "bool" or probe is None or probe < res.coverage_auroc:
            continue
        if score is not None and score >= res.coverage_auroc:
            continue
        out.append({"concept": b.concept, "probe_auroc": probe, "feature": b.feature,
                    "auroc": score, "negated": b.negated})  # fmt: skip
    return sorted(out, key=lambda c: -(c["probe_auroc"] - (c["auroc"] or 0.5)))
