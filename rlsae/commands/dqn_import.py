"""``rlsae dqn import``: an agent trained elsewhere (the poster's pickled modules, state dicts,
safetensors, SB3 zips) becomes an ordinary agent directory. The importer is
:mod:`rlsae.agents.importer`; the arch is checked before torch loads."""

from __future__ import annotations

from pathlib import Path

import typer

from rlsae.agents.config import ARCHS, check_choice
from rlsae.commands._apps import JsonOpt, dqn_app, emit
from rlsae.errors import RlsaeError


@dqn_app.command("import")
def dqn_import(
    src: Path = typer.Option(
        ..., "--from", help="File to import: torch.save(module), state dict .pt, .safetensors."
    ),
    out: Path = typer.Option(..., "--out", help="Agent directory to create (must not exist)."),
    arch: str = typer.Option(
        "poster", "--arch", help="Network of the file: poster (RGB CNN) or nature (NatureCNN)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Import a DQN trained elsewhere; no code in the file runs (agent.json records its
    name, sha256, format and the conversion applied)."""
    check_choice("dqn import", "arch", arch, ARCHS)
    if not src.is_file():
        raise RlsaeError(f"{src} not found")
    if out.exists():
        raise RlsaeError(f"{out} already exists; choose another --out or remove it")

    from rlsae.agents.importer import import_agent
    from rlsae.agents.results import AgentInfo

    path = import_agent(src, out, arch=arch)
    info = AgentInfo.read(path / "agent.json")
    assert info.source is not None
    emit(
        {
            "agent": str(path),
            "arch": info.arch,
            "env_id": info.env_id,
            "source": info.to_json()["source"],
        },
        as_json,
    )
