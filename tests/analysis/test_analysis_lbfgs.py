import numpy as np
from scipy.optimize import minimize, rosen, rosen_der

from analysis.lbfgs import GRADIENT, LINE_SEARCH, minimize_batched


def quadratic(centres, scales):
    def fun_grad(x, rows):
        diff = x - centres[rows]
        return 0.5 * np.sum(scales[rows] * diff**2, axis=1), scales[rows] * diff

    return fun_grad


def test_independent_quadratics_with_bounds():
    rng = np.random.default_rng(0)
    centres = rng.uniform(-3, 3, (50, 4))
    scales = rng.uniform(0.01, 100, (50, 4))  # badly scaled, differently per problem
    lower, upper = np.full(4, -2.0), np.full(4, 2.0)
    res = minimize_batched(quadratic(centres, scales), rng.uniform(-2, 2, (50, 4)), lower, upper, ftol=1e-14)
    np.testing.assert_allclose(res.x, np.clip(centres, lower, upper), atol=1e-5)
    assert res.converged.all()


def test_rosenbrock_matches_scipy():
    starts = np.array([[-1.2, 1.0], [2.0, -1.5], [0.0, 0.0], [-2.0, 2.0]])

    def fun_grad(x, rows):
        a, b = x[:, 0], x[:, 1]
        grad = np.column_stack([-400 * a * (b - a**2) - 2 * (1 - a), 200 * (b - a**2)])
        return 100 * (b - a**2) ** 2 + (1 - a) ** 2, grad

    lower, upper = np.full(2, -5.0), np.full(2, 5.0)
    res = minimize_batched(fun_grad, starts, lower, upper, gtol=1e-9, ftol=1e-14)
    for start, x in zip(starts, res.x, strict=True):
        ref = minimize(rosen, start, jac=rosen_der, method="L-BFGS-B", bounds=[(-5, 5)] * 2)
        np.testing.assert_allclose(x, ref.x, atol=1e-4)
        np.testing.assert_allclose(x, [1.0, 1.0], atol=1e-4)


def test_non_finite_start_is_reported_not_fatal():
    def fun_grad(x, rows):
        f = np.where(x[:, 0] > 5, np.inf, np.sum(x**2, axis=1))
        return f, 2 * x

    res = minimize_batched(fun_grad, np.array([[1.0, 1.0], [6.0, 0.0]]), np.full(2, -10.0), np.full(2, 10.0))
    assert res.status[1] == LINE_SEARCH and not res.converged[1]
    assert res.status[0] == GRADIENT or res.converged[0]
    np.testing.assert_allclose(res.x[0], 0, atol=1e-6)
