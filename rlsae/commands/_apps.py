"""The typer apps every command module registers on, and the output helpers they share."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from rlsae.configs import field_default, field_docs
from rlsae.fsutil import dumps_json, json_default

_opts: dict[str, Any] = {"no_args_is_help": True, "pretty_exceptions_enable": False}

app = typer.Typer(help="rlsae: sparse autoencoders for models trained with reward.", **_opts)
acts_app = typer.Typer(help="Activation stores: import your own activations.", **_opts)
sae_app = typer.Typer(help="Train and evaluate sparse autoencoders.", **_opts)
dqn_app = typer.Typer(help="Ms. Pac-Man DQN agents: train, evaluate, record, splice.", **_opts)
llm_app = typer.Typer(help="Language models: tiny Pythia, RLHF, scoring, recording.", **_opts)
analyze_app = typer.Typer(help="Analyses: fits across agents, MMCS, dead features.", **_opts)
viewer_app = typer.Typer(help="The static feature viewer.", **_opts)
pipeline_app = typer.Typer(help="Whole studies at smoke, demo or paper scale.", **_opts)

app.add_typer(acts_app, name="acts")
app.add_typer(sae_app, name="sae")
app.add_typer(dqn_app, name="dqn")
app.add_typer(llm_app, name="llm")
app.add_typer(analyze_app, name="analyze")
app.add_typer(viewer_app, name="viewer")
app.add_typer(pipeline_app, name="pipeline")

JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout.")


def emit(result: dict[str, Any], as_json: bool, human: str | None = None) -> None:
    """Print a command's result: one strict-JSON object with ``--json`` (non-finite numbers as
    ``null``, see :func:`rlsae.fsutil.dumps_json`), else a readable summary."""
    if as_json:
        try:
            text = dumps_json(result)
        except TypeError:  # an odd object in a result: its str(), as before
            text = dumps_json(json.loads(json.dumps(result, default=_default)))
        sys.stdout.write(text + "\n")
        return
    if human is not None:
        sys.stdout.write(human.rstrip("\n") + "\n")
        return
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, list | dict):
            value = json.dumps(value, default=_default)
        sys.stdout.write(f"{key}: {value}\n")


def _default(o: Any) -> Any:
    try:
        return json_default(o)
    except TypeError:
        return str(o)


def config_option(cls: type, name: str, flag: str, default: Any = ..., help: str = "") -> Any:
    """A typer option whose default and help come from field ``name`` of config dataclass ``cls``
    (``default``/``help`` override them): the one way a command derives an option from a config."""
    value = field_default(cls, name) if default is ... else default
    return typer.Option(value, flag, help=help or field_docs(cls)[name])


def plain_help(text: str) -> str:
    """A field docstring as plain ``--help`` text: no reST backticks, ``[`` escaped from rich."""
    return text.replace("``", "").replace("[", "\\[")
