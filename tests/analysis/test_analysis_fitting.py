import functools

import numpy as np
import pytest

from analysis import fitting
from analysis.errors import FitError
from analysis.fitting import fit
from analysis.laws import chinchilla_law, metric_vs_loss, power_law, saturating_power_law
from analysis.lbfgs import minimize_batched


def noisy(y, sigma, seed):
    return y * np.exp(sigma * np.random.default_rng(seed).standard_normal(len(y)))


def test_recovers_a_saturating_power_law_in_compute():
    c = np.geomspace(1e15, 1e21, 40)
    y = noisy(1.8 + 300.0 * c**-0.15, 0.002, 0)
    est = fit(saturating_power_law("C"), {"C": c}, y).estimates
    assert est["E"] == pytest.approx(1.8, rel=0.03)
    assert est["alpha"] == pytest.approx(0.15, abs=0.01)
    assert est["A"] == pytest.approx(300, rel=0.3)


def test_recovers_a_pure_power_law():
    x = np.geomspace(1e3, 1e9, 30)
    y = noisy(50.0 * x**-0.3, 0.01, 1)
    res = fit(power_law("x"), {"x": x}, y)
    assert res.estimates["alpha"] == pytest.approx(0.3, abs=0.005)
    assert res.estimates["A"] == pytest.approx(50, rel=0.05)
    assert res.converged and res.r2_log > 0.99


def test_recovers_the_chinchilla_law(truth):
    rng = np.random.default_rng(2)
    n = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 150))
    d = np.exp(rng.uniform(np.log(1e8), np.log(1e12), 150))
    y = truth["E"] + truth["A"] / n ** truth["alpha"] + truth["B"] / d ** truth["beta"]
    res = fit(chinchilla_law(), {"N": n, "D": d}, noisy(y, 0.003, 3))
    est = res.estimates
    assert est["alpha"] == pytest.approx(truth["alpha"], abs=0.02)
    assert est["beta"] == pytest.approx(truth["beta"], abs=0.02)
    assert est["E"] == pytest.approx(truth["E"], abs=0.05)
    assert est["a"] == pytest.approx(truth["beta"] / (truth["alpha"] + truth["beta"]), abs=0.02)
    assert res.rmse_log < 0.005 and res.n_starts == 4500 and not res.warnings


def test_recovers_metric_vs_loss():
    loss = np.linspace(0.08, 0.3, 25)
    fvd = noisy(60.0 + 2e4 * loss**3.0, 0.01, 4)
    est = fit(metric_vs_loss("loss"), {"loss": loss}, fvd).estimates
    assert est["k"] == pytest.approx(3.0, abs=0.3)
    assert est["E"] == pytest.approx(60, rel=0.25)


def test_zero_weight_removes_an_outlier():
    c = np.geomspace(1e15, 1e21, 30)
    y = noisy(1.8 + 300.0 * c**-0.15, 0.002, 5)
    y_bad = y.copy()
    y_bad[10] *= 3
    w = np.ones(30)
    w[10] = 0
    clean = fit(saturating_power_law("C"), {"C": np.delete(c, 10)}, np.delete(y, 10)).estimates
    weighted = fit(saturating_power_law("C"), {"C": c}, y_bad, weights=w).estimates
    for k in clean:
        assert weighted[k] == pytest.approx(clean[k], rel=1e-3)


def test_too_few_points_is_an_error():
    with pytest.raises(FitError, match="need at least 6"):
        fit(chinchilla_law(), {"N": np.arange(1.0, 6.0), "D": np.arange(2.0, 7.0)}, np.ones(5) * 2)


def test_constant_input_is_an_error():
    with pytest.raises(FitError, match="D takes a single value"):
        fit(chinchilla_law(), {"N": np.geomspace(1e6, 1e9, 10), "D": np.full(10, 1e9)}, np.linspace(3, 2, 10))


def test_parameter_on_a_bound_is_a_warning():
    # y grows with x: a decreasing power law can only put alpha on its lower bound 0.
    x = np.geomspace(1, 1e4, 20)
    res = fit(saturating_power_law("x"), {"x": x}, 1 + 0.1 * np.log(x))
    assert any("alpha sits on its lower bound" in w for w in res.warnings)


def test_a_best_start_that_did_not_converge_is_a_warning(monkeypatch):
    monkeypatch.setattr(fitting, "minimize_batched", functools.partial(minimize_batched, max_iter=2))
    c = np.geomspace(1e15, 1e21, 30)
    res = fit(saturating_power_law("C"), {"C": c}, 1.8 + 300.0 * c**-0.15)
    assert not res.converged and res.status == "iteration limit reached"
    assert any("stopped without converging" in w for w in res.warnings)
