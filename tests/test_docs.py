"""The README and the docs site stay true to the code: install commands, pages, paths, names and
every ``rlsae`` command line they show; the generated CLI reference covers every command."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", *DOCS.glob("*.md")])

INSTALL = "pip install torch==2.13.0 && pip install -e . && rlsae demo"
TESTS = (
    'apt-get install -y chromium chromium-driver && pip install torch==2.13.0 && pip install -e ".[dev,ray]"'
    " && python3 -m pytest --slow -q"
)


def _gen_pages() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rlsae_docs_gen_pages", DOCS / "gen_pages.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


GEN = _gen_pages()


@pytest.fixture(scope="module")
def commands() -> dict[tuple[str, ...], Any]:
    return dict(GEN.iter_commands(GEN.command_tree()))


def test_readme_has_the_two_commands_and_stays_short() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert INSTALL in lines
    assert TESTS in lines
    assert len(lines) <= 250


def test_ci_installs_like_the_readme_and_runs_its_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -q torch==2.13.0" in ci
    assert 'pip install -q -e ".[dev,ray]"' in ci
    lines = ci.rstrip().splitlines()
    assert lines[-1] == "python3 -m pytest --slow -q"
    checks = [line for line in lines if line.startswith("check ")]
    for tool in ("ruff check .", "ruff format --check .", "lint-imports", "mypy", "mkdocs build"):
        assert any(tool in line for line in checks), tool
    assert any("--strict" in line for line in checks if "mkdocs" in line)


def _nav_pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    raise AssertionError(f"unexpected nav entry {nav!r}")


def test_every_nav_page_exists_and_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = _nav_pages(config["nav"])
    generated = set(GEN.PAGES)
    assert generated <= set(nav)
    for page in nav:
        assert page in generated or (DOCS / page).is_file(), page
    assert {p.name for p in DOCS.glob("*.md")} == set(nav) - generated


_LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    generated = {DOCS / page for page in GEN.PAGES}
    missing = [
        target
        for target, _anchor in _LINK.findall(page.read_text(encoding="utf-8"))
        if "://" not in target
        and not (page.parent / target).exists()
        and (page.parent / target).resolve() not in generated
    ]
    assert not missing, f"{page.name}: {missing}"


_PATH = re.compile(
    r"`((?:rlsae|tests|benchmarks|docs|\.ci)/[\w./-]*)`|python3? (benchmarks/\S+\.py)"
)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_paths_named_in_the_docs_exist(page: Path) -> None:
    named = {(q or s).rstrip("/.") for q, s in _PATH.findall(page.read_text(encoding="utf-8"))}
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"{page.name}: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_code_included_in_a_page_exists(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    shown = GEN.include_code(text)  # raises for a file or name that is not there
    assert not GEN._INCLUDE.search(shown)
    assert shown.count("```") == text.count("```") + 2 * len(GEN._INCLUDE.findall(text))


def _top_level_names(module_file: Path) -> set[str]:
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            if isinstance(node.value, ast.Dict):  # a lazy export table: {"name": "module"}
                names.update(
                    k.value
                    for k in node.value.keys
                    if isinstance(k, ast.Constant) and isinstance(k.value, str)
                )
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _resolves(dotted: str) -> bool:
    """``rlsae.a.b[.name]``: the longest module prefix exists and defines the next name."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        module = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if module.is_file():
            rest = parts[i:]
            return not rest or rest[0] in _top_level_names(module)
    return False


_DOTTED = re.compile(r"(?<![\w/.\"])rlsae(?:\.\w+)+")  # not in a "string": formats are names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_names_in_the_docs_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    formats = {r.format for r in GEN.collect()}
    named = set(_DOTTED.findall(text)) - formats
    missing = sorted(d for d in named if not _resolves(d))
    assert not missing, f"{page.name}: {missing}"


def _command_lines(text: str) -> list[list[str]]:
    """The ``rlsae ...`` invocations in the shell blocks of a page, as tokens after ``rlsae``."""
    found = []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            for start in (i for i, t in enumerate(tokens) if t == "rlsae"):
                args = []
                for token in tokens[start + 1 :]:
                    if token in {"&&", "||", "|", ";", ">", ">>"}:
                        break
                    args.append(token)
                found.append(args)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_command_lines_in_the_docs_name_real_commands_and_options(
    page: Path, commands: dict[tuple[str, ...], Any]
) -> None:
    lines = _command_lines(page.read_text(encoding="utf-8"))
    for args in lines:
        path: tuple[str, ...] = ()
        while args and (*path, args[0]) in commands:
            path, args = (*path, args[0]), args[1:]
        assert path and not hasattr(commands[path], "commands"), f"{page.name}: rlsae {args}"
        known = {"--help"}
        for param in commands[path].params:
            known.update(param.opts, param.secondary_opts)
        for token in args:
            if token.startswith("--"):
                assert token.split("=")[0] in known, f"{page.name}: rlsae {' '.join(path)} {token}"


def test_cli_reference_covers_every_command_and_option(
    commands: dict[tuple[str, ...], Any],
) -> None:
    page = GEN.render_cli()
    sections = re.split(r"\n(?=#{2,3} `rlsae )", page)
    by_command = {re.match(r"#+ `rlsae ([^`]+)`", s).group(1): s for s in sections[1:]}  # type: ignore[union-attr]
    assert set(by_command) == {" ".join(p) for p in commands}
    assert {"sae train", "dqn train", "llm rlhf", "pipeline atari", "viewer export"} <= set(
        by_command
    )
    for path, cmd in commands.items():
        section = by_command[" ".join(path)]
        if hasattr(cmd, "commands"):
            for verb in cmd.commands:
                assert f"`{verb}`" in section
            continue
        rows = [r for r in section.splitlines() if r.startswith("| `-")]
        visible = [p for p in cmd.params if not p.hidden]
        assert len(rows) == len(visible), path
        for param, row in zip(visible, rows, strict=True):
            assert all(f"`{o}`" in row for o in [*param.opts, *param.secondary_opts]), row
            assert ("**required**" in row) == bool(param.required), row


_FORMAT = re.compile(r'^    FORMAT: ClassVar\[str\] = "([^"]+)"', flags=re.M)


def test_artifact_schemas_list_every_format_with_the_dataclass_fields() -> None:
    from rlsae.artifacts import Artifact

    records = GEN.collect()
    formats = [r.format for r in records]
    declared = [
        fmt for path in (ROOT / "rlsae").rglob("*.py") for fmt in _FORMAT.findall(path.read_text())
    ]
    assert sorted(formats) == sorted(declared)
    assert len(set(formats)) == len(formats), "two artifact classes share a format"
    page = GEN.render_artifacts(records)
    for rec in records:
        cls = getattr(importlib.import_module(rec.module), rec.name)
        assert issubclass(cls, Artifact), rec.name
        assert (cls.FORMAT, cls.VERSION) == (rec.format, rec.version)
        assert [f.name for f in rec.fields] == [f.name for f in dataclasses.fields(cls)], rec.name
        assert f"## `{rec.format}`" in page


def test_the_add_a_stage_example_in_architecture_md_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from rlsae.study.atari import ATARI
    from rlsae.study.results import LiveFeatures

    section = (DOCS / "architecture.md").read_text(encoding="utf-8").split("## How to add a stage")
    code = re.search(r"```python\n(.*?)```", section[1], flags=re.S)
    assert code is not None
    example = ModuleType("architecture_example")
    monkeypatch.setitem(sys.modules, example.__name__, example)  # as an imported module is
    exec(compile(code.group(1), "docs/architecture.md", "exec", dont_inherit=True), vars(example))
    study = example.STUDY
    assert [s.name for s in study.stages] == [*(s.name for s in ATARI.stages), "live_fraction"]
    stage = study.stage("live_fraction")
    assert (stage.after, stage.per) == (("live",), "agent")

    live = LiveFeatures(
        live=3,
        dead=1,
        d_sae=4,
        live_threshold=1,
        rows=10,
        firing_counts_q10_q50_q90=[0.0, 1.0, 2.0],
        source_of_counts="evaluate_sae",
    )

    class Ctx:
        def result(self, cls: type, name: str, unit: str | None = None) -> Any:
            assert (cls, name, unit) == (LiveFeatures, "live", "agent0")
            return live

    result = stage.run(Ctx(), SimpleNamespace(name="agent0"))
    assert result.fraction == 0.75
    assert stage.result.from_json(result.to_json()).fraction == 0.75


_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


@pytest.mark.parametrize(
    "page", [p for p in PAGES if p.name != "development.md"], ids=lambda p: p.name
)
def test_every_option_the_docs_name_exists(
    page: Path, commands: dict[tuple[str, ...], Any]
) -> None:
    """Options named in prose too (`--any-hook`): an rlsae option, a benchmark script's, or
    pytest's ``--slow``."""
    known = {"--help", "--slow"}
    for cmd in commands.values():
        for param in getattr(cmd, "params", []):
            known.update(param.opts, param.secondary_opts)
    for script in (ROOT / "benchmarks").glob("*.py"):
        known.update(re.findall(r'"(--[a-z][a-z0-9-]*)"', script.read_text(encoding="utf-8")))
    unknown = sorted(set(_OPTION.findall(page.read_text(encoding="utf-8"))) - known)
    assert not unknown, f"{page.name}: {unknown}"
