"""The CLI reference page, generated from the commands themselves (never written by hand).

Walks the typer app every command module registers on (``rlsae.commands._apps.app``, after
importing ``rlsae.cli``) and renders each group, verb and option with its type, default and help
text as Markdown. Two ways in:

- an mkdocs hook (``hooks:`` in ``mkdocs.yml``): ``on_files`` adds the page as ``cli.md``, so
  ``mkdocs build`` and ``mkdocs serve`` always show the commands as they are;
- ``python docs/gen_cli.py [FILE]`` writes the same Markdown to FILE or stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

PAGE = "cli.md"

_INTRO = """\
# CLI reference

Every command of `rlsae`, generated from the commands themselves when the site is built
(`docs/gen_cli.py`), so it cannot drift from `rlsae GROUP VERB --help`.

Conventions: every verb that computes a result takes `--json` and then prints one JSON object on
stdout; progress goes to stderr; bad input exits with status 2 and a one-line `error: ...`
message, no traceback. Ctrl-C exits with status 130 and the line
`interrupted; re-run with --resume to continue`.
"""


def command_tree() -> Any:
    """The click command of the whole ``rlsae`` app, with every command module registered."""
    import typer.main

    import rlsae.cli  # noqa: F401  (importing it registers every command module's verbs)
    from rlsae.commands._apps import app

    return typer.main.get_command(app)


def iter_commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every visible (path, command) under ``group``, groups before their verbs, in CLI order."""
    found: list[tuple[tuple[str, ...], Any]] = []
    for name, cmd in group.commands.items():
        if getattr(cmd, "hidden", False):
            continue
        found.append(((*path, name), cmd))
        if hasattr(cmd, "commands"):
            found.extend(iter_commands(cmd, (*path, name)))
    return found


_ESCAPES = str.maketrans({c: "\\" + c for c in "\\*_|"} | {"<": "&lt;", ">": "&gt;"})


def _cell(text: str) -> str:
    """Plain text (a help string) made safe for one Markdown table cell: one line, no markup."""
    return " ".join(text.split()).translate(_ESCAPES)


def _default(param: Any) -> str:
    if param.required:
        return "**required**"
    default = param.default
    if callable(default):
        return ""
    if param.is_flag and param.secondary_opts:
        return f"`{param.opts[0] if default else param.secondary_opts[0]}`"
    if default is None or default is False or default == [] or default == ():
        return ""
    if default is True:
        return "on"
    return f"`{default}`"


def _range(param: Any) -> str:
    lo, hi = getattr(param, "min", None), getattr(param, "max", None)
    if lo is not None and hi is not None:
        return f" ({lo} to {hi})"
    if lo is not None:
        return f" (≥ {lo})"
    if hi is not None:
        return f" (≤ {hi})"
    return ""


def _option(param: Any, ctx: Any) -> str:
    names = " / ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    kind = "" if param.is_flag else f"`{param.display_type(ctx).strip('<>')}`"
    if param.multiple:
        kind += ", repeatable"
    help_text = _cell(param.help or "") + _range(param)
    return f"| {names} | {kind} | {_default(param)} | {help_text} |"


def _help(cmd: Any) -> str:
    """A command's help text, its line breaks kept, its characters shown as written."""
    lines = (cmd.help or "").strip().splitlines()
    return "\n".join(line.rstrip().translate(_ESCAPES) for line in lines)


def render() -> str:
    """The whole CLI reference page as Markdown."""
    import typer

    root = command_tree()
    ctx = typer.Context(root, info_name="rlsae")
    out = [_INTRO]
    out.append("| command | what it does |\n|---|---|")
    for path, cmd in iter_commands(root):
        anchor = "-".join(("rlsae", *path))
        summary = " ".join(_help(cmd).split("\n\n")[0].split())
        out.append(f"| [`rlsae {' '.join(path)}`](#{anchor}) | {summary} |")
    out.append("")
    for path, cmd in iter_commands(root):
        level = "##" if len(path) == 1 else "###"
        anchor = "-".join(("rlsae", *path))
        out.append(f"{level} `rlsae {' '.join(path)}` {{ #{anchor} }}\n")
        if _help(cmd):
            out.append(_help(cmd) + "\n")
        if hasattr(cmd, "commands"):
            verbs = [n for n, c in cmd.commands.items() if not getattr(c, "hidden", False)]
            out.append("Verbs: " + ", ".join(f"`{v}`" for v in verbs) + ".\n")
            continue
        params = [p for p in cmd.params if not getattr(p, "hidden", False)]
        args = [p for p in params if p.param_type_name == "argument"]
        opts = [p for p in params if p.param_type_name != "argument"]
        usage = " ".join(["rlsae", *path, *(f"{a.name.upper()}" for a in args), "[OPTIONS]"])
        out.append(f"```text\n{usage}\n```\n")
        for a in args:
            out.append(f"- `{a.name.upper()}`: {_cell(getattr(a, 'help', None) or '')}")
        if args:
            out.append("")
        if opts:
            out.append("| option | type | default | help |\n|---|---|---|---|")
            out.extend(_option(p, ctx) for p in opts)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: add the generated page to the site."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files


def main(argv: list[str]) -> None:
    text = render()
    if argv:
        Path(argv[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
