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
        ...,
        "--from",
        help="File to import (torch.save(module), state dict .pt, .safetensors, SB3 zip), or a "
        "folder of them (each into OUT/<name>).",
    ),
    out: Path = typer.Option(..., "--out", help="Agent directory to create (must not exist)."),
    arch: str | None = typer.Option(
        None,
        "--arch",
        help="Network of the file: poster (RGB CNN) or nature (NatureCNN); default: read from "
        "the parameter names.",
    ),
    game: str = typer.Option(
        "ms_pacman", "--game", help="ALE game it was trained on (its action set must fit)."
    ),
    env_id: str | None = typer.Option(
        None,
        "--env-id",
        help="Environment it was trained in: ALE/<Game>-v5 (sticky actions 0.25) or "
        "<Game>NoFrameskip-v4 (none); default: v5 for torch files, v4 (rl-zoo3) for SB3 zips.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Import a DQN trained elsewhere; no code in the file runs (agent.json records its
    name, sha256, format, the conversion applied and the environment it plays in).

    SB3 zips: only their weights-only policy.pth and the plain JSON of their data are read."""
    if arch is not None:
        check_choice("dqn import", "arch", arch, ARCHS)
    if not src.exists():
        raise RlsaeError(f"{src} not found")
    if out.exists():
        raise RlsaeError(f"{out} already exists; choose another --out or remove it")

    from rlsae.agents.importer import import_agent
    from rlsae.agents.results import AgentInfo

    if src.is_dir():
        from rlsae.agents.importer import import_folder

        paths = import_folder(src, out, arch=arch, game=game, env_id=env_id)
        emit({"out": str(out), "agents": [p.name for p in paths]}, as_json)
        return
    path = import_agent(src, out, arch=arch, game=game, env_id=env_id)
    info = AgentInfo.read(path / "agent.json")
    assert info.source is not None
    emit(
        {
            "agent": str(path),
            "arch": info.arch,
            "env_id": info.env_id,
            "sticky_actions": info.env.repeat_action_probability,
            "source": info.to_json()["source"],
        },
        as_json,
    )
