"""Fixtures of the viewer tests: the fixture runs and their sites (builders in
``viewer_fixtures.py``), headless Chromium (``viewer_browser.py``), and the one reader of the
site's JSONP data files (:func:`read_jsonp`, as the ``viewer_data`` fixture)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HERE = Path(__file__).parent


def _helper(name: str) -> ModuleType:
    """A helper module of this folder, loaded by path (tests import nothing through sys.path)."""
    spec = importlib.util.spec_from_file_location(f"rlsae_viewer_tests_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fixtures = _helper("viewer_fixtures")
browser_helpers = _helper("viewer_browser")


def read_jsonp(path: Path) -> Any:
    """The data of a site file ``RLSAE.put("key", {...});``: strict JSON between the key and the
    closing parenthesis, all ASCII (the exporter escapes every other character)."""
    text = Path(path).read_bytes().decode("ascii")
    assert text.startswith("RLSAE.put(") and text.endswith(");\n"), path
    key_end = text.index(",")
    json.loads(text[len("RLSAE.put(") : key_end])  # the key is a JSON string
    return json.loads(text[key_end + 1 : text.rstrip().rindex(")")], parse_constant=_no_nan)


def _no_nan(name: str) -> None:
    raise AssertionError(f"non-standard JSON constant {name} in viewer data")


def sources() -> list[Any]:
    """The viewer sources the CLI passes (agents and language models)."""
    from rlsae.commands.viewer import viewer_sources

    return viewer_sources()


@pytest.fixture
def viewer_data() -> Callable[[Path], Any]:
    """The JSONP reader: ``viewer_data(site / "data" / "index.js")``."""
    return read_jsonp


@pytest.fixture
def browser() -> Callable[[], Any]:
    """``with browser() as w:`` a headless Chromium page with its console errors, dialogs and
    requests recorded (``w.page``, ``w.errors``, ``w.poll(js)``, ...)."""
    return browser_helpers.browser_page


@pytest.fixture
def markup() -> str:
    """The token of the LM fixture whose text is HTML markup."""
    return str(fixtures.MARKUP)


@pytest.fixture
def dead_feature() -> int:
    """The feature of the LM fixture's base SAE that can never fire."""
    return int(fixtures.DEAD)


@pytest.fixture(scope="session")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fixtures.build_lm_run(tmp_path_factory.mktemp("viewer"))


@pytest.fixture(scope="session")
def lm_site(lm_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rlsae.viewer.export import export_site

    out = tmp_path_factory.mktemp("site") / "viewer"
    return export_site(lm_run, out, top=5, sources=sources())


@pytest.fixture(scope="session")
def agent_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fixtures.build_agent_run(tmp_path_factory.mktemp("viewer"))


@pytest.fixture(scope="session")
def agent_site(agent_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rlsae.viewer.export import export_site

    out = tmp_path_factory.mktemp("site") / "viewer"
    return export_site(agent_run, out, top=5, sources=sources())
