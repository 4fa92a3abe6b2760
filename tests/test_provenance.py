"""Provenance recorded in run.json: versions from package metadata, the checkout's commit."""

from __future__ import annotations

import importlib.metadata as md
import platform
import subprocess
from pathlib import Path

import rlsae
from rlsae.provenance import git_commit, package_versions


def test_package_versions_match_metadata_and_skip_missing():
    v = package_versions("torch", "numpy", "no-such-distribution-xyz")
    assert v["python"] == platform.python_version()
    assert v["torch"] == md.version("torch")
    assert v["numpy"] == md.version("numpy")
    assert "no-such-distribution-xyz" not in v


def test_git_commit_is_the_checkouts_head():
    root = Path(rlsae.__file__).parent
    res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    expected = res.stdout.strip() if res.returncode == 0 else None
    assert git_commit() == (expected or None)
