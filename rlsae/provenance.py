"""What ran: package versions and the git commit, recorded beside every run's artifacts."""

from __future__ import annotations

import importlib.metadata as md
import platform
import subprocess
from pathlib import Path


def package_versions(*packages: str) -> dict[str, str]:
    """Python's version and each installed distribution's (missing ones are left out).

    Read from package metadata, so nothing is imported.
    """
    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """The commit of the rlsae checkout, or None outside a git checkout."""
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (res.stdout.strip() or None) if res.returncode == 0 else None
