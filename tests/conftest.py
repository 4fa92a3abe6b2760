"""Shared test set-up: the slow tier is deselected unless ``--slow`` is given."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("slow") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """The one CLI runner: ``run_cli(*args) -> (exit code, stdout, stderr)`` of
    :func:`rlsae.cli.main`, in-process, so the one-line-error contract is what every CLI test
    checks (arguments may be paths or numbers; they are passed as strings)."""
    from rlsae.cli import main

    def run(*args: object) -> tuple[int, str, str]:
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return run


@pytest.fixture
def one_thread():
    """Torch on one thread inside the test (restored after): small tensors next to the emulator
    or a tiny model run several times faster, and steadier, that way on a shared 2-core machine.
    Directories of such tests use it for every test (an autouse fixture in their conftest)."""
    from rlsae.threads import torch_threads

    with torch_threads(1):
        yield


def modes_off_umask(root, mask: int) -> list[str]:
    """Files and directories under ``root`` whose mode is not what ``mask`` gives (0o666 and
    0o777 less it): the one permission rule of every artifact (issue 18)."""
    out = []
    for p in [root, *root.rglob("*")]:
        want = (0o777 if p.is_dir() else 0o666) & ~mask
        mode = p.stat().st_mode & 0o777
        if mode != want:
            out.append(f"{p.relative_to(root)}: {mode:o}, not {want:o}")
    return out


@pytest.fixture
def bad_modes():
    """``bad_modes(root, mask)``: the paths under ``root`` that break the umask rule."""
    return modes_off_umask
