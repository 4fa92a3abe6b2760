"""``rlsae diff``: model diffing between a base and a tuned model (or two agent checkpoints) on
aligned activation stores: crosscoders, their latents, and the diff-SAE.

Options take their defaults and help texts from ``CrosscoderConfig`` and ``LatentConfig`` (one
source of truth); the whole config is validated before any store is opened or file written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from rlsae.commands._apps import JsonOpt, app, config_option, emit, plain_help
from rlsae.configs import check_range, field_default, field_docs
from rlsae.errors import RlsaeError
from rlsae.sae.crosscoder_config import CrosscoderConfig, LatentConfig

if TYPE_CHECKING:
    from rlsae.viewer.crosscoder import RowFrames

diff_app = typer.Typer(
    help="Model diffing: crosscoders with Latent Scaling, and the diff-SAE.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(diff_app, name="diff")

TRAIN_ARCHS = ("batchtopk", "l1", "diff-sae")
"""``diff train --arch``: the two crosscoders, and the diff-SAE (a BatchTopK SAE on tuned - base)."""
TRAIN_OPTIONS = {
    "d_sae": "--d-sae",
    "expansion": "--expansion",
    "k": "--k",
    "l1": "--l1",
    "steps": "--steps",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "seed": "--seed",
}
"""``diff train`` option of each CrosscoderConfig field it sets."""
LATENT_OPTIONS = {
    "tuned_only_ratio": "--tuned-only-ratio",
    "base_only_ratio": "--base-only-ratio",
    "nu_error_max": "--nu-error-max",
    "nu_reconstruction_max": "--nu-reconstruction-max",
    "batch_size": "--batch-size",
    "max_rows": "--max-rows",
}
"""``diff latents`` option of each LatentConfig field it sets."""


def _opt(cls: type, flags: dict[str, str], name: str, default: Any = ...) -> Any:
    help_text = plain_help(field_docs(cls)[name])
    if default is None:
        help_text += f" (default {field_default(cls, name):g})"
    return config_option(cls, name, flags[name], default, help=help_text)


def _store_dir(path: Path, side: str) -> None:
    if not path.is_dir():
        raise RlsaeError(f"--{side}: activation store {path} not found")


@diff_app.command("train")
def diff_train(
    base: Path = typer.Option(..., "--base", help="Activation store of the base model."),
    tuned: Path = typer.Option(
        ..., "--tuned", help="Activation store of the tuned model, row-aligned with --base."
    ),
    out: Path = typer.Option(..., "--out", help="New crosscoder (or diff-SAE) directory."),
    arch: str = typer.Option(
        "batchtopk",
        "--arch",
        help="batchtopk (BatchTopK crosscoder), l1 (Anthropic's L1 crosscoder) or diff-sae "
        "(a BatchTopK SAE on tuned - base).",
    ),
    d_sae: int | None = _opt(CrosscoderConfig, TRAIN_OPTIONS, "d_sae"),
    expansion: float | None = _opt(CrosscoderConfig, TRAIN_OPTIONS, "expansion", None),
    k: int = _opt(CrosscoderConfig, TRAIN_OPTIONS, "k"),
    l1: float = _opt(CrosscoderConfig, TRAIN_OPTIONS, "l1"),
    steps: int | None = _opt(CrosscoderConfig, TRAIN_OPTIONS, "steps"),
    batch_size: int = _opt(CrosscoderConfig, TRAIN_OPTIONS, "batch_size"),
    lr: float | None = _opt(CrosscoderConfig, TRAIN_OPTIONS, "lr"),
    seed: int = _opt(CrosscoderConfig, TRAIN_OPTIONS, "seed"),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run from its last checkpoint."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Train a crosscoder on two row-aligned stores (or, with --arch diff-sae, an SAE on their
    difference); progress on stderr, checkpoints, resumable."""
    if arch not in TRAIN_ARCHS:
        raise RlsaeError(f"--arch: expected one of {', '.join(TRAIN_ARCHS)}, got {arch!r}")
    if d_sae is not None and expansion is not None:
        raise RlsaeError("give --d-sae or --expansion, not both")
    cfg = CrosscoderConfig(
        arch="l1" if arch == "l1" else "batchtopk",
        d_sae=d_sae,
        expansion=expansion
        if expansion is not None
        else field_default(CrosscoderConfig, "expansion"),
        k=k,
        l1=l1,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
    )
    cfg.validate("diff train")  # before any store is opened or anything written
    _store_dir(base, "base")
    _store_dir(tuned, "tuned")

    from rlsae.sae.crosscoder_train import (
        TRAINING,
        CrosscoderRecord,
        train_crosscoder,
        train_diff_sae,
    )
    from rlsae.sae.paired import PairedStore
    from rlsae.sae.train import TrainingRecord

    pair = PairedStore(base, tuned, "diff" if arch == "diff-sae" else "concat")
    if arch == "diff-sae":
        tcfg = cfg.train_config()
        tcfg.final_eval = True
        tcfg.resolve(pair.d_in, "diff train")  # k vs the resolved d_sae: before any write
        train_diff_sae(pair.base, pair.tuned, out, tcfg, resume=resume)
        info = TrainingRecord.read(out / TRAINING).to_json()
        result = {"out": str(out), "arch": arch, "steps": info["steps"], **(info["final"] or {})}
    else:
        cfg.resolve_d_sae(pair.d_model, "diff train")
        train_crosscoder(pair.base, pair.tuned, out, cfg, resume=resume)
        record = CrosscoderRecord.read(out / TRAINING)
        result = {
            "out": str(out),
            "arch": arch,
            "d_sae": record.crosscoder.d_sae,
            "steps": record.steps,
            "rows_seen": record.rows_seen,
            **record.final.to_json(),
        }
        result.pop("format", None), result.pop("version", None)
    emit(result, as_json)


@diff_app.command("latents")
def diff_latents(
    crosscoder: Path = typer.Option(..., "--crosscoder", help="Crosscoder directory."),
    base: Path = typer.Option(..., "--base", help="Activation store of the base model."),
    tuned: Path = typer.Option(..., "--tuned", help="Activation store of the tuned model."),
    tuned_only_ratio: float = _opt(LatentConfig, LATENT_OPTIONS, "tuned_only_ratio"),
    base_only_ratio: float = _opt(LatentConfig, LATENT_OPTIONS, "base_only_ratio"),
    nu_error_max: float = _opt(LatentConfig, LATENT_OPTIONS, "nu_error_max"),
    nu_reconstruction_max: float = _opt(LatentConfig, LATENT_OPTIONS, "nu_reconstruction_max"),
    batch_size: int = _opt(LatentConfig, LATENT_OPTIONS, "batch_size"),
    max_rows: int | None = _opt(LatentConfig, LATENT_OPTIONS, "max_rows"),
    save: Path | None = typer.Option(
        None, "--save", help="Also write the full result (rlsae.crosscoder_latents) here."
    ),
    html: Path | None = typer.Option(
        None, "--html", help="Also write the norm-ratio histogram (classes coloured) here."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Each latent's decoder-norm ratio, cosine and Latent Scaling nu (Minder et al. 2025), its
    class (shared, base_only, tuned_only, artefact, dead) and the counts."""
    cfg = LatentConfig(
        tuned_only_ratio=tuned_only_ratio,
        base_only_ratio=base_only_ratio,
        nu_error_max=nu_error_max,
        nu_reconstruction_max=nu_reconstruction_max,
        batch_size=batch_size,
        max_rows=max_rows,
    )
    cfg.validate("diff latents")
    if not crosscoder.is_dir():
        raise RlsaeError(f"--crosscoder: {crosscoder} not found")
    _store_dir(base, "base")
    _store_dir(tuned, "tuned")

    from rlsae.sae.crosscoder import load_crosscoder, read_spec
    from rlsae.sae.latents import analyse_latents
    from rlsae.sae.paired import PairedStore

    spec = read_spec(crosscoder)  # an SAE directory is refused here, before torch work
    pair = PairedStore(base, tuned, "concat")
    if pair.d_model != spec.d_in:
        raise RlsaeError(
            f"the crosscoder reads d_in={spec.d_in} but the stores have d_in={pair.d_model}"
        )
    info = analyse_latents(load_crosscoder(crosscoder), pair, cfg)
    if save is not None:
        info.write(save)
    if html is not None:
        from rlsae.analysis.crosscoder import norm_ratio_figure
        from rlsae.analysis.figures import write_figure_html

        write_figure_html(norm_ratio_figure(info), html, title=f"{crosscoder} latents")
    latents = [
        {
            "latent": r.latent,
            "class": r.kind,
            "norm_ratio": r.norm_ratio,
            "cosine": r.cosine,
            "nu_error": r.nu_error,
            "nu_reconstruction": r.nu_reconstruction,
            "norm_base": r.norm_base,
            "norm_tuned": r.norm_tuned,
            "fires": r.fires,
        }
        for r in info.latents
    ]
    result = {"n_latents": info.n_latents, "rows": info.rows, "counts": info.counts}
    emit({**result, "latents": latents}, as_json, None if as_json else _summary(info))


def _summary(info: Any) -> str:
    """Counts, then the model-only latents (tuned first) and the artefacts."""
    lines = [f"{info.n_latents} latents over {info.rows} rows: "
             + ", ".join(f"{k} {v}" for k, v in info.counts.items())]  # fmt: skip
    shown = [r for r in info.latents if r.kind in ("tuned_only", "base_only", "artefact")]
    if shown:
        lines.append("latent  class       norm_ratio  cosine  nu_error  nu_reconstruction")
    for r in sorted(shown, key=lambda r: (r.kind, -(r.norm_ratio or 0))):
        lines.append(
            f"{r.latent:6d}  {r.kind:10s}  {_g(r.norm_ratio):>10}  {_g(r.cosine):>6}  "
            f"{_g(r.nu_error):>8}  {_g(r.nu_reconstruction):>17}"
        )
    return "\n".join(lines)


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


@diff_app.command("record")
def diff_record(
    on: Path = typer.Option(..., "--on", help="An agent's activation store (rlsae dqn record)."),
    agent: Path = typer.Option(
        ..., "--agent", help="Another agent, or a checkpoint directory of one run."
    ),
    out: Path = typer.Option(..., "--out", help="New activation-store directory."),
    layer: str | None = typer.Option(None, "--layer", help="Layer (default: the recording's)."),
    as_json: bool = JsonOpt,
) -> None:
    """Record --agent's activations on the game states of the recording --on (replayed and
    checked step by step): a store row-aligned with it, for a crosscoder between the two."""
    if not (on / "meta.json").is_file():
        raise RlsaeError(f"--on: activation store {on} not found")
    if not agent.is_dir():
        raise RlsaeError(f"--agent: agent directory {agent} not found")
    if out.exists():
        raise RlsaeError(f"{out} already exists; choose another --out or remove it")

    from rlsae.agents.crossrecord import record_on_recording

    path = record_on_recording(on, agent, out, layer=layer, progress=True)
    from rlsae.sae.store import ActivationStore

    store = ActivationStore(path)
    emit({"out": str(path), "rows": store.rows, "d_in": store.d_in, "hook": store.hook}, as_json)


@diff_app.command("pages")
def diff_pages(
    crosscoder: Path = typer.Option(..., "--crosscoder", help="Crosscoder directory."),
    base: Path = typer.Option(..., "--base", help="Activation store of the base model."),
    tuned: Path = typer.Option(..., "--tuned", help="Activation store of the tuned model."),
    out: Path = typer.Option(..., "--out", help="New directory for the pages."),
    top: int = typer.Option(8, "--top", help="Top rows shown per latent."),
    shared: int = typer.Option(
        10, "--shared", help="Most-firing shared latents that also get a page."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Static pages of a crosscoder's latents: the norm-ratio histogram with the classes
    coloured, and per model-only, artefact and top shared latent its norms, cosine, betas, nu,
    contribution histograms and top rows in both models side by side (for agent stores each
    row's game frame, replayed from the recording)."""
    check_range("diff pages", "top", top, 1)
    check_range("diff pages", "shared", shared, 1, 2**26)  # at most the largest d_sae
    if not crosscoder.is_dir():
        raise RlsaeError(f"--crosscoder: {crosscoder} not found")
    _store_dir(base, "base")
    _store_dir(tuned, "tuned")
    if out.exists():
        raise RlsaeError(f"{out} already exists; choose another --out or remove it")

    from rlsae.sae.crosscoder import read_spec
    from rlsae.viewer.crosscoder import export_crosscoder_pages

    read_spec(crosscoder)  # an SAE directory is refused here, before torch work
    path = export_crosscoder_pages(
        crosscoder, base, tuned, out, top=top, shared=shared, frames=_agent_frames(base)
    )
    pages = sorted(p.name for p in (path / "latents").iterdir())
    emit({"out": str(path), "index": str(path / "index.html"), "latent_pages": len(pages)}, as_json)


def _agent_frames(store: Path) -> RowFrames | None:
    """For an agent store (provider ``atari`` with its ``episodes.json``), the replayed frames
    of its rows for the crosscoder pages; None for any other store."""
    from rlsae.sae.store import ActivationStore

    if ActivationStore(store).provider != "atari" or not (store / "episodes.json").is_file():
        return None
    from functools import partial

    from rlsae.agents.viewer_source import store_row_frames

    return partial(store_row_frames, store)


@diff_app.command("checkpoints")
def diff_checkpoints(
    agent: Path = typer.Option(..., "--agent", help="Agent directory with checkpoints/step_N."),
    acts: Path = typer.Option(
        ..., "--acts", help="A recording (rlsae dqn record) whose states every checkpoint sees."
    ),
    out: Path = typer.Option(..., "--out", help="Directory for the stores and crosscoders."),
    d_sae: int | None = _opt(CrosscoderConfig, TRAIN_OPTIONS, "d_sae"),
    k: int = _opt(CrosscoderConfig, TRAIN_OPTIONS, "k"),
    steps: int | None = _opt(CrosscoderConfig, TRAIN_OPTIONS, "steps"),
    batch_size: int = _opt(CrosscoderConfig, TRAIN_OPTIONS, "batch_size"),
    seed: int = _opt(CrosscoderConfig, TRAIN_OPTIONS, "seed"),
    eval_episodes: int = typer.Option(
        3, "--eval-episodes", help="Episodes per checkpoint's return."
    ),
    max_episode_steps: int | None = typer.Option(
        None, "--max-episode-steps", help="Cut evaluation episodes at this many steps."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Crosscoders between consecutive checkpoints of one run on the same recorded states,
    joined with each checkpoint's return: features that appear (tuned_only), vanish
    (base_only) or persist (shared) over training."""
    cfg = CrosscoderConfig(d_sae=d_sae, k=k, steps=steps, batch_size=batch_size, seed=seed)
    cfg.validate("diff checkpoints")
    check_range("diff checkpoints", "eval_episodes", eval_episodes, 1, 10_000)
    if max_episode_steps is not None:
        check_range("diff checkpoints", "max_episode_steps", max_episode_steps, 1, 10_000_000)
    if not (acts / "meta.json").is_file():
        raise RlsaeError(f"--acts: activation store {acts} not found")
    if not agent.is_dir():
        raise RlsaeError(f"--agent: agent directory {agent} not found")

    from rlsae.agents.checkpoint_diff import checkpoint_crosscoders

    res = checkpoint_crosscoders(
        agent, acts, out, cfg, eval_episodes=eval_episodes,
        max_episode_steps=max_episode_steps, progress=True,
    )  # fmt: skip
    if as_json:
        emit(res.to_json(), True)
        return
    lines = [f"{len(res.checkpoints)} checkpoints of {res.agent} on {res.recording} ({res.layer})"]
    lines.append("earlier  later  appeared  vanished  persisted  return change")
    for p in res.pairs:
        change = "-" if p.return_change is None else f"{p.return_change:+.1f}"
        lines.append(
            f"{p.earlier:7d}  {p.later:5d}  {p.counts['tuned_only']:8d}  "
            f"{p.counts['base_only']:8d}  {p.counts['shared']:9d}  {change:>13}"
        )
    emit({}, False, "\n".join(lines))
