"""Fits across agents: ordinary least squares (linear and quadratic), Spearman's rho, and a
bootstrap interval for the quadratic's vertex.

The poster relates each agent's live-feature count to its mean score and reports a quadratic
fit (R² = 0.33, F-test p = 0.015 over 24 agents). :func:`fit_xy` computes the same statistics
with numpy and scipy; the tests check them against statsmodels. The result is a
:class:`FitResult` (``rlsae.fit``), the artifact ``analysis/fit_live_vs_return.json`` of the
Atari study and the output of ``rlsae analyze fit --json``.

Numbers that are not finite are stored (and written) as ``None``/``null``; each field's
docstring says when that happens. The two cases are an exact fit (residuals at rounding level:
the F statistic is infinite; ``PolyFit.exact`` is true) and a constant y (R² and the F-test are
undefined).

Example::

    >>> import numpy as np
    >>> x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    >>> res = fit_xy(x, 1 + 2 * x - x**2, bootstrap=0)
    >>> [round(c, 6) for c in res.quadratic.coef], round(res.quadratic.vertex_x, 6)
    ([1.0, 2.0, -1.0], 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from rlsae.artifacts import Artifact
from rlsae.errors import RlsaeError

MIN_ROWS = {1: 3, 2: 4}  # fewest points for a fit with at least one residual degree of freedom
_EXACT_RMS = 16 * np.finfo(np.float64).eps  # residual RMS / max|y| at or below this: exact fit


@dataclass
class BootstrapInterval:
    """Percentile bootstrap interval of the quadratic's vertex x (resampled (x, y) pairs)."""

    n_boot: int
    """Resamples drawn."""
    n_valid: int
    """Resamples with a defined vertex (at least three distinct x, a non-zero squared term)."""
    level: float
    """Coverage of the interval, e.g. 0.95."""
    low: float | None = None
    """Lower end; None when no resample had a vertex (``n_valid`` is 0)."""
    high: float | None = None
    """Upper end; None when ``n_valid`` is 0."""
    median: float | None = None
    """Median vertex over the valid resamples; None when ``n_valid`` is 0."""
    seed: int | None = None
    """Seed of the resampling; None when ``n_valid`` is 0."""


@dataclass
class PolyFit:
    """One least-squares polynomial ``y = c0 + c1 x + ... + c_d x^d``."""

    degree: int
    """1 (line) or 2 (parabola)."""
    coef: list[float]
    """Coefficients, intercept first (statsmodels' order)."""
    stderr: list[float | None]
    """Standard errors of ``coef``; None where the covariance is not finite."""
    r2: float | None
    """R²; None when y is constant (nothing to explain)."""
    adj_r2: float | None
    """Adjusted R²; None when y is constant."""
    f_stat: float | None
    """Overall F statistic of the slopes against the intercept-only model; None when it is
    infinite (``exact`` is true) or undefined (y constant)."""
    f_pvalue: float | None
    """p-value of ``f_stat`` (0 for an exact fit); None when y is constant."""
    rss: float
    """Residual sum of squares."""
    df_resid: int
    """Residual degrees of freedom (n - degree - 1)."""
    exact: bool = False
    """The residuals are at rounding level: a perfect fit, so ``f_stat`` is infinite (None)."""
    vertex_x: float | None = None
    """Degree 2: x of the parabola's vertex; None for a line or a zero squared term."""
    vertex_y: float | None = None
    """Degree 2: y at the vertex; None when ``vertex_x`` is None."""
    opens: Literal["up", "down"] | None = None
    """Degree 2: whether the parabola opens up or down; None when ``vertex_x`` is None."""
    vertex_ci: BootstrapInterval | None = None
    """Degree 2 with a bootstrap: the vertex's interval; None without one."""


@dataclass
class FTest:
    """A partial F-test: does the squared term explain more than the line?"""

    f_stat: float | None
    """F statistic; None when infinite (the parabola fits exactly, the line does not) or
    undefined (both fit exactly)."""
    f_pvalue: float | None
    """Its p-value (0 when ``f_stat`` is infinite); None when undefined."""


@dataclass
class Spearman:
    """Spearman's rank correlation of y with x."""

    rho: float | None
    """rho; None when x or y is constant."""
    pvalue: float | None
    """Two-sided p-value; None when ``rho`` is None."""


@dataclass
class FitResult(Artifact):
    """Linear and quadratic fits of y on x across agents (``analysis/fit_live_vs_return.json``,
    ``rlsae analyze fit --json``)."""

    FORMAT: ClassVar[str] = "rlsae.fit"
    VERSION: ClassVar[int] = 1

    n: int
    """Rows used (finite x and y)."""
    n_dropped: int
    """Rows dropped for a missing or non-finite x or y."""
    linear: PolyFit
    """The line."""
    quadratic: PolyFit
    """The parabola."""
    quadratic_vs_linear: FTest
    """Partial F-test of the squared term."""
    spearman: Spearman
    """Rank correlation."""
    x_range: list[float]
    """[min, max] of the x values used."""
    x: str = ""
    """Name of the x column (e.g. ``live``); empty when the data came without names."""
    y: str = ""
    """Name of the y column (e.g. ``mean_return``)."""
    table: str = ""
    """The table the rows came from (e.g. ``agents.csv``); empty when not from a table."""


def _finite(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


MAX_BOOTSTRAP = 1_000_000


def check_fit_options(bootstrap: int, seed: int, level: float = 0.95) -> None:
    """Refuse a negative bootstrap count or seed, or a level outside (0, 1), in one line."""
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise RlsaeError(f"--bootstrap must be a whole number >= 0, got {bootstrap!r}")
    if bootstrap > MAX_BOOTSTRAP:  # each resample refits; more would run for hours, not help
        raise RlsaeError(f"--bootstrap must be at most {MAX_BOOTSTRAP}, got {bootstrap!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RlsaeError(f"--seed must be a whole number >= 0, got {seed!r}")
    if not 0.0 < float(level) < 1.0:
        raise RlsaeError(f"the interval level must lie in (0, 1), got {level!r}")


def _to_x_basis(mu: float, sd: float, degree: int, x_max: float) -> np.ndarray:
    """The matrix T with ``coef = T @ beta_z`` for the standardised ``z = (x - mu) / sd``.

    ``((x - mu)/sd)^j = sum_i C(j,i) x^i (-mu/sd)^(j-i) / sd^i``. Refuses (one line) x whose
    powers leave float64's range, where the coefficients in x cannot be written down.
    """
    with np.errstate(over="ignore", divide="ignore", under="ignore"):
        xm, s = np.float64(x_max), np.float64(sd)
        scales = np.array([xm**degree, s**degree, 1.0 / s**degree])
        T = np.zeros((degree + 1, degree + 1))
        for j in range(degree + 1):
            for i in range(j + 1):
                T[i, j] = math.comb(j, i) * np.float64(-mu / sd) ** (j - i) / s**i
    if not (np.isfinite(scales).all() and (scales != 0).all() and np.isfinite(T).all()):
        raise RlsaeError(
            f"x values up to {x_max:.3g} with spread {sd:.3g}: x**{degree} leaves float64's "
            "range, so the fit cannot be written in x; rescale x (e.g. divide it by a power of 10)"
        )
    return T


def _f_test(tss: float, rss: float, p: int, df_resid: int, exact: bool) -> tuple[Any, Any]:
    from scipy import stats

    if tss <= 0:
        return None, None
    if exact:
        return None, 0.0
    f_stat = ((tss - rss) / p) / (rss / df_resid)
    return _finite(f_stat), float(stats.f.sf(f_stat, p, df_resid))


def _stderr(T: np.ndarray, Z: np.ndarray, sigma2: float) -> list[float | None]:
    """Standard errors of ``T @ beta_z``: sqrt(diag(T cov_z Tᵀ)), each row of T scaled to unit
    size first so that x near 1e150 neither overflows nor underflows."""
    try:
        cov_z = sigma2 * np.linalg.inv(Z.T @ Z)
    except np.linalg.LinAlgError:
        return [None] * T.shape[0]
    out: list[float | None] = []
    for row in T:
        m = float(np.abs(row).max())
        u = row / m if m > 0 else row
        with np.errstate(over="ignore"):
            out.append(_finite(m * math.sqrt(max(float(u @ cov_z @ u), 0.0))))
    return out


def ols_poly(x: np.ndarray, y: np.ndarray, degree: int) -> PolyFit:
    """Fit ``y = c0 + c1 x + ... + c_d x^d`` by ordinary least squares (see :class:`PolyFit`).

    The solve runs on the standardised x (well conditioned for x around 1e6); coefficients and
    their covariance are mapped back to x exactly.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.shape[0]
    if n < MIN_ROWS.get(degree, degree + 2):
        raise RlsaeError(
            f"a degree-{degree} fit needs at least {MIN_ROWS.get(degree, degree + 2)} rows, got {n}"
        )
    x_max = float(np.abs(x).max())
    if x_max == 0.0:
        raise RlsaeError("x is constant: every row has the same value, nothing to fit")
    with np.errstate(over="ignore"):  # mean and spread of x / max|x|: no overflow, no underflow
        mu, sd = float((x / x_max).mean()) * x_max, float((x / x_max).std()) * x_max
    if not (math.isfinite(mu) and math.isfinite(sd)):
        raise RlsaeError(f"x values up to {x_max:.3g} overflow float64; rescale x")
    if sd == 0.0:
        raise RlsaeError("x is constant: every row has the same value, nothing to fit")
    T = _to_x_basis(mu, sd, degree, x_max)
    Z = np.vander((x - mu) / sd, degree + 1, increasing=True)
    beta_z, *_ = np.linalg.lstsq(Z, y, rcond=None)
    resid = y - Z @ beta_z
    with np.errstate(over="ignore", invalid="ignore"):
        rss = float(resid @ resid)
        tss = float(((y - y.mean()) ** 2).sum())
    if not (math.isfinite(rss) and math.isfinite(tss)):
        raise RlsaeError(f"y values up to {np.abs(y).max():.3g} overflow float64; rescale y")
    df_resid = n - degree - 1
    exact = bool(tss > 0 and math.sqrt(rss / n) <= _EXACT_RMS * float(np.abs(y).max()))
    r2 = 1.0 - rss / tss if tss > 0 else None
    adj_r2 = 1.0 - (1.0 - r2) * (n - 1) / df_resid if r2 is not None else None
    f_stat, f_pvalue = _f_test(tss, rss, degree, df_resid, exact)
    stderr = _stderr(T, Z, rss / df_resid)
    coef = [float(c) for c in T @ beta_z]
    fit = PolyFit(degree, coef, stderr, r2, adj_r2, f_stat, f_pvalue, rss, df_resid, exact)
    if degree == 2 and coef[2] != 0.0:
        c0, c1, c2 = coef
        vx = -c1 / (2.0 * c2)
        fit.vertex_x, fit.vertex_y = _finite(vx), _finite(c0 + c1 * vx + c2 * vx * vx)
        if fit.vertex_x is not None:
            fit.opens = "down" if c2 < 0 else "up"
    return fit


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
) -> BootstrapInterval:
    """Percentile bootstrap interval (resampling (x, y) pairs) for the quadratic's vertex x."""
    check_fit_options(n_boot, seed, level)
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    verts: list[float] = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        v = _quad_vertex(x[idx], y[idx])
        if v is not None and math.isfinite(v):
            verts.append(v)
    if not verts:
        return BootstrapInterval(n_boot=n_boot, n_valid=0, level=level)
    a = (1.0 - level) / 2.0
    low, high = np.quantile(np.asarray(verts), [a, 1.0 - a])
    return BootstrapInterval(
        n_boot=n_boot,
        n_valid=len(verts),
        level=level,
        low=float(low),
        high=float(high),
        median=float(np.median(verts)),
        seed=seed,
    )


def _partial_f(lin: PolyFit, quad: PolyFit) -> FTest:
    from scipy import stats

    if quad.exact:
        return FTest(None, None) if lin.exact else FTest(None, 0.0)
    f_part = (lin.rss - quad.rss) / (quad.rss / quad.df_resid)
    return FTest(_finite(f_part), float(stats.f.sf(f_part, 1, quad.df_resid)))


def fit_xy(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    bootstrap: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> FitResult:
    """Linear and quadratic OLS of y on x, Spearman's rho, and a bootstrap vertex interval
    (``quadratic.vertex_ci`` when ``bootstrap > 0``). Rows with a missing or infinite x or y
    are dropped (``n_dropped``). Name the columns with ``dataclasses.replace(res, x=, y=)``."""
    from scipy import stats

    check_fit_options(bootstrap, seed, level)
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise RlsaeError(f"x and y differ in length ({xa.shape[0]} vs {ya.shape[0]})")
    ok = np.isfinite(xa) & np.isfinite(ya)
    n_dropped = int((~ok).sum())
    xa, ya = xa[ok], ya[ok]
    n = int(xa.shape[0])
    if n < MIN_ROWS[2]:
        raise RlsaeError(
            f"a quadratic fit needs at least {MIN_ROWS[2]} rows with finite x and y, got {n}"
        )
    lin = ols_poly(xa, ya, 1)
    quad = ols_poly(xa, ya, 2)
    rho: float | None = None
    rho_p: float | None = None
    if np.unique(ya).size > 1:
        sp = stats.spearmanr(xa, ya)
        rho, rho_p = _finite(sp.statistic), _finite(sp.pvalue)
    if bootstrap > 0:
        quad.vertex_ci = bootstrap_vertex(xa, ya, n_boot=bootstrap, seed=seed, level=level)
    return FitResult(
        n=n,
        n_dropped=n_dropped,
        linear=lin,
        quadratic=quad,
        quadratic_vs_linear=_partial_f(lin, quad),
        spearman=Spearman(rho, rho_p),
        x_range=[float(xa.min()), float(xa.max())],
    )


def fit_table(
    table: str | Path,
    x: str,
    y: str,
    *,
    bootstrap: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[FitResult, Any]:
    """Read a CSV, fit ``y`` against ``x``; returns (result, the DataFrame used).

    The options are checked before the table is read."""
    import dataclasses

    import pandas as pd

    check_fit_options(bootstrap, seed, level)
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
    return dataclasses.replace(res, table=str(table), x=x, y=y), df


def predict(coef: Sequence[float], x: np.ndarray) -> np.ndarray:
    """Evaluate a polynomial with intercept-first coefficients."""
    x = np.asarray(x, dtype=np.float64)
    return np.polynomial.polynomial.polyval(x, np.asarray(coef, dtype=np.float64))


def _num(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def describe_fit(res: FitResult) -> str:
    """A few readable lines summarising :func:`fit_xy`'s result."""
    lin, quad, sp = res.linear, res.quadratic, res.spearman
    lines = [f"n = {res.n}" + (f" ({res.n_dropped} rows dropped)" if res.n_dropped else "")]
    for name, part in (("linear:   ", lin), ("quadratic:", quad)):
        lines.append(
            f"{name} R² = {_num(part.r2, '.4f')} (adj {_num(part.adj_r2, '.4f')}), "
            f"F-test p = {_num(part.f_pvalue, '.4g')}" + (" (exact fit)" if part.exact else "")
        )
    if quad.vertex_x is not None:
        v = f"           vertex at x = {quad.vertex_x:.4g} (opens {quad.opens})"
        ci = quad.vertex_ci
        if ci is not None and ci.low is not None and ci.high is not None:
            v += f", {int(ci.level * 100)}% bootstrap interval [{ci.low:.4g}, {ci.high:.4g}]"
        lines.append(v)
    lines.append(f"spearman:  rho = {_num(sp.rho, '.4f')}, p = {_num(sp.pvalue, '.4g')}")
    return "\n".join(lines)
