"""The study report's time table: per stage, the CPU and wall seconds each unit took, from
``analysis/stage_times.csv`` (written by :func:`rlsae.study.times.write_stage_times`)."""

from __future__ import annotations

from pathlib import Path

from rlsae.analysis.html import esc, html_table, num


def time_section(path: Path) -> str:
    """Per stage: units, mean CPU seconds per unit with the range, the CPU total, and the mean
    wall seconds per unit (nothing when ``path`` is missing or empty)."""
    import pandas as pd

    if not path.is_file():
        return ""
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if df.empty:
        return ""
    rows = []
    for stage, g in df.groupby("stage", sort=False):
        cpu = g["cpu_seconds"].dropna()
        rng = f"{num(cpu.min(), '.1f')}–{num(cpu.max(), '.1f')}" if len(cpu) else "–"
        rows.append(
            [
                esc(str(stage)),
                esc(str(g["kind"].iloc[0])),
                str(len(g)),
                num(cpu.mean(), ".1f") if len(cpu) else "–",
                rng,
                num(cpu.sum(), ".1f") if len(cpu) else "–",
                num(g["seconds"].mean(), ".1f"),
            ]
        )
    headers = [
        "stage", "per", "units", "CPU s per unit", "range", "CPU s total", "wall s per unit"
    ]  # fmt: skip
    return (
        "<h2>Where the time went</h2><p>CPU seconds of the process that ran each stage (all its "
        "threads: torch's and the emulators'), per unit; wall seconds depend on the machine's "
        "load and the engine's workers. From <code>analysis/stage_times.csv</code>.</p>"
        + html_table(headers, rows, ("stage", "per"))
    )
