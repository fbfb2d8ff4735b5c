"""Batched, box-constrained L-BFGS: many independent minimisations advanced together in numpy.

Why not scipy: ``scipy.optimize.minimize`` runs one problem at a time and calls back into Python
for every function evaluation. A scaling-law objective over a few hundred points costs microseconds
of arithmetic, so a 4,500-start grid is dominated by ~10^6 Python round trips (minutes). Stacking
all starts into one big L-BFGS-B problem with a block-separable objective removes the round trips
but changes the algorithm: the starts would share one line-search step, one curvature history
(the quasi-Newton matrix of the stacked vector is not block diagonal) and one global stopping test,
so each start no longer follows its own L-BFGS path and badly scaled starts stall the others.
Here every problem keeps its own history, step length and stopping test; only the arithmetic is
shared, as array operations over the batch.

The method is projected L-BFGS: variables at a bound whose gradient points outwards are held
fixed, the two-loop recursion gives the direction on the free variables, and a backtracking
(Armijo) line search with quadratic interpolation on the projected path picks the step. Curvature
pairs with ``s.y <= 0`` are skipped, and a problem whose L-BFGS step fails retries once with
steepest descent and an empty memory. Finished problems leave the batch, so later iterations
work on contiguous arrays of the problems still running.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Stopping reasons, one per problem.
GRADIENT = 0  # projected gradient below gtol
FUNCTION = 1  # relative decrease of f below ftol
MAX_ITER = 2  # iteration limit reached
LINE_SEARCH = 3  # no decrease found along the steepest-descent direction either
STATUS_TEXT = {
    GRADIENT: "projected gradient below tolerance",
    FUNCTION: "relative decrease below tolerance",
    MAX_ITER: "iteration limit reached",
    LINE_SEARCH: "line search failed",
}

FunGrad = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class BatchResult:
    """Final point, value and stopping reason of each problem in a batch."""

    x: np.ndarray  # (K, P)
    fun: np.ndarray  # (K,)
    status: np.ndarray  # (K,) one of GRADIENT, FUNCTION, MAX_ITER, LINE_SEARCH
    n_iter: np.ndarray  # (K,)

    @property
    def converged(self) -> np.ndarray:
        return self.status <= FUNCTION


class _State:
    """Position, value, gradient and curvature memory of the problems still running (row i is
    problem ``ids[i]``). Memory slots are shared ring positions: every iteration writes one slot
    for every problem, an empty pair (rho = 0) where the update was skipped."""

    def __init__(self, ids, x, f, g, memory):
        k, p = x.shape
        self.ids, self.x, self.f, self.g = ids, x, f, g
        self.s = np.zeros((k, memory, p))
        self.y = np.zeros((k, memory, p))
        self.rho = np.zeros((k, memory))
        self.gamma = np.ones(k)

    def keep(self, mask: np.ndarray) -> None:
        for name in ("ids", "x", "f", "g", "s", "y", "rho", "gamma"):
            setattr(self, name, getattr(self, name)[mask])

    def forget(self, mask: np.ndarray) -> None:
        self.rho[mask] = 0.0
        self.gamma[mask] = 1.0


def minimize_batched(
    fun_grad: FunGrad,
    x0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    memory: int = 10,
    max_iter: int = 500,
    gtol: float = 1e-10,
    ftol: float = 1e-7,
    c1: float = 1e-4,
    max_backtracks: int = 30,
) -> BatchResult:
    """Minimise K independent problems from the rows of ``x0`` (K, P) within ``[lower, upper]``.

    ``fun_grad(x, rows)`` returns the values (k,) and gradients (k, P) of problems ``rows`` (indices
    into the batch) at points ``x`` (k, P). A problem stops when its largest projected-gradient
    component is below ``gtol`` or one step lowers f by less than ``ftol * |f|``.
    """
    x = np.clip(np.array(x0, dtype=float), lower, upper)
    k_total = len(x)
    f, g = fun_grad(x, np.arange(k_total))
    status = np.full(k_total, MAX_ITER)
    n_iter = np.zeros(k_total, dtype=int)
    finite = np.isfinite(f)
    status[~finite] = LINE_SEARCH
    st = _State(np.flatnonzero(finite), x[finite], f[finite], g[finite], memory)

    def finish(mask: np.ndarray, code: int) -> None:
        if mask.any():
            done = st.ids[mask]
            x[done], f[done], status[done] = st.x[mask], st.f[mask], code
            st.keep(~mask)

    search = functools.partial(_line_search, fun_grad, lower=lower, upper=upper, c1=c1, tries=max_backtracks)
    for it in range(max_iter):
        finish(np.abs(np.clip(st.x - st.g, lower, upper) - st.x).max(axis=1) <= gtol, GRADIENT)
        if st.ids.size == 0:
            break
        n_iter[st.ids] += 1
        free = ~(((st.x <= lower) & (st.g > 0)) | ((st.x >= upper) & (st.g < 0)))
        newest = (it - 1) % memory
        d = -_two_loop(st.g * free, st, newest) * free
        slope = np.einsum("kp,kp->k", st.g, d)
        steep = ~(slope < 0)  # not a descent direction: steepest descent with an empty memory
        d[steep] = -(st.g * free)[steep]
        st.forget(steep)
        step = np.where(st.rho.any(axis=1), 1.0, _unit(d))
        xn, fn, gn, ok = search(st.ids, st.x, st.f, st.g, d, step)
        retry = ~ok & st.rho.any(axis=1)
        if retry.any():
            st.forget(retry)
            dr = -(st.g * free)[retry]
            xn[retry], fn[retry], gn[retry], ok[retry] = search(
                st.ids[retry], st.x[retry], st.f[retry], st.g[retry], dr, _unit(dr)
            )

        s, y = xn - st.x, gn - st.g
        sy, yy = np.einsum("kp,kp->k", s, y), np.einsum("kp,kp->k", y, y)
        use = ok & (sy > 1e-12 * yy)
        slot = it % memory
        st.s[:, slot] = s * use[:, None]
        st.y[:, slot] = y * use[:, None]
        st.rho[:, slot] = np.where(use, 1.0 / np.where(use, sy, 1.0), 0.0)
        st.gamma = np.where(use, sy / np.where(use, yy, 1.0), st.gamma)
        flat = ok & (st.f - fn <= ftol * np.maximum(np.maximum(np.abs(st.f), np.abs(fn)), 1e-300))
        st.x, st.f, st.g = xn, fn, gn  # unchanged where the line search failed
        finish(~ok, LINE_SEARCH)
        finish(flat[ok], FUNCTION)
    finish(np.ones(len(st.ids), bool), MAX_ITER)
    return BatchResult(x=x, fun=f, status=status, n_iter=n_iter)


def _unit(d: np.ndarray) -> np.ndarray:
    """Step length that makes a first move (no curvature memory yet) at most unit length."""
    return 1.0 / np.maximum(np.linalg.norm(d, axis=1), 1.0)


def _line_search(fun_grad, ids, x, f, g, d, t, *, lower, upper, c1, tries):
    """Backtracking from steps ``t`` on the projected path ``clip(x + t d)`` until the Armijo
    condition holds. Each failed step is replaced by the minimiser of the quadratic through f(0),
    f'(0) and f(t), kept within [0.1 t, 0.5 t]."""
    xn, fn, gn, ok = x.copy(), f.copy(), g.copy(), np.zeros(len(x), bool)
    t = np.array(t, dtype=float)
    slope = np.einsum("kp,kp->k", g, d)
    todo = np.arange(len(x))
    for _ in range(tries):
        xt = np.clip(x[todo] + t[todo, None] * d[todo], lower, upper)
        ft, gt = fun_grad(xt, ids[todo])
        decrease = np.einsum("kp,kp->k", g[todo], xt - x[todo])
        good = np.isfinite(ft) & (decrease < 0) & (ft <= f[todo] + c1 * decrease)
        done = todo[good]
        xn[done], fn[done], gn[done], ok[done] = xt[good], ft[good], gt[good], True
        todo, ft = todo[~good], ft[~good]
        if todo.size == 0:
            break
        tt, sl = t[todo], slope[todo]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            quad = -sl * tt**2 / (2.0 * (ft - f[todo] - sl * tt))
        t[todo] = np.clip(np.where(np.isfinite(quad), quad, 0.1 * tt), 0.1 * tt, 0.5 * tt)
    return xn, fn, gn, ok


def _two_loop(q: np.ndarray, st: _State, newest: int) -> np.ndarray:
    """Apply each problem's L-BFGS inverse-Hessian estimate to ``q``; empty slots have rho = 0."""
    memory = st.rho.shape[1]
    order = [(newest - j) % memory for j in range(memory)]
    q = q.copy()
    alpha = np.zeros_like(st.rho)
    for j in order:
        alpha[:, j] = st.rho[:, j] * np.einsum("kp,kp->k", st.s[:, j], q)
        q -= alpha[:, j, None] * st.y[:, j]
    r = st.gamma[:, None] * q
    for j in reversed(order):
        beta = st.rho[:, j] * np.einsum("kp,kp->k", st.y[:, j], r)
        r += st.s[:, j] * (alpha[:, j] - beta)[:, None]
    return r
