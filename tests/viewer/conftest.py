"""Fixtures of the viewer tests (builders in viewer_fixtures.py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from viewer_fixtures import build_agent_run, build_lm_run  # noqa: E402


@pytest.fixture(scope="session")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lm_run(tmp_path_factory.mktemp("viewer"))


@pytest.fixture(scope="session")
def lm_site(lm_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rlsae.viewer.export import export_site

    return export_site(lm_run, tmp_path_factory.mktemp("site") / "viewer", top=5)


@pytest.fixture(scope="session")
def agent_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_agent_run(tmp_path_factory.mktemp("viewer"))


@pytest.fixture(scope="session")
def agent_site(agent_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rlsae.viewer.export import export_site

    return export_site(agent_run, tmp_path_factory.mktemp("site") / "viewer", top=5)


@pytest.fixture
def copy_run(tmp_path: Path):
    def _copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return _copy
