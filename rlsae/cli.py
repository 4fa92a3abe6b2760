"""The ``rlsae`` command: parses, calls the library, prints. Thin on purpose.

Every way a command can fail that the user can fix ends in one line on stderr and exit status 2:
``error: <what is wrong>`` for an :class:`RlsaeError` from the library, and
``error: <what is wrong>; see rlsae GROUP VERB --help`` for a usage mistake (a missing or
unknown option, a value of the wrong type), instead of the argument parser's boxed panel.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from rlsae.commands._apps import app
from rlsae.errors import RlsaeError

try:  # typer >= 0.2x parses with its own copy of click; older ones use click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors  # type: ignore[no-redef]

# One module per command group; each registers its verbs on the shared sub-apps when imported.
_COMMAND_MODULES = [
    "acts",
    "sae",
    "dqn",
    "dqn_import",
    "dqn_survey",
    "dqn_sweep",
    "llm",
    "analyze",
    "viewer",
    "pipeline",
    "demo",
    "diff",
]
for _name in _COMMAND_MODULES:
    importlib.import_module(f"rlsae.commands.{_name}")

_INTERRUPTED = "interrupted; re-run with --resume to continue\n"


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; user errors become one line on stderr and exit status 2."""
    try:
        code = app(args=argv, prog_name="rlsae", standalone_mode=False)
    except click_errors.NoArgsIsHelpError:  # `rlsae` or `rlsae GROUP` alone: help was printed
        sys.exit(0)
    except click_errors.UsageError as e:
        sys.stderr.write(f"error: {usage_line(e)}\n")
        sys.exit(2)
    except (
        click_errors.ClickException
    ) as e:  # pragma: no cover - click's other errors (file options)
        sys.stderr.write(f"error: {_sentence(e.format_message())}\n")
        sys.exit(2)
    except RlsaeError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        sys.stderr.write(_INTERRUPTED)
        sys.exit(130)
    except BrokenPipeError:  # `rlsae ... | head` closed the pipe: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    if code == 130:  # typer turns Ctrl-C inside a command into exit status 130 without a word
        sys.stderr.write(_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


def usage_line(e: click_errors.UsageError) -> str:
    """``missing option '--from'; see rlsae acts import --help``: one line for a usage error."""
    path = e.ctx.command_path if e.ctx is not None else "rlsae"
    return f"{_sentence(e.format_message())}; see {path} --help"


def _sentence(message: str) -> str:
    text = " ".join(message.split()).rstrip(".")
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


if __name__ == "__main__":
    main()
