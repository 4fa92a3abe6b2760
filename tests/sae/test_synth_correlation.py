"""``acts synth`` with correlated groups of planted features: the empirical correlation of the
generated activations against the correlation computed another way (the Gaussian copula's
bivariate normal orthant probabilities, by scipy), the marginals kept, other pairs independent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import multivariate_normal, norm

from rlsae.errors import RlsaeError
from rlsae.sae.synth import SynthConfig, correlated_features, firing_probabilities, synthesize


def _dense_acts(path, rows: int, n: int) -> np.ndarray:
    t = load_file(str(path))
    a = torch.zeros(rows, n, dtype=torch.float64)
    a[t["act_rows"], t["act_features"]] = t["act_values"].double()
    return a.numpy()


def _expected_corr(p_i: float, p_j: float, c: float) -> float:
    """corr(a_i, a_j) for a = F * m, m ~ U(0.5, 1.5) independent of the firing F: E m = 1 and
    E m^2 = 13/12, so cov = P(both fire) - p_i p_j and var = 13/12 p - p^2."""
    t_i, t_j = norm.ppf(1 - p_i), norm.ppf(1 - p_j)
    both = multivariate_normal(mean=[0, 0], cov=[[1, c], [c, 1]]).cdf([-t_i, -t_j])
    var_i, var_j = 13 / 12 * p_i - p_i**2, 13 / 12 * p_j - p_j**2
    return float((both - p_i * p_j) / np.sqrt(var_i * var_j))


def test_correlated_groups_have_the_copula_correlation_and_keep_their_marginals(tmp_path):
    cfg = SynthConfig(rows=60_000, d_in=16, n_features=40, mean_active=6.0, firing="zipf",
                      parents=2, children=3, correlated_groups=3, group_size=3,
                      correlation=0.6, seed=5)  # fmt: skip
    truth = synthesize(cfg, tmp_path / "s")
    a = _dense_acts(truth, cfg.rows, cfg.n_features)
    p = firing_probabilities(cfg)[0].double().numpy()
    groups = correlated_features(cfg).tolist()
    assert groups == [[8, 9, 10], [11, 12, 13], [14, 15, 16]]  # after 2 parents x (1 + 3)
    emp = np.corrcoef(a, rowvar=False)
    in_group = {(i, j) for grp in groups for i in grp for j in grp if i != j}
    for i, j in in_group:
        assert emp[i, j] == pytest.approx(_expected_corr(p[i], p[j], 0.6), abs=0.02), (i, j)
        assert emp[i, j] > 0.15
    free = [i for i in range(cfg.n_features) if i >= 2 + 2 * 3]  # not in the hierarchy
    others = [emp[i, j] for i in free for j in free if i < j and (i, j) not in in_group]
    assert max(abs(v) for v in others) < 0.025
    # each grouped feature keeps its firing probability
    rate = (a > 0).mean(0)
    for grp in groups:
        for i in grp:
            assert rate[i] == pytest.approx(p[i], abs=4 * np.sqrt(p[i] * (1 - p[i]) / cfg.rows))


def test_no_groups_draws_nothing_more():
    """Without groups no extra random numbers are drawn: the stores are those of before."""
    assert correlated_features(SynthConfig()) is None


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(correlated_groups=1, correlation=1.0), "correlation: must be below 1"),
        (dict(correlated_groups=1, correlation=-0.1), "correlation"),
        (dict(correlated_groups=1, group_size=1), "group_size"),
        (dict(correlated_groups=-1), "correlated_groups"),
        (dict(n_features=10, correlated_groups=6), "need 12 features, more than n_features=10"),
    ],
)
def test_bad_correlation_settings_one_line(tmp_path, kw, msg):
    with pytest.raises(RlsaeError) as e:
        synthesize(SynthConfig(rows=100, **kw), tmp_path / "s")
    assert msg in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "s").exists()


def test_cli_synth_correlated_groups(tmp_path, run_cli):
    args = ["acts", "synth", "--rows", 2000, "--d-in", 8, "--n-features", 16]
    code, _, err = run_cli(*args, "--out", tmp_path / "s", "--correlated-groups", 2,
                           "--group-size", 4, "--correlation", 0.8)  # fmt: skip
    assert code == 0, err
    a = _dense_acts(tmp_path / "s" / "ground_truth.safetensors", 2000, 16)
    emp = np.corrcoef(a, rowvar=False)
    assert emp[0, 1] > 0.3 and emp[4, 7] > 0.3  # within the two groups
    code, out, err = run_cli(*args, "--out", tmp_path / "t", "--correlation", 0.8)
    assert code == 2 and "correlation: a setting of correlated groups" in err
    assert not (tmp_path / "t").exists()
