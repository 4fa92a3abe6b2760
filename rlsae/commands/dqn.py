"""``rlsae dqn``: Ms. Pac-Man DQN agents: train, eval, record, layers, splice, effects, replay."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rlsae.commands._apps import JsonOpt, dqn_app, emit
from rlsae.errors import RlsaeError


def _parse_set(items: list[str]) -> dict:
    """``--set key=value`` pairs (values parsed as JSON when possible: numbers, true/false)."""
    out = {}
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


@dqn_app.command("train")
def dqn_train(
    arch: str = typer.Option(
        ..., "--arch", help="nature (NatureCNN, 84x84x4) or poster (RGB CNN)."
    ),
    steps: int = typer.Option(..., "--steps", help="Environment steps to train for (in all)."),
    out: Path = typer.Option(..., "--out", help="Agent directory to create (or resume)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the network, exploration and envs."),
    checkpoint_every: int | None = typer.Option(
        None, "--checkpoint-every", help="Save checkpoints/step_N every N env steps."
    ),
    n_envs: int = typer.Option(1, "--n-envs", help="Emulators stepped side by side."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
    buffer_size: int | None = typer.Option(None, "--buffer-size", help="Replay buffer size."),
    learning_starts: int | None = typer.Option(
        None, "--learning-starts", help="Random steps before learning."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Transitions per update."),
    train_freq: int | None = typer.Option(None, "--train-freq", help="Env steps per update."),
    set_: list[str] = typer.Option(
        [], "--set", help="Any other DQN/env setting, key=value (e.g. --set gamma=0.99)."
    ),
    device: str = typer.Option("cpu", "--device", help="Torch device for training (cpu, cuda)."),
    as_json: bool = JsonOpt,
) -> None:
    """Train a DQN on Ms. Pac-Man (progress on stderr, TensorBoard logs in OUT/tensorboard)."""
    from rlsae.agents.dqn import train_dqn

    overrides = _parse_set(set_)
    for key, value in [
        ("buffer_size", buffer_size),
        ("learning_starts", learning_starts),
        ("batch_size", batch_size),
        ("train_freq", train_freq),
    ]:
        if value is not None:
            overrides[key] = value
    path = train_dqn(
        arch,
        steps,
        out,
        seed=seed,
        checkpoint_every=checkpoint_every,
        n_envs=n_envs,
        resume=resume,
        device=device,
        **overrides,
    )
    info = json.loads((path / "agent.json").read_text())
    ckpts = (
        sorted(p.name for p in (path / "checkpoints").glob("step_*"))
        if (path / "checkpoints").is_dir()
        else []
    )
    emit(
        {
            "agent": str(path),
            "arch": info["arch"],
            "steps_trained": info["steps_trained"],
            "checkpoints": ckpts,
            "hyperparameters": info["hyperparameters"],
        },
        as_json,
    )


@dqn_app.command("eval")
def dqn_eval(
    agent: Path = typer.Option(..., "--agent", help="Agent directory (or a checkpoint in one)."),
    episodes: int = typer.Option(10, "--episodes", help="Episodes to play."),
    epsilon: float = typer.Option(0.0, "--epsilon", help="Probability of a random action."),
    seed: int = typer.Option(0, "--seed", help="Seed of the episodes and epsilon draws."),
    n_envs: int = typer.Option(1, "--n-envs", help="Emulators played side by side."),
    max_episode_steps: int | None = typer.Option(
        None, "--max-episode-steps", help="Cut episodes at this many steps."
    ),
    no_save: bool = typer.Option(False, "--no-save", help="Do not write AGENT/eval.json."),
    as_json: bool = JsonOpt,
) -> None:
    """Mean score over seeded episodes, human-normalised (random 307.3, human 6951.6)."""
    from rlsae.agents.evaluate import evaluate_agent

    res = evaluate_agent(
        agent,
        episodes=episodes,
        epsilon=epsilon,
        seed=seed,
        n_envs=n_envs,
        max_episode_steps=max_episode_steps,
        save=not no_save,
    )
    emit(res, as_json)


@dqn_app.command("record")
def dqn_record(
    agent: Path = typer.Option(..., "--agent", help="Agent directory."),
    layer: str = typer.Option(..., "--layer", help="Layer to record (see `dqn layers`)."),
    steps: int = typer.Option(..., "--steps", help="Steps (rows) to record."),
    out: Path = typer.Option(..., "--out", help="New activation-store directory."),
    epsilon: float = typer.Option(0.2, "--epsilon", help="Probability of a random action."),
    seed: int = typer.Option(0, "--seed", help="Seed of the episodes and epsilon draws."),
    n_envs: int = typer.Option(4, "--n-envs", help="Emulators played side by side."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 or float16."),
    as_json: bool = JsonOpt,
) -> None:
    """Record a layer's activations while the agent plays (store + episodes.json for replay)."""
    from rlsae.agents.record import record_activations
    from rlsae.sae.store import ActivationStore

    path = record_activations(
        agent, layer, steps, out, epsilon=epsilon, seed=seed, n_envs=n_envs, dtype=dtype
    )
    st = ActivationStore(path)
    eps = json.loads((path / "episodes.json").read_text())["episodes"]
    emit(
        {"out": str(path), "rows": st.rows, "d_in": st.d_in, "layer": layer, "episodes": len(eps)},
        as_json,
    )


@dqn_app.command("layers")
def dqn_layers(
    agent: Path = typer.Option(..., "--agent", help="Agent directory."),
    as_json: bool = JsonOpt,
) -> None:
    """List the hookable layer names and widths of an agent."""
    from rlsae.agents.dqn import agent_summary

    res = agent_summary(agent)
    human = "\n".join(f"{name}\t{width}" for name, width in res["layers"].items())
    emit(res, as_json, human=None if as_json else human)


@dqn_app.command("splice")
def dqn_splice(
    agent: Path = typer.Option(..., "--agent", help="Agent directory."),
    sae: Path = typer.Option(..., "--sae", help="SAE directory trained on one of its layers."),
    episodes: int = typer.Option(5, "--episodes", help="Episodes per variant."),
    seed: int = typer.Option(0, "--seed", help="Seed of the episodes."),
    layer: str | None = typer.Option(None, "--layer", help="Layer (default: the SAE's hook)."),
    epsilon: float = typer.Option(0.0, "--epsilon", help="Probability of a random action."),
    max_episode_steps: int | None = typer.Option(
        None, "--max-episode-steps", help="Cut episodes at this many steps."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Play with the SAE reconstruction spliced in: return recovered, action agreement, Q FVU."""
    from rlsae.agents.splice import splice_metrics

    res = splice_metrics(
        agent,
        sae,
        episodes=episodes,
        seed=seed,
        layer=layer,
        epsilon=epsilon,
        max_episode_steps=max_episode_steps,
    )
    emit(res, as_json)


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
    """A feature's effect on the 9 action values (3x3 joystick grid, NOOP centre)."""
    from rlsae.agents.dqn import load_agent
    from rlsae.agents.effects import action_effect_grid, direct_effect_grid
    from rlsae.agents.networks import check_layer
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
    from rlsae.agents.replay import replay_frames, verify_replay

    res: dict = {"acts": str(acts), "episode": episode, "step": step}
    if verify:
        v = verify_replay(acts)
        res.update(checked=v["checked"], mismatches=len(v["mismatches"]))
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
