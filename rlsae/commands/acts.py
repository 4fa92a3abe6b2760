"""``rlsae acts``: activation stores (import your own activations, or synthesise toy ones with
planted features)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rlsae.commands._apps import JsonOpt, acts_app, config_option, emit, plain_help
from rlsae.configs import field_docs
from rlsae.errors import RlsaeError
from rlsae.sae.synth import SynthConfig


@acts_app.command("import")
def acts_import(
    src: Path = typer.Option(
        ..., "--from", help="(N, d) matrix: .npy, .pt (a tensor) or .safetensors."
    ),
    out: Path = typer.Option(..., "--out", help="New activation-store directory."),
    dtype: str = typer.Option("float32", "--dtype", help="Storage dtype: float32 or float16."),
    hook: str = typer.Option(
        "", "--hook", help="Where the activations were taken (recorded in meta.json)."
    ),
    source: str = typer.Option(
        "", "--source", help="Which model produced them (default: file name)."
    ),
    shard_rows: int = typer.Option(65536, "--shard-rows", help="Rows per shard file."),
    as_json: bool = JsonOpt,
) -> None:
    """Import your own activations into an activation store."""
    # the cheap checks first, before torch is imported (a refused command answers at once)
    if dtype not in ("float32", "float16"):
        raise RlsaeError(f"--dtype must be float32 or float16, not {dtype!r}")
    if shard_rows < 1:
        raise RlsaeError(f"--shard-rows must be a positive integer, got {shard_rows}")
    if not src.is_file():
        raise RlsaeError(f"{src} not found")
    if out.exists():
        raise RlsaeError(f"{out} already exists; choose another --out or remove it")

    from rlsae.sae.store import ActivationStore, import_activations

    path = import_activations(
        src, out, dtype=dtype, hook=hook, source=source or src.stem, shard_rows=shard_rows
    )
    st = ActivationStore(path)
    emit(
        {
            "out": str(path),
            "rows": st.rows,
            "d_in": st.d_in,
            "dtype": st.dtype,
            "shards": st.n_shards,
        },
        as_json,
    )


def _synth_opt(name: str, flag: str) -> Any:
    """A typer option for SynthConfig field ``name``: its default and docstring."""
    return config_option(SynthConfig, name, flag, help=plain_help(field_docs(SynthConfig)[name]))


SYNTH_OPTIONS = {
    "rows": "--rows",
    "d_in": "--d-in",
    "n_features": "--n-features",
    "mean_active": "--mean-active",
    "firing": "--firing",
    "zipf_exponent": "--zipf-exponent",
    "parents": "--parents",
    "children": "--children",
    "child_prob": "--child-prob",
    "correlated_groups": "--correlated-groups",
    "group_size": "--group-size",
    "correlation": "--correlation",
    "seed": "--seed",
}
"""``acts synth`` option of each SynthConfig field."""


@acts_app.command("synth")
def acts_synth(
    out: Path = typer.Option(..., "--out", help="New activation-store directory."),
    rows: int = _synth_opt("rows", "--rows"),
    d_in: int = _synth_opt("d_in", "--d-in"),
    n_features: int = _synth_opt("n_features", "--n-features"),
    mean_active: float = _synth_opt("mean_active", "--mean-active"),
    firing: str = _synth_opt("firing", "--firing"),
    zipf_exponent: float = _synth_opt("zipf_exponent", "--zipf-exponent"),
    parents: int = _synth_opt("parents", "--parents"),
    children: int = _synth_opt("children", "--children"),
    child_prob: float = _synth_opt("child_prob", "--child-prob"),
    correlated_groups: int = _synth_opt("correlated_groups", "--correlated-groups"),
    group_size: int = _synth_opt("group_size", "--group-size"),
    correlation: float = _synth_opt("correlation", "--correlation"),
    seed: int = _synth_opt("seed", "--seed"),
    as_json: bool = JsonOpt,
) -> None:
    """Toy activations with planted features (superposition, Zipf or Poisson firing, optional
    parent/child hierarchy and correlated groups) and their ground truth (OUT/ground_truth.safetensors), for
    ``sae eval --ground-truth``."""
    cfg = SynthConfig(
        rows=rows,
        d_in=d_in,
        n_features=n_features,
        mean_active=mean_active,
        firing=firing,  # type: ignore[arg-type]  # validate() refuses others
        zipf_exponent=zipf_exponent,
        parents=parents,
        children=children,
        child_prob=child_prob,
        correlated_groups=correlated_groups,
        group_size=group_size,
        correlation=correlation,
        seed=seed,
    )
    cfg.validate("acts synth")
    if out.exists():
        raise RlsaeError(f"{out} already exists; choose another --out or remove it")

    from rlsae.sae.synth import synthesize

    truth = synthesize(cfg, out)
    emit({"out": str(out), "ground_truth": str(truth), "rows": rows, "d_in": d_in}, as_json)
