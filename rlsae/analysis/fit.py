"""Fits across agents: ordinary least squares (linear and quadratic), Spearman's rho, and a
bootstrap interval for the quadratic's vertex.

The poster relates each agent's live-feature count to its mean score and reports a quadratic
fit (R² = 0.33, F-test p = 0.015 over 24 agents). :func:`fit_xy` computes the same statistics
with numpy and scipy; the tests check them against statsmodels.

Example::

    >>> import numpy as np
    >>> x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    >>> res = fit_xy(x, 1 + 2 * x - x**2, bootstrap=0)
    >>> [round(c, 6) for c in res["quadratic"]["coef"]], round(res["quadratic"]["vertex_x"], 6)
    ([1.0, 2.0, -1.0], 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlsae.errors import RlsaeError

MIN_ROWS = {1: 3, 2: 4}  # fewest points for a fit with at least one residual degree of freedom


def ols_poly(x: np.ndarray, y: np.ndarray, degree: int) -> dict[str, Any]:
    """Fit ``y = c0 + c1 x + ... + c_d x^d`` by ordinary least squares.

    Returns ``coef`` (intercept first, as statsmodels orders them), ``stderr``, ``r2``,
    ``adj_r2``, ``f_stat`` and ``f_pvalue`` (the overall F-test of all slopes against the
    intercept-only model), ``rss``, ``df_resid`` and, for degree 2, ``vertex_x``/``vertex_y``.
    """
    from scipy import stats

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.shape[0]
    if n < MIN_ROWS.get(degree, degree + 2):
        raise RlsaeError(
            f"a degree-{degree} fit needs at least {MIN_ROWS.get(degree, degree + 2)} rows, got {n}"
        )
    # Centre and scale x for a well-conditioned solve, then map coefficients back.
    mu, sd = float(x.mean()), float(x.std())
    if sd == 0.0:
        raise RlsaeError("x is constant: every row has the same value, nothing to fit")
    z = (x - mu) / sd
    Z = np.vander(z, degree + 1, increasing=True)
    beta_z, *_ = np.linalg.lstsq(Z, y, rcond=None)
    X = np.vander(x, degree + 1, increasing=True)
    # coefficients in the original x: expand sum_j b_j ((x - mu)/sd)^j
    coef = np.zeros(degree + 1)
    for j, b in enumerate(beta_z):
        # ((x - mu)/sd)^j = sum_i C(j,i) x^i (-mu)^(j-i) / sd^j
        for i in range(j + 1):
            coef[i] += b * math.comb(j, i) * (-mu) ** (j - i) / sd**j
    fitted = Z @ beta_z
    resid = y - fitted
    rss = float(resid @ resid)
    tss = float(((y - y.mean()) ** 2).sum())
    p = degree  # slopes
    df_resid = n - p - 1
    r2 = 1.0 - rss / tss if tss > 0 else float("nan")
    adj_r2 = 1.0 - (1.0 - r2) * (n - 1) / df_resid if tss > 0 else float("nan")
    if tss > 0 and rss > 0:
        f_stat = ((tss - rss) / p) / (rss / df_resid)
        f_pvalue = float(stats.f.sf(f_stat, p, df_resid))
    elif tss > 0:  # a perfect fit
        f_stat, f_pvalue = float("inf"), 0.0
    else:
        f_stat, f_pvalue = float("nan"), float("nan")
    sigma2 = rss / df_resid
    try:
        cov = sigma2 * np.linalg.inv(X.T @ X)
        stderr = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        stderr = np.full(degree + 1, float("nan"))
    out: dict[str, Any] = {
        "degree": degree,
        "coef": [float(c) for c in coef],
        "stderr": [float(s) for s in stderr],
        "r2": float(r2),
        "adj_r2": float(adj_r2),
        "f_stat": float(f_stat),
        "f_pvalue": float(f_pvalue),
        "rss": rss,
        "df_resid": int(df_resid),
    }
    if degree == 2:
        c0, c1, c2 = coef
        if c2 != 0.0:
            vx = -c1 / (2.0 * c2)
            out["vertex_x"] = float(vx)
            out["vertex_y"] = float(c0 + c1 * vx + c2 * vx * vx)
            out["opens"] = "down" if c2 < 0 else "up"
        else:
            out["vertex_x"] = out["vertex_y"] = None
            out["opens"] = None
    return out


def _quad_vertex(x: np.ndarray, y: np.ndarray) -> float | None:
    """Vertex of the least-squares parabola, or None when the resample is degenerate."""
    if np.unique(x).size < 3:
        return None
    mu, sd = x.mean(), x.std()
    z = (x - mu) / sd
    b, *_ = np.linalg.lstsq(np.vander(z, 3, increasing=True), y, rcond=None)
    if b[2] == 0:
        return None
    return float(mu + sd * (-b[1] / (2 * b[2])))


def bootstrap_vertex(
    x: np.ndarray, y: np.ndarray, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """Percentile bootstrap interval (resampling (x, y) pairs) for the quadratic's vertex x."""
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    verts: list[float] = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        v = _quad_vertex(x[idx], y[idx])
        if v is not None and math.isfinite(v):
            verts.append(v)
    if not verts:
        return {"n_boot": n_boot, "n_valid": 0, "level": level, "low": None, "high": None}
    a = (1.0 - level) / 2.0
    low, high = np.quantile(np.asarray(verts), [a, 1.0 - a])
    return {
        "n_boot": n_boot,
        "n_valid": len(verts),
        "level": level,
        "low": float(low),
        "high": float(high),
        "median": float(np.median(verts)),
        "seed": seed,
    }


def fit_xy(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    bootstrap: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Linear and quadratic OLS of y on x, Spearman's rho, and a bootstrap vertex interval.

    Keys: ``n``, ``linear`` and ``quadratic`` (see :func:`ols_poly`), ``quadratic_vs_linear``
    (the partial F-test of the squared term), ``spearman`` ``{rho, pvalue}``, and
    ``quadratic.vertex_ci`` when ``bootstrap > 0``. Rows with a missing or infinite x or y are
    dropped (``n_dropped``).
    """
    from scipy import stats

    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise RlsaeError(f"x and y differ in length ({x.shape[0]} vs {y.shape[0]})")
    ok = np.isfinite(x) & np.isfinite(y)
    n_dropped = int((~ok).sum())
    x, y = x[ok], y[ok]
    n = int(x.shape[0])
    if n < MIN_ROWS[2]:
        raise RlsaeError(
            f"a quadratic fit needs at least {MIN_ROWS[2]} rows with finite x and y, got {n}"
        )
    lin = ols_poly(x, y, 1)
    quad = ols_poly(x, y, 2)
    # partial F-test: does the squared term explain more than the line?
    if quad["rss"] > 0:
        f_part = (lin["rss"] - quad["rss"]) / (quad["rss"] / quad["df_resid"])
        p_part = float(stats.f.sf(f_part, 1, quad["df_resid"]))
    else:
        f_part, p_part = float("inf"), 0.0
    if np.unique(y).size > 1:
        sp = stats.spearmanr(x, y)
        rho, rho_p = float(sp.statistic), float(sp.pvalue)
    else:
        rho, rho_p = float("nan"), float("nan")
    if bootstrap > 0:
        quad["vertex_ci"] = bootstrap_vertex(x, y, n_boot=bootstrap, seed=seed, level=level)
    return {
        "n": n,
        "n_dropped": n_dropped,
        "linear": lin,
        "quadratic": quad,
        "quadratic_vs_linear": {"f_stat": float(f_part), "f_pvalue": p_part},
        "spearman": {"rho": rho, "pvalue": rho_p},
        "x_range": [float(x.min()), float(x.max())],
    }


def fit_table(
    table: str | Path,
    x: str,
    y: str,
    *,
    bootstrap: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[dict[str, Any], Any]:
    """Read a CSV, fit ``y`` against ``x``; returns (result, the DataFrame used)."""
    import pandas as pd

    table = Path(table)
    if not table.is_file():
        raise RlsaeError(f"table {table} not found")
    try:
        df = pd.read_csv(table)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise RlsaeError(f"{table} is not a readable CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in (x, y) if c not in df.columns]
    if missing:
        raise RlsaeError(
            f"{table} has no column {', '.join(repr(m) for m in missing)}; "
            f"columns are: {', '.join(map(str, df.columns))}"
        )
    xs = pd.to_numeric(df[x], errors="coerce")
    ys = pd.to_numeric(df[y], errors="coerce")
    res = fit_xy(xs.to_numpy(), ys.to_numpy(), bootstrap=bootstrap, seed=seed, level=level)
    res.update({"table": str(table), "x": x, "y": y})
    return res, df


def predict(coef: Sequence[float], x: np.ndarray) -> np.ndarray:
    """Evaluate a polynomial with intercept-first coefficients."""
    x = np.asarray(x, dtype=np.float64)
    return sum(c * x**i for i, c in enumerate(coef))


def describe_fit(res: dict[str, Any]) -> str:
    """A few readable lines summarising :func:`fit_xy`'s result."""
    lin, quad = res["linear"], res["quadratic"]
    lines = [
        f"n = {res['n']}" + (f" ({res['n_dropped']} rows dropped)" if res.get("n_dropped") else ""),
        f"linear:    R² = {lin['r2']:.4f} (adj {lin['adj_r2']:.4f}), F-test p = {lin['f_pvalue']:.4g}",
        f"quadratic: R² = {quad['r2']:.4f} (adj {quad['adj_r2']:.4f}), F-test p = {quad['f_pvalue']:.4g}",
    ]
    if quad.get("vertex_x") is not None:
        v = f"           vertex at x = {quad['vertex_x']:.4g} (opens {quad['opens']})"
        ci = quad.get("vertex_ci")
        if ci and ci.get("low") is not None:
            v += f", {int(ci['level'] * 100)}% bootstrap interval [{ci['low']:.4g}, {ci['high']:.4g}]"
        lines.append(v)
    sp = res["spearman"]
    lines.append(f"spearman:  rho = {sp['rho']:.4f}, p = {sp['pvalue']:.4g}")
    return "\n".join(lines)
