"""The parts of the docs site generated from the code, never written by hand.

- ``cli.md``, the CLI reference: walks the typer app every command module registers on
  (``rlsae.commands._apps.app``, after importing ``rlsae.cli``) and renders each group, verb and
  option with its type, default and help text.
- ``artifacts.md``, the artifact schemas: reads every dataclass deriving from
  ``rlsae.artifacts.Artifact`` (a ``FORMAT`` and a ``VERSION``, a docstring below each field) from
  the source with ``ast`` and renders, per format, its class, version, description and fields,
  with the records nested in it.
- code shown in hand-written pages: a line ``<!-- include-code: PATH NAME -->`` becomes the
  source of the top-level statement of PATH that defines NAME (the studies' declarations in
  ``architecture.md``).

As an mkdocs hook (``hooks:`` in ``mkdocs.yml``), ``on_files`` adds the two pages and
``on_page_markdown`` inserts the included code, so ``mkdocs build`` and ``mkdocs serve`` always
show the code as it is. ``python docs/gen_pages.py PAGE [FILE]`` writes one page to FILE or
stdout.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Markdown helpers ------------------------------------------------------------------------------

_ESCAPES = str.maketrans({c: "\\" + c for c in "\\*_|"} | {"<": "&lt;", ">": "&gt;"})


def _prose(text: str) -> str:
    """Docstring text as Markdown: reST ``code`` becomes `code`; outside code, characters that
    Markdown would read as markup are escaped."""
    text = re.sub(r"``(.+?)``", r"`\1`", text)
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else p.translate(_ESCAPES) for p in parts)


def _cell(text: str) -> str:
    """Text for one Markdown table cell: one line, markup characters outside code escaped."""
    return _prose(" ".join(text.split()))


def _doc(text: str) -> str:
    return "\n".join(_prose(line.rstrip()) for line in text.splitlines())


# The CLI reference ----------------------------------------------------------------------------

_CLI_INTRO = """\
# CLI reference

Every command of `rlsae`, generated from the commands themselves when the site is built
(`docs/gen_pages.py`), so it cannot drift from `rlsae GROUP VERB --help`.

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


def _option_default(param: Any) -> str:
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
    help_text = _cell(_unrich(param.help or "")) + _range(param)
    return f"| {names} | {kind} | {_option_default(param)} | {help_text} |"


def _help(cmd: Any) -> str:
    """A command's help text as Markdown, its line breaks kept."""
    return _doc(_unrich((cmd.help or "").strip()))


def _unrich(text: str) -> str:
    """A help text as the terminal shows it: rich's markup escape ``\\[`` is a plain ``[``."""
    return text.replace("\\[", "[")


def render_cli() -> str:
    """The CLI reference page as Markdown."""
    import typer

    root = command_tree()
    ctx = typer.Context(root, info_name="rlsae")
    out = [_CLI_INTRO]
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


# The artifact schemas -------------------------------------------------------------------------

_ARTIFACTS_INTRO = """\
# Artifact schemas

Every result a stage writes, and every reader (the viewer, the reports, the CLI) reads, is one
of the dataclasses below: a subclass of `rlsae.artifacts.Artifact`, written with `x.write(path)`
and read with `X.read(path)` (see [Architecture](architecture.md#typed-artifacts)). Each file is
strict JSON whose first two keys are `format` and `version`; a reader given a file of another
format or version refuses it in one line. A float that can be non-finite is typed `float | None`
(JSON has no NaN).

This page is generated from the code when the site is built (`docs/gen_pages.py`): the
fields, their types and their descriptions are the dataclasses' own.
"""


@dataclass
class Field:
    name: str
    annotation: str
    default: str | None
    doc: str


@dataclass
class Record:
    name: str
    module: str
    doc: str
    fields: list[Field]
    bases: list[str]
    format: str | None = None
    version: int | None = None
    nested: list[Record] = field(default_factory=list)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_classvar(annotation: ast.expr) -> bool:
    return "ClassVar" in ast.unparse(annotation)


def _record(node: ast.ClassDef, module: str) -> Record:
    rec = Record(
        name=node.name,
        module=module,
        doc=(ast.get_docstring(node) or "").strip(),
        fields=[],
        bases=[ast.unparse(b) for b in node.bases],
    )
    body = node.body
    for i, stmt in enumerate(body):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        name = stmt.target.id
        if _is_classvar(stmt.annotation):
            value = stmt.value
            if name == "FORMAT" and isinstance(value, ast.Constant):
                rec.format = str(value.value)
            elif name == "VERSION" and isinstance(value, ast.Constant):
                rec.version = value.value if isinstance(value.value, int) else None
            continue
        if name.startswith("_"):
            continue
        nxt = body[i + 1] if i + 1 < len(body) else None
        doc = ""
        if (
            isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            doc = nxt.value.value
        default = _default(stmt.value)
        rec.fields.append(Field(name, ast.unparse(stmt.annotation), default, doc))
    return rec


def _default(value: ast.expr | None) -> str | None:
    """A field's default as written, ``field(default_factory=list)`` shown as ``[]``."""
    if value is None:
        return None
    if isinstance(value, ast.Call) and ast.unparse(value.func) in ("field", "dataclasses.field"):
        for kw in value.keywords:
            if kw.arg == "default":
                return ast.unparse(kw.value)
            if kw.arg == "default_factory":
                factory = ast.unparse(kw.value)
                return {"list": "[]", "dict": "{}", "tuple": "()"}.get(factory, f"{factory}()")
    return ast.unparse(value)


def _is_dataclass(node: ast.ClassDef) -> bool:
    return any("dataclass" in ast.unparse(d) for d in node.decorator_list)


def _imports(tree: ast.Module, module: str) -> dict[str, tuple[str, str]]:
    """``{local name: (module, name)}`` for the ``from X import Y`` lines of a module."""
    found: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                found[alias.asname or alias.name] = (node.module, alias.name)
    return found


def collect(package: Path | None = None) -> list[Record]:
    """Every artifact class (a dataclass with a non-empty ``FORMAT``), nested records attached.

    Fields inherited from a dataclass base come first, as in ``dataclasses.fields``. A record is
    nested in an artifact when its class name appears in the type of one of the
    artifact's fields (or of a record nested in it), resolved in the field's own module: a
    dataclass defined there or imported there with ``from MODULE import NAME``.
    """
    package = package or ROOT / "rlsae"
    records: dict[tuple[str, str], Record] = {}
    imports: dict[str, dict[str, tuple[str, str]]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = _module_name(path)
        imports[module] = _imports(tree, module)
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and _is_dataclass(node):
                records[(module, node.name)] = _record(node, module)

    def resolve(word: str, module: str) -> Record | None:
        return records.get((module, word)) or records.get(imports[module].get(word, ("", "")))

    def inherited(rec: Record) -> list[Field]:
        bases = [resolve(b.split(".")[-1], rec.module) for b in rec.bases]
        return [f for base in bases if base is not None for f in inherited(base)] + rec.fields

    every_fields = {key: inherited(rec) for key, rec in records.items()}
    for key, rec in records.items():
        rec.fields = every_fields[key]
    artifacts = [rec for rec in records.values() if rec.format]
    for rec in artifacts:
        todo = [rec]
        while todo:
            holder = todo.pop()
            for f in holder.fields:
                for word in re.findall(r"\w+", f.annotation):
                    sub = resolve(word, holder.module)
                    if sub is not None and sub is not rec and sub not in rec.nested:
                        rec.nested.append(sub)
                        todo.append(sub)
    return sorted(artifacts, key=lambda r: (r.format or "", r.module))


def _fields_table(rec: Record) -> list[str]:
    if not rec.fields:
        return ["(no fields of its own)", ""]
    out = ["| field | type | default | description |", "|---|---|---|---|"]
    for f in rec.fields:
        default = "" if f.default is None else f"`{_cell_code(f.default)}`"
        out.append(f"| `{f.name}` | `{_cell_code(f.annotation)}` | {default} | {_cell(f.doc)} |")
    return [*out, ""]


def _cell_code(text: str) -> str:
    """Text inside a code span in a table cell: one line (the table reads pipes in code as text)."""
    return " ".join(text.split())


def render_artifacts(records: list[Record] | None = None) -> str:
    """The artifact schema page as Markdown."""
    records = collect() if records is None else records
    out = [_ARTIFACTS_INTRO, "| format | version | class | what it holds |", "|---|---|---|---|"]
    for rec in records:
        anchor = _anchor(rec)
        summary = _cell(rec.doc.split("\n\n")[0])
        out.append(
            f"| [`{rec.format}`](#{anchor}) | {rec.version} | `{rec.module}.{rec.name}` | "
            f"{summary} |"
        )
    out.append("")
    for rec in records:
        out.append(f"## `{rec.format}` {{ #{_anchor(rec)} }}\n")
        out.append(f"`{rec.module}.{rec.name}`, version {rec.version}.\n")
        if rec.doc:
            out.append(_doc(rec.doc) + "\n")
        out.extend(_fields_table(rec))
        for sub in rec.nested:
            out.append(f"**`{sub.name}`** (nested in `{rec.format}`)\n")
            if sub.doc:
                out.append(_doc(sub.doc) + "\n")
            out.extend(_fields_table(sub))
    return "\n".join(out).rstrip() + "\n"


def _anchor(rec: Record) -> str:
    return "artifact-" + re.sub(r"[^a-z0-9]+", "-", f"{rec.format}-{rec.name}".lower()).strip("-")


# Code included in hand-written pages -------------------------------------------------------------

_INCLUDE = re.compile(r"^<!-- include-code: (\S+) (\w+) -->$", flags=re.M)


def include_code(markdown: str) -> str:
    """Replace each ``<!-- include-code: PATH NAME -->`` line with a code block of the top-level
    statement of PATH that defines NAME, as it stands in the source (so a page that shows a
    declaration cannot drift from it). A missing file or name is an error."""

    def block(m: re.Match[str]) -> str:
        path, name = m.group(1), m.group(2)
        source = (ROOT / path).read_text(encoding="utf-8")
        for node in ast.parse(source).body:
            if name in _defined_names(node):
                return f"```python\n{ast.get_source_segment(source, node)}\n```"
        raise ValueError(f"{path} has no top-level {name} (included in a docs page)")

    return _INCLUDE.sub(block, markdown)


def _defined_names(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


# The hook and the script ----------------------------------------------------------------------

PAGES = {"cli.md": render_cli, "artifacts.md": render_artifacts}


def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: add the generated pages to the site."""
    from mkdocs.structure.files import File

    for page, render in PAGES.items():
        files.append(File.generated(config, page, content=render()))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs hook: insert the included code into a page's Markdown."""
    return include_code(markdown)


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in PAGES:
        sys.exit(f"usage: python docs/gen_pages.py {{{','.join(PAGES)}}} [FILE]")
    text = PAGES[argv[0]]()
    if len(argv) > 1:
        Path(argv[1]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
