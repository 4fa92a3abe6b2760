"""``rlsae sae``: train and evaluate sparse autoencoders.

``sae train``'s options take their defaults and help texts from ``TrainConfig``'s fields (one
source of truth; ``tests/sae/test_cli.py`` checks they agree), and the whole config is validated
by ``TrainConfig.validate`` before the store is opened or anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rlsae.commands._apps import JsonOpt, config_option, emit, plain_help, sae_app
from rlsae.configs import field_default, field_docs, from_mapping
from rlsae.errors import RlsaeError
from rlsae.llm.causal_configs import SpliceEvalConfig
from rlsae.sae.config import TrainConfig, check_eval_args

TRAIN_OPTIONS = {
    "arch": "--arch",
    "d_sae": "--d-sae",
    "expansion": "--expansion",
    "k": "--k",
    "topk_threshold_lr": "--topk-threshold-lr",
    "matryoshka_groups": "--matryoshka-groups",
    "matryoshka_aux": "--matryoshka-aux",
    "l1": "--l1",
    "l0": "--l0",
    "l0_warmup_frac": "--l0-warmup-frac",
    "bandwidth": "--bandwidth",
    "init_threshold": "--init-threshold",
    "sparsity_loss": "--sparsity-loss",
    "pre_act_loss": "--pre-act-loss",
    "tied": "--tied",
    "aux_k": "--aux-k",
    "dead_rows": "--dead-rows",
    "steps": "--steps",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "seed": "--seed",
    "checkpoint_every": "--checkpoint-every",
}
"""``sae train`` option of each TrainConfig field it sets."""


def _opt(name: str, *, either: bool = False) -> Any:
    """A typer option for TrainConfig field ``name``: its default and docstring. ``either``: the
    option defaults to None (it excludes another one) and its help names the field default."""
    help_text = plain_help(field_docs(TrainConfig)[name])  # "W_dec[i]" is not rich markup
    default = field_default(TrainConfig, name)
    if either:
        return config_option(
            TrainConfig, name, TRAIN_OPTIONS[name], None, f"{help_text} (default {default:g})"
        )
    return config_option(TrainConfig, name, TRAIN_OPTIONS[name], help=help_text)


def _int_list(flag: str, text: str | None) -> list[int] | None:
    """``"64,64,128"`` as [64, 64, 128]; RlsaeError in one line for anything else."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise RlsaeError(
            f"{flag}: expected integers separated by commas (e.g. 64,64,128), got {text!r}"
        ) from None


@sae_app.command("train")
def sae_train(
    acts: Path = typer.Option(..., "--acts", help="Activation store to train on."),
    out: Path = typer.Option(..., "--out", help="New SAE directory."),
    arch: str = _opt("arch"),
    d_sae: int | None = _opt("d_sae"),
    expansion: float | None = _opt("expansion", either=True),
    k: float = _opt("k"),
    topk_threshold_lr: float = _opt("topk_threshold_lr"),
    matryoshka_groups: str | None = _opt("matryoshka_groups"),
    matryoshka_aux: bool = _opt("matryoshka_aux"),
    l1: float = _opt("l1"),
    l0: float = _opt("l0"),
    l0_warmup_frac: float = _opt("l0_warmup_frac"),
    bandwidth: float = _opt("bandwidth"),
    init_threshold: float = _opt("init_threshold"),
    sparsity_loss: str = _opt("sparsity_loss"),
    pre_act_loss: float | None = _opt("pre_act_loss"),
    tied: bool = _opt("tied"),
    aux_k: int | None = _opt("aux_k"),
    dead_rows: int = _opt("dead_rows"),
    steps: int | None = _opt("steps"),
    epochs: float | None = _opt("epochs", either=True),
    batch_size: int = _opt("batch_size"),
    lr: float | None = _opt("lr"),
    seed: int = _opt("seed"),
    checkpoint_every: int = _opt("checkpoint_every"),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run from its last checkpoint."
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="torch CPU threads (default: torch's choice)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Train a TopK, BatchTopK, Matryoshka BatchTopK, JumpReLU or ReLU+L1 SAE; progress on
    stderr, checkpoints, resumable."""
    if d_sae is not None and expansion is not None:
        raise RlsaeError("give --d-sae or --expansion, not both")
    if steps is not None and epochs is not None:
        raise RlsaeError("give --steps or --epochs, not both")
    if threads is not None and threads < 1:
        raise RlsaeError("--threads must be at least 1")
    cfg = TrainConfig(
        arch=arch,  # type: ignore[arg-type]  # validate() refuses an unknown kind
        d_sae=d_sae,
        expansion=expansion if expansion is not None else field_default(TrainConfig, "expansion"),
        k=int(k) if float(k).is_integer() else k,  # fractional: BatchTopK's average
        topk_threshold_lr=topk_threshold_lr,
        matryoshka_groups=_int_list("--matryoshka-groups", matryoshka_groups),
        matryoshka_aux=matryoshka_aux,
        l1=l1,
        l0=l0,
        l0_warmup_frac=l0_warmup_frac,
        bandwidth=bandwidth,
        init_threshold=init_threshold,
        sparsity_loss=sparsity_loss,  # type: ignore[arg-type]  # validate() refuses others
        pre_act_loss=pre_act_loss,
        tied=tied,
        aux_k=aux_k,
        dead_rows=dead_rows,
        steps=steps,
        epochs=epochs if epochs is not None else field_default(TrainConfig, "epochs"),
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        checkpoint_every=checkpoint_every,
    )
    cfg.validate("sae train")  # before the store is opened or anything written
    _need_dir(acts, "activation store")  # before torch loads: a fast one-line error

    from rlsae.sae.store import ActivationStore
    from rlsae.sae.train import TRAINING, TrainingRecord, train_sae
    from rlsae.threads import torch_threads

    store = ActivationStore(acts)
    cfg.resolve(store.d_in, "sae train")  # k or groups vs the resolved d_sae: before any write
    with torch_threads(threads):
        train_sae(store, out, cfg, resume=resume)
    info = TrainingRecord.read(out / TRAINING).to_json()
    final = info["final"] or {}
    emit(
        {"out": str(out), "steps": info["steps"], "rows_seen": info["rows_seen"], **final}, as_json
    )


@sae_app.command("eval")
def sae_eval(
    sae_dir: Path = typer.Option(..., "--sae", help="SAE directory (rlsae or SAELens format)."),
    acts: Path | None = typer.Option(None, "--acts", help="Activation store to evaluate on."),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Instead of --acts: splice faithfulness on this language model (hub name or "
        "directory): CE loss unchanged, with the SAE spliced in at its hook and zero-ablated, "
        "CE loss recovered and KL.",
    ),
    prefixes: int = config_option(SpliceEvalConfig, "prefixes", "--prefixes"),
    prefix_tokens: int = config_option(SpliceEvalConfig, "prefix_tokens", "--prefix-tokens"),
    lm_data: str | None = config_option(SpliceEvalConfig, "data", "--data"),
    batch_size: int = typer.Option(4096, "--batch-size", help="Rows per batch."),
    max_rows: int | None = typer.Option(None, "--max-rows", help="Evaluate only the first N rows."),
    save_stats: bool = typer.Option(
        True,
        "--save-stats/--no-save-stats",
        help="Write feature_stats.safetensors into the SAE dir.",
    ),
    any_hook: bool = typer.Option(
        False, "--any-hook", help="Allow a store recorded at a different hook than the SAE's."
    ),
    ground_truth: Path | None = typer.Option(
        None,
        "--ground-truth",
        help="True feature directions, (n_features, d_in) as .npy/.pt, or the .safetensors "
        "acts synth writes (then also the correlation of matched latents with the true "
        "activations): adds MMCS both ways, fraction recovered at cosine >= 0.9, MCC.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Reconstruction (FVU, MSE, explained variance), L0, dead and dense latents over a store.

    With ``--json``: one ``rlsae.sae_metrics`` object (see ``rlsae.sae.metrics.SAEMetrics``),
    with ``--ground-truth`` an ``rlsae.ground_truth_metrics`` one under ``ground_truth``.
    With ``--model`` instead of ``--acts``: one ``rlsae.splice_eval`` object (see
    ``rlsae.llm.splice_eval.SpliceEval``)."""
    check_eval_args(batch_size, max_rows, where="sae eval")
    splice = _splice_config(prefixes, prefix_tokens, lm_data)
    if (acts is None) == (model is None):
        raise RlsaeError("give --acts STORE (reconstruction metrics) or --model M (splice), one")
    if model is not None:
        if ground_truth is not None:
            raise RlsaeError("--ground-truth goes with --acts, not --model")
        _sae_eval_splice(sae_dir, model, splice, as_json)
        return
    assert acts is not None  # one of the two, checked above
    if ground_truth is not None and not ground_truth.is_file():
        raise RlsaeError(f"ground truth {ground_truth} not found")
    _need_dir(sae_dir, "SAE directory")  # before torch loads: a fast one-line error
    _need_dir(acts, "activation store")

    from rlsae.sae.groundtruth import ground_truth_metrics, read_ground_truth
    from rlsae.sae.metrics import evaluate_sae
    from rlsae.sae.model import load_sae
    from rlsae.sae.store import ActivationStore

    sae = load_sae(sae_dir)
    store = ActivationStore(acts)
    truth = read_ground_truth(ground_truth) if ground_truth is not None else None
    if truth is not None and truth.directions.shape[1] != sae.cfg.d_in:
        raise RlsaeError(
            f"ground truth {ground_truth} has d_in={truth.directions.shape[1]}, "
            f"the SAE {sae.cfg.d_in}"
        )
    result = evaluate_sae(
        sae, store, batch_size=batch_size, max_rows=max_rows, check_hook=not any_hook, progress=True
    )
    if save_stats:
        result.metrics.feature_stats = str(result.stats.write(sae_dir))
    data = result.metrics.to_json()
    if truth is not None:
        data["ground_truth"] = ground_truth_metrics(sae, truth, store, batch_size).to_json()
    if not as_json:  # the readable summary: the figures only
        data = {k: v for k, v in data.items() if k not in ("format", "version")}
    emit(data, as_json)


def _splice_config(prefixes: int, prefix_tokens: int, data: str | None) -> SpliceEvalConfig:
    """The splice options as a validated config; a bad value is one line naming its option."""
    flags = {"prefixes": "--prefixes", "prefix_tokens": "--prefix-tokens", "data": "--data"}
    values = {"prefixes": prefixes, "prefix_tokens": prefix_tokens, "data": data}
    try:
        return from_mapping(SpliceEvalConfig, values, "sae eval")
    except RlsaeError as e:
        msg = str(e)
        for name, flag in flags.items():
            msg = msg.replace(f"sae eval: {name}: ", f"{flag}: ", 1)
        raise RlsaeError(msg) from None


def _sae_eval_splice(sae_dir: Path, model: str, cfg: SpliceEvalConfig, as_json: bool) -> None:
    """``sae eval --model``: the splice faithfulness figures of an SAE on a language model."""
    _need_dir(sae_dir, "SAE directory")
    from rlsae.llm.data import check_data_source
    from rlsae.llm.models import resolve_model_ref

    resolve_model_ref(model)  # a missing model directory: one line, before torch loads
    if cfg.data is not None:
        check_data_source(cfg.data)
    from rlsae.llm.splice_eval import splice_faithfulness

    result = splice_faithfulness(model, sae_dir, cfg)
    emit(result.to_json(), as_json, result.summary())


def _need_dir(path: Path, what: str) -> None:
    """A missing input directory is refused before torch is imported."""
    if not path.is_dir():
        raise RlsaeError(f"{what} {path} not found")
