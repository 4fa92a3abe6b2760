"""The study figure of the site's index: live features against mean return across agents.

Reads ``analysis/agents.csv`` (one row per agent) and the study's fit
(``analysis/fit_live_vs_return.json``, :class:`rlsae.analysis.fit.FitResult`); without a fit
file, the fit is computed from the table. Returns the table and the figure data (points, the
line and parabola on a grid of x, their R² and p-values) for the page's plotly figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rlsae.analysis.fit import FitResult
from rlsae.errors import RlsaeError
from rlsae.fsutil import jsonable

if TYPE_CHECKING:
    import pandas as pd

TABLE_FILE = "agents.csv"
"""The agents table's name under ``analysis/``."""
FIT_FILE = "fit_live_vs_return.json"
"""The study's fit under ``analysis/``."""
X_COLUMNS = ("live", "live_features", "live_count", "n_live")
"""Columns taken as x (live features) when the fit names none of the table's columns."""
Y_COLUMNS = ("mean_return", "return_mean", "score")
"""Columns taken as y (mean return), likewise."""
GRID_POINTS = 120
"""Points of the fitted curves."""


def read_study(run_dir: Path, notes: list[str]) -> tuple[dict | None, dict | None]:
    """(agents table, figure data) of the run's ``analysis/``; (None, None) without a table,
    and no figure (with a note) when the table lacks a live-feature or mean-return column."""
    import pandas as pd

    table_path = run_dir / "analysis" / TABLE_FILE
    if not table_path.is_file():
        return None, None
    try:
        df = pd.read_csv(table_path)
    except (ValueError, OSError) as e:
        raise RlsaeError(f"{table_path} cannot be read as CSV ({e})") from None
    table = {
        "columns": [str(c) for c in df.columns],
        "rows": jsonable(df.astype(object).where(df.notna(), None).values.tolist()),
    }
    fit = _read_fit(run_dir / "analysis" / FIT_FILE, notes)
    xcol = _column(df, fit.x if fit else None, X_COLUMNS)
    ycol = _column(df, fit.y if fit else None, Y_COLUMNS)
    if xcol is None or ycol is None:
        notes.append("analysis/agents.csv has no live-feature or mean-return column; no figure")
        return table, None
    return table, jsonable(_figure(df, xcol, ycol, fit))


def _read_fit(path: Path, notes: list[str]) -> FitResult | None:
    if not path.is_file():
        return None
    try:
        return FitResult.read(path)
    except RlsaeError as e:
        notes.append(f"{e}; the fit is computed from agents.csv")
        return None


def _column(df: pd.DataFrame, named: str | None, fallbacks: tuple[str, ...]) -> str | None:
    if named and named in df.columns:
        return named
    return next((c for c in fallbacks if c in df.columns), None)


def _figure(df: pd.DataFrame, xcol: str, ycol: str, fit: FitResult | None) -> dict[str, Any]:
    import pandas as pd

    x = pd.to_numeric(df[xcol], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(df[ycol], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if fit is None and ok.sum() >= 4 and np.ptp(x[ok]) > 0:
        from rlsae.analysis.fit import fit_xy

        fit = fit_xy(x[ok], y[ok], bootstrap=0)
    labels = df["agent"].astype(str).tolist() if "agent" in df.columns else None
    study: dict[str, Any] = {"x_label": xcol, "y_label": ycol, "x": x, "y": y, "labels": labels}
    if fit is None or not ok.any():
        return study
    lo, hi = float(x[ok].min()), float(x[ok].max())
    pad = 0.05 * ((hi - lo) or 1.0)
    grid = np.linspace(lo - pad, hi + pad, GRID_POINTS)
    study["grid"] = grid
    for name, part in (("linear", fit.linear), ("quadratic", fit.quadratic)):
        coef = np.asarray(part.coef, dtype=float)
        study[name] = {
            "curve": np.polynomial.polynomial.polyval(grid, coef),
            "r2": part.r2,
            "p": part.f_pvalue,
            "coef": coef,
        }
    study["n"] = fit.n
    study["vertex_x"] = fit.quadratic.vertex_x
    return study
