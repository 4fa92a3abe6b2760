"""Time to an answer for every ``rlsae`` command: ``--help``, and the error for a missing file.

For every verb the script runs ``rlsae GROUP VERB --help`` and ``rlsae GROUP VERB`` with each
required option filled in (paths with a file that does not exist, numbers with 1, text with
``x``; a command with no input file to miss gets -1 for its first numeric option instead),
as separate processes, and reports the median wall time of ``--repeats`` runs each,
the exit status and the first line of stderr. Target (issue 18): under 1 s on 2 cores for
both. The last line is one JSON object.

    python benchmarks/cli_startup.py [--repeats 3] [--only sae]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

MISSING = "/nonexistent-rlsae-benchmark/missing"
TIMEOUT = 60


def commands() -> list[tuple[list[str], list[str]]]:
    """``(path, required arguments)`` for every verb of the CLI, read from the typer app."""
    import typer

    import rlsae.cli  # noqa: F401  (registers every command group)
    from rlsae.commands._apps import app

    root = typer.main.get_command(app)
    out: list[tuple[list[str], list[str]]] = []

    def walk(cmd, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                walk(sub, [*path, name])
            return
        args: list[str] = []
        if not any(getattr(p, "required", False) for p in cmd.params):
            return  # nothing to get wrong (``demo`` runs the demo): no error to time
        for p in cmd.params:
            if not getattr(p, "required", False) or not p.opts:
                continue
            value = _placeholder(p)
            if value == "x" and p.name in ("model", "base", "tuned"):
                value = MISSING  # a model directory that does not exist, not a hub name
            args += [p.opts[0], value]
        if MISSING not in args or args[args.index(MISSING) - 1] == "--out":
            # no input file to miss (pretrain-tiny, rlhf: only --out): time a bad value instead
            numeric = [p for p in cmd.params if p.opts and _placeholder(p) in ("1", "1.0")]
            if numeric:
                args += [numeric[0].opts[0], "-1"]
        out.append((path, args))

    walk(root, [])
    return out


def _placeholder(param) -> str:
    """A value of the option's type: a missing file for paths, 1 for numbers, else text."""
    runtime = param.get_runtime_param() if hasattr(param, "get_runtime_param") else None
    annotation = getattr(runtime, "annotation", None) or getattr(param, "type", None)
    text = str(annotation).lower()
    if "path" in text:
        return MISSING
    if "int" in text:
        return "1"
    if "float" in text:
        return "1.0"
    return "x"


def timed(argv: list[str], repeats: int) -> tuple[float, int, str]:
    times, rc, first = [], 0, ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        try:
            r = subprocess.run(
                [sys.executable, "-m", "rlsae", *argv],
                capture_output=True,
                text=True,
                check=False,
                timeout=TIMEOUT,
            )
            rc, first = r.returncode, (r.stderr.strip().splitlines() or [""])[0]
        except subprocess.TimeoutExpired:
            rc, first = -1, f"no answer within {TIMEOUT} s"
        times.append(time.perf_counter() - t0)
    return statistics.median(times), rc, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="", help="Only commands whose path starts with this group.")
    a = ap.parse_args()
    rows = []
    print(f"{'command':28s} {'--help':>8s} {'error':>8s}  rc  first line of stderr")
    for path, args in commands():
        if a.only and path[0] != a.only:
            continue
        t_help, _, _ = timed([*path, "--help"], a.repeats)
        t_err, rc, first = timed([*path, *args], a.repeats)
        rows.append(
            {
                "command": " ".join(path),
                "help_s": t_help,
                "error_s": t_err,
                "rc": rc,
                "stderr": first,
            }
        )
        print(f"{' '.join(path):28s} {t_help:7.2f}s {t_err:7.2f}s  {rc:2d}  {first[:70]}")
    worst_help = max(r["help_s"] for r in rows)
    worst_err = max(r["error_s"] for r in rows)
    print(f"slowest --help {worst_help:.2f} s, slowest error {worst_err:.2f} s (target < 1 s)")
    print(
        json.dumps(
            {
                "benchmark": "cli_startup",
                "repeats": a.repeats,
                "worst_help_s": worst_help,
                "worst_error_s": worst_err,
                "commands": rows,
                "python": sys.version.split()[0],
                "host": Path("/proc/loadavg").read_text().split()[:3]
                if Path("/proc/loadavg").exists()
                else None,
            }
        )
    )


if __name__ == "__main__":
    main()
