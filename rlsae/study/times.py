"""Where a study's time went: wall and CPU seconds of every stage, per unit, from the markers.

Every stage marker records the wall time of its run and the CPU time of the process that ran
it (all threads: torch's and the emulators'). :func:`stage_times` gathers them, one row per
finished stage and unit; :func:`write_stage_times` writes ``analysis/stage_times.csv``, which
the report summarises per stage (mean CPU seconds per unit, the range, the total). A marker
written before CPU time was kept gives an empty ``cpu_seconds``.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlsae.fsutil import atomic_write_bytes
from rlsae.study.engine import Context

COLUMNS = ("stage", "kind", "unit", "seconds", "cpu_seconds")


@dataclass(frozen=True)
class StageTime:
    """One finished stage of one unit (``kind`` ``study`` and ``unit`` empty: a study stage)."""

    stage: str
    kind: str
    unit: str
    seconds: float
    cpu_seconds: float | None


def stage_times(ctx: Context[Any], skip: tuple[str, ...] = ()) -> list[StageTime]:
    """Every finished stage's wall and CPU seconds, in the study's stage order (units in
    listing order); stages switched off or not yet run are left out, and so are ``skip``."""
    rows: list[StageTime] = []
    for stage in ctx.study.stages:
        if stage.name in skip or stage.off(ctx.config):
            continue
        names = [None] if stage.per is None else [u.name for u in ctx.units(stage.per)]
        for name in names:
            m = ctx.marker(stage.name, name)
            if m is not None:
                rows.append(
                    StageTime(
                        stage.name, stage.per or "study", name or "", m.seconds, m.cpu_seconds
                    )
                )
    return rows


def write_stage_times(
    ctx: Context[Any], path: str | os.PathLike, skip: tuple[str, ...] = ()
) -> Path:
    """``path`` (CSV, columns :data:`COLUMNS`): :func:`stage_times`, seconds to 3 decimals."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in stage_times(ctx, skip):
        cpu = "" if r.cpu_seconds is None else f"{r.cpu_seconds:.3f}"
        w.writerow([r.stage, r.kind, r.unit, f"{r.seconds:.3f}", cpu])
    atomic_write_bytes(Path(path), buf.getvalue().encode())
    return Path(path)
