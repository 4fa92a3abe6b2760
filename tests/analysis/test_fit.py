"""The fit statistics against statsmodels and a hand-worked example; the `analyze fit` verb."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from rlsae.analysis.fit import FitResult, fit_table, fit_xy, ols_poly
from rlsae.cli import main
from rlsae.errors import RlsaeError


def _planted(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(100, 900, n)
    y = -0.002 * (x - 480) ** 2 + 500 + rng.normal(0, 80, n)
    return x, y


def test_hand_worked_line() -> None:
    # x = 0..3, y = 1,3,2,5: slope = Sxy/Sxx = 5.5/5 = 1.1, intercept 2.75 - 1.1*1.5 = 1.1,
    # RSS = 0.01+0.64+1.69+0.36 = 2.7, TSS = 8.75, F = 6.05/(2.7/2), and for F(1, 2) the
    # tail is 1 - sqrt(F / (F + 2)) (a t with 2 degrees of freedom).
    res = ols_poly(np.array([0.0, 1, 2, 3]), np.array([1.0, 3, 2, 5]), 1)
    assert res.coef == pytest.approx([1.1, 1.1], abs=1e-12)
    assert res.r2 == pytest.approx(1 - 2.7 / 8.75, abs=1e-12)
    assert res.adj_r2 == pytest.approx(1 - (2.7 / 8.75) * 3 / 2, abs=1e-12)
    f = 6.05 / 1.35
    assert res.f_stat == pytest.approx(f, rel=1e-12)
    assert res.f_pvalue == pytest.approx(1 - math.sqrt(f / (f + 2)), rel=1e-10)


def test_exact_parabola_vertex() -> None:
    x = np.array([0.0, 1, 2, 3, 4])
    res = fit_xy(x, 1 + 2 * x - x**2, bootstrap=0)
    assert res.quadratic.coef == pytest.approx([1.0, 2.0, -1.0], abs=1e-9)
    assert res.quadratic.vertex_x == pytest.approx(1.0, abs=1e-9)
    assert res.quadratic.vertex_y == pytest.approx(2.0, abs=1e-9)
    assert res.quadratic.opens == "down"
    assert res.quadratic.r2 == pytest.approx(1.0)
    assert res.quadratic.f_pvalue < 1e-20


@pytest.mark.parametrize("degree", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_statsmodels(degree: int, seed: int) -> None:
    x, y = _planted(seed=seed)
    ours = ols_poly(x, y, degree)
    X = sm.add_constant(np.column_stack([x**d for d in range(1, degree + 1)]))
    ref = sm.OLS(y, X).fit()
    assert ours.r2 == pytest.approx(ref.rsquared, rel=1e-9)
    assert ours.adj_r2 == pytest.approx(ref.rsquared_adj, rel=1e-9)
    assert ours.f_stat == pytest.approx(ref.fvalue, rel=1e-8)
    assert ours.f_pvalue == pytest.approx(ref.f_pvalue, rel=1e-8)
    assert ours.coef == pytest.approx(list(ref.params), rel=1e-7)
    assert ours.stderr == pytest.approx(list(ref.bse), rel=1e-6)
    assert ours.df_resid == ref.df_resid


def test_partial_f_and_spearman_match_references() -> None:
    x, y = _planted(seed=3)
    res = fit_xy(x, y, bootstrap=0)
    lin = sm.OLS(y, sm.add_constant(x)).fit()
    quad = sm.OLS(y, sm.add_constant(np.column_stack([x, x**2]))).fit()
    f, p, _ = quad.compare_f_test(lin)
    assert res.quadratic_vs_linear.f_stat == pytest.approx(f, rel=1e-8)
    assert res.quadratic_vs_linear.f_pvalue == pytest.approx(p, rel=1e-8)
    # Spearman: pandas' rank correlation, p from the t approximation by hand
    rho = pd.Series(x).corr(pd.Series(y), method="spearman")
    n = len(x)
    t = rho * math.sqrt((n - 2) / (1 - rho**2))
    assert res.spearman.rho == pytest.approx(rho, rel=1e-12)
    assert res.spearman.pvalue == pytest.approx(2 * stats.t.sf(abs(t), n - 2), rel=1e-9)


def test_planted_quadratic_found_and_bootstrap_seeded() -> None:
    x, y = _planted()
    res = fit_xy(x, y, bootstrap=500, seed=7)
    assert res.quadratic.r2 > 0.6 > res.linear.r2
    ci = res.quadratic.vertex_ci
    assert ci.low < 480 < ci.high
    assert ci.high - ci.low < 150
    again = fit_xy(x, y, bootstrap=500, seed=7).quadratic.vertex_ci
    other = fit_xy(x, y, bootstrap=500, seed=8).quadratic.vertex_ci
    assert again == ci
    assert other.low != ci.low


def test_large_x_offsets_stay_accurate() -> None:
    # x around 1e6 makes the raw Vandermonde rank-deficient in statsmodels; R² and the F-test
    # are shift-invariant, so the shifted fit must equal statsmodels' fit of the unshifted x.
    x, y = _planted(seed=4)
    a = ols_poly(x + 1e6, y, 2)
    ref = sm.OLS(y, sm.add_constant(np.column_stack([x, x**2]))).fit()
    assert a.r2 == pytest.approx(ref.rsquared, rel=1e-9)
    assert a.f_pvalue == pytest.approx(ref.f_pvalue, rel=1e-7)
    assert a.vertex_x == pytest.approx(ols_poly(x, y, 2).vertex_x + 1e6, rel=1e-9)


def test_bad_inputs(tmp_path) -> None:
    with pytest.raises(RlsaeError, match="at least 4 rows"):
        fit_xy([1, 2, 3], [1, 2, 3])
    with pytest.raises(RlsaeError, match="constant"):
        fit_xy([2, 2, 2, 2], [1, 2, 3, 4])
    with pytest.raises(RlsaeError, match="not found"):
        fit_table(tmp_path / "nope.csv", "a", "b")
    p = tmp_path / "t.csv"
    pd.DataFrame({"live": [1, 2, 3, 4, 5, np.nan], "ret": [1, 4, 9, 16, 25, 3]}).to_csv(
        p, index=False
    )
    with pytest.raises(RlsaeError, match="no column 'mean'"):
        fit_table(p, "live", "mean")
    res, _ = fit_table(p, "live", "ret", bootstrap=0)
    assert res.n == 5 and res.n_dropped == 1


def _cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def test_cli_json_and_offline_html(tmp_path, capsys) -> None:
    x, y = _planted()
    p = tmp_path / "agents.csv"
    pd.DataFrame({"agent": [f"a{i}" for i in range(len(x))], "live": x, "mean_return": y}).to_csv(
        p, index=False
    )
    html = tmp_path / "fit.html"
    code, out, _ = _cli(
        capsys,
        [
            "analyze",
            "fit",
            "--table",
            str(p),
            "--x",
            "live",
            "--y",
            "mean_return",
            "--json",
            "--bootstrap",
            "200",
            "--html",
            str(html),
        ],
    )
    assert code == 0
    res = json.loads(out)
    assert set(res) >= {"n", "linear", "quadratic", "spearman"}
    for key in ("r2", "f_pvalue", "coef"):
        assert key in res["linear"] and key in res["quadratic"]
    assert res["n"] == 24
    assert res["quadratic"]["vertex_x"] == pytest.approx(
        fit_xy(x, y, bootstrap=0).quadratic.vertex_x
    )
    text = html.read_text()
    assert re.search(r"<script[^>]*\bsrc=", text) is None  # nothing fetched from a CDN
    assert "Plotly.newPlot" in text and len(text) > 1_000_000  # plotly.js embedded


def test_cli_bad_input_one_line(tmp_path, capsys) -> None:
    p = tmp_path / "t.csv"
    pd.DataFrame({"live": [1, 2, 3], "ret": [1, 2, 3]}).to_csv(p, index=False)
    code, out, err = _cli(
        capsys, ["analyze", "fit", "--table", str(p), "--x", "live", "--y", "ret"]
    )
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "at least 4 rows" in err
    code, _, err = _cli(capsys, ["analyze", "fit", "--table", str(p), "--x", "dead", "--y", "ret"])
    assert code == 2 and "no column 'dead'" in err


def test_huge_x_fits_correctly_or_is_refused_in_one_line(tmp_path, capsys) -> None:
    # issue 18: x near 1e200 raised OverflowError in the rescaling of the coefficients
    x, y = _planted(seed=5)
    ref = fit_xy(x, y, bootstrap=0)
    for scale in (1e150, 1e-150):  # x**2 still representable: the same fit, rescaled
        res = fit_xy(x * scale, y, bootstrap=20)
        assert res.quadratic.r2 == pytest.approx(ref.quadratic.r2, rel=1e-9)
        assert res.quadratic.f_pvalue == pytest.approx(ref.quadratic.f_pvalue, rel=1e-7)
        assert res.quadratic.coef == pytest.approx(
            [c / scale**i for i, c in enumerate(ref.quadratic.coef)], rel=1e-7
        )
        assert res.quadratic.stderr == pytest.approx(
            [s / scale**i for i, s in enumerate(ref.quadratic.stderr)], rel=1e-6
        )
        assert res.quadratic.vertex_x == pytest.approx(ref.quadratic.vertex_x * scale, rel=1e-9)
    for bad in (x * 1e200, x * 1e-200):
        with pytest.raises(RlsaeError, match="leaves float64's range"):
            fit_xy(bad, y)
    with pytest.raises(RlsaeError, match="overflow float64; rescale y"):
        fit_xy(x, y * 1e200)
    p = tmp_path / "huge.csv"
    pd.DataFrame({"live": x * 1e200, "ret": y}).to_csv(p, index=False)
    code, out, err = _cli(
        capsys, ["analyze", "fit", "--table", str(p), "--x", "live", "--y", "ret"]
    )
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: x values up to ") and "Traceback" not in err


def test_exact_fit_of_four_agents_is_strict_json_on_the_cli(tmp_path, capsys) -> None:
    p = tmp_path / "four.csv"
    live = np.array([100.0, 200.0, 300.0, 400.0])
    pd.DataFrame({"live": live, "ret": 5 + 0.5 * live - 0.001 * live**2}).to_csv(p, index=False)
    argv = ["analyze", "fit", "--table", str(p), "--x", "live", "--y", "ret", "--json"]
    code, out, _ = _cli(capsys, argv)
    assert code == 0 and "Infinity" not in out and "NaN" not in out
    res = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))
    assert res["quadratic"]["f_stat"] is None and res["quadratic"]["exact"] is True
    assert res["quadratic"]["f_pvalue"] == 0.0 and res["format"] == "rlsae.fit"
    assert FitResult.from_json(res) == fit_table(p, "live", "ret", bootstrap=2000)[0]
    code, out, _ = _cli(capsys, argv[:-1])  # the readable summary names the exact fit
    assert code == 0 and "(exact fit)" in out


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--bootstrap", "-5", "--bootstrap must be a whole number >= 0, got -5"),
        ("--seed", "-1", "--seed must be a whole number >= 0, got -1"),
    ],
)
def test_negative_options_refused_before_any_work(tmp_path, capsys, option, value, message):
    # the table does not exist: the option is checked first, nothing is read or written
    html = tmp_path / "fit.html"
    argv = ["analyze", "fit", "--table", str(tmp_path / "missing.csv"), "--x", "a", "--y", "b"]
    code, out, err = _cli(capsys, [*argv, option, value, "--html", str(html)])
    assert code == 2 and out == "" and err == f"error: {message}\n"
    assert not html.exists()
    with pytest.raises(RlsaeError, match="--bootstrap must be"):
        fit_xy([1.0, 2, 3, 4], [1.0, 2, 3, 5], bootstrap=-5)
