"""Atomic writes: complete or absent, and with the permissions an ordinary write would give."""

from __future__ import annotations

import os
import stat

import pytest

from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_dir, atomic_write_json, read_json


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(ValueError), atomic_dir(final) as tmp:
        (tmp / "half.txt").write_text("x")
        raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_refuses_existing_and_replaces_with_overwrite(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RlsaeError, match="already exists"), atomic_dir(final):
        pass
    with atomic_dir(final, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_written_files_and_dirs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert read_json(tmp_path / "a.json") == {"x": 1}


def test_read_json_errors_are_one_line(tmp_path):
    with pytest.raises(RlsaeError, match="not found"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RlsaeError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_atomic_dir_publishes_everything_with_the_umask_modes(tmp_path):
    """Files a third-party writer creates 0600 (safetensors, mkstemp) and 0700 directories are
    published with the modes of the user's umask, like every other artifact."""
    import os

    from rlsae.fsutil import atomic_dir

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as d:
            (d / "sub").mkdir(mode=0o700)
            (d / "sub" / "w.bin").write_bytes(b"x")
            os.chmod(d / "sub" / "w.bin", 0o600)
    finally:
        os.umask(old)
    modes = {
        p.name: p.stat().st_mode & 0o777 for p in [tmp_path / "out", *(tmp_path / "out").rglob("*")]
    }
    assert modes == {"out": 0o755, "sub": 0o755, "w.bin": 0o644}
