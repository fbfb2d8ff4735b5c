import numpy as np
import pytest

from analysis.fitting import huber_objective
from analysis.laws import chinchilla_law, hoffmann_grid, metric_vs_loss, power_law, saturating_power_law


def test_hoffmann_grid_is_the_published_4500_starts():
    grid = hoffmann_grid()
    assert grid.shape == (4500, 5)
    log_e, log_a, log_b, alpha, beta = (np.unique(c) for c in grid.T)
    np.testing.assert_allclose(log_e, [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(log_a, [0, 5, 10, 15, 20, 25])
    np.testing.assert_allclose(log_b, log_a)
    np.testing.assert_allclose(alpha, [0, 0.5, 1, 1.5, 2])
    np.testing.assert_allclose(beta, alpha)
    assert chinchilla_law().names == ("log_E", "log_A", "log_B", "alpha", "beta")


def test_predictions_match_the_formulas():
    rng = np.random.default_rng(0)
    n, d, loss = rng.uniform(1e6, 1e9, 7), rng.uniform(1e8, 1e11, 7), rng.uniform(0.1, 3, 7)
    e, a, b, al, be = 0.5, 6.0, 7.0, 0.3, 0.35
    cases = [
        (
            chinchilla_law(),
            [e, a, b, al, be],
            {"N": n, "D": d},
            np.exp(e) + np.exp(a) / n**al + np.exp(b) / d**be,
        ),
        (saturating_power_law("C"), [e, a, al], {"C": n}, np.exp(e) + np.exp(a) * n**-al),
        (power_law("x"), [a, -al], {"x": d}, np.exp(a) * d**al),
        (metric_vs_loss("loss"), [e, a, 2.5], {"loss": loss}, np.exp(e) + np.exp(a) * loss**2.5),
    ]
    for law, theta, inputs, expected in cases:
        np.testing.assert_allclose(law.predict(np.array(theta), inputs), expected, rtol=1e-12)
        assert len(law.labels) == len(theta) == len(law.lower) == len(law.upper)


def test_default_starts_put_the_asymptote_below_the_data():
    y = np.array([2.0, 2.5, 3.0])
    starts = saturating_power_law().starts(y)
    assert np.exp(starts[:, 0]).max() < y.min()
    assert len(starts) == 5 * 6 * 5


@pytest.mark.parametrize(
    "law, inputs",
    [
        (chinchilla_law(), ("N", "D")),
        (saturating_power_law("x"), ("x",)),
        (power_law("x"), ("x",)),
        (metric_vs_loss("x"), ("x",)),
    ],
)
def test_huber_gradient_matches_finite_differences(law, inputs):
    rng = np.random.default_rng(1)
    data = {name: rng.uniform(1e2, 1e6, 40) for name in inputs}
    theta = np.column_stack([rng.uniform(lo, hi, 6) for lo, hi in law_ranges(law)])
    log_y = law.log_predict(theta[0], data) + rng.normal(0, 0.05, 40)  # residuals either side of delta
    weights = rng.uniform(0.5, 2.0, (6, 40))
    fun_grad = huber_objective(law.features(data), log_y, weights, delta=0.03)
    rows = np.arange(6)
    _, grad = fun_grad(theta, rows)
    h = 1e-6
    for p in range(theta.shape[1]):
        step = np.zeros_like(theta)
        step[:, p] = h
        numeric = (fun_grad(theta + step, rows)[0] - fun_grad(theta - step, rows)[0]) / (2 * h)
        np.testing.assert_allclose(grad[:, p], numeric, rtol=1e-5, atol=1e-8)


def law_ranges(law):
    """Parameter ranges that keep every term of the law relevant for inputs in 1e2..1e6."""
    ranges = {"log_E": (-1, 1), "log_A": (1, 4), "log_B": (1, 4), "alpha": (0.2, 0.6), "beta": (0.2, 0.6)}
    ranges["k"] = (0.2, 0.6)
    return [ranges.get(name, (-0.5, 0.5)) for name in law.names]
