"""The ``rlsae`` command: parses, calls the library, prints. Thin on purpose."""

from __future__ import annotations

import importlib
import sys

from rlsae.commands._apps import app
from rlsae.errors import RlsaeError

# One module per command group; each registers its verbs on the shared sub-apps when imported.
_COMMAND_MODULES = ["acts", "sae", "dqn", "llm", "analyze", "viewer", "pipeline", "demo"]
for _name in _COMMAND_MODULES:
    importlib.import_module(f"rlsae.commands.{_name}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; user errors become one line on stderr and exit status 2."""
    try:
        app(args=argv, standalone_mode=True)
    except RlsaeError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write(_INTERRUPTED)
        sys.exit(130)
    except SystemExit as e:
        # Typer turns Ctrl-C inside a command into exit status 130 without a word.
        if e.code == 130:
            sys.stderr.write(_INTERRUPTED)
        raise


_INTERRUPTED = "interrupted; re-run with --resume to continue\n"


if __name__ == "__main__":
    main()
