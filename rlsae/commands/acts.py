"""``rlsae acts``: activation stores (import your own activations)."""

from __future__ import annotations

from pathlib import Path

import typer

from rlsae.commands._apps import JsonOpt, acts_app, emit
from rlsae.errors import RlsaeError


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
