"""Hyperparameter optima as laws (Yin et al. 2024, DeepSeek LLM, Porian et al. 2024), torch-free.

For each (N, D) point of a sweep, the loss surface in log learning rate (and log batch size) is fitted
with a quadratic; its minimum is the optimum, with bootstrap intervals (runs resampled within the
point). The optima are then fitted as power laws eta_opt = c N^a D^b (and B_opt likewise) by least
squares in log space, with intervals from resampling the optima's own bootstrap replicates.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.bootstrap import Interval


def quadratic_minimum(x: np.ndarray, y: np.ndarray, z: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """The minimum of a least-squares quadratic of ``y`` in ``x`` (and ``z``): (its location, whether
    the fit is convex). A concave or flat fit returns the best swept point instead."""
    if z is None:
        c2, c1, _ = np.polyfit(x, y, 2)
        if c2 <= 0:
            return np.array([x[np.argmin(y)]]), False
        return np.array([-c1 / (2 * c2)]), True
    design = np.stack([np.ones_like(x), x, z, x**2, z**2, x * z], axis=1)
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    hessian = np.array([[2 * coef[3], coef[5]], [coef[5], 2 * coef[4]]])
    if np.any(np.linalg.eigvalsh(hessian) <= 0):
        best = np.argmin(y)
        return np.array([x[best], z[best]]), False
    return np.linalg.solve(hessian, -coef[1:3]), True


@dataclass(frozen=True)
class Optimum:
    """The optimal learning rate (and batch size) of one (N, D) point, with intervals."""

    N: float
    D: float
    lr: Interval
    batch_size: Interval | None
    inside: bool  # the optimum (and its interval) lies inside the swept range
    points: int
    replicates: np.ndarray  # bootstrap replicates of (log lr*, [log B*])


def _interval(values: np.ndarray, estimate: float, level: float) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), float(np.std(values)), level)


def fit_optima(
    table: pd.DataFrame,
    N: str = "N",
    D: str = "D",
    y: str = "loss",
    lr: str = "lr",
    batch_size: str | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> list[Optimum]:
    """Per (N, D) group of ``table``: the loss-minimising learning rate (and batch size), from a
    quadratic in their logs; warns, naming the point and the fix, when an optimum lies outside the
    swept range."""
    needed = 6 if batch_size else 3
    rng = np.random.default_rng(seed)
    optima = []
    for (n, d), group in table.groupby([N, D], sort=True):
        x = np.log(group[lr].to_numpy(float))
        z = np.log(group[batch_size].to_numpy(float)) if batch_size else None
        loss = group[y].to_numpy(float)
        if len(np.unique(x)) < 3 or len(group) < needed:
            raise ValueError(
                f"N={n:g}, D={d:g}: {len(group)} runs over {len(np.unique(x))} learning rates; a quadratic "
                f"optimum needs at least 3 learning rates ({needed} runs with batch sizes): sweep more"
            )
        best, convex = quadratic_minimum(x, loss, z)
        replicates = []
        for _ in range(n_boot):
            pick = rng.integers(0, len(group), len(group))
            if len(np.unique(x[pick])) < 3:
                continue
            replicates.append(quadratic_minimum(x[pick], loss[pick], None if z is None else z[pick])[0])
        reps = np.array(replicates)
        lr_interval = _interval(np.exp(reps[:, 0]), float(np.exp(best[0])), level)
        bs_interval = _interval(np.exp(reps[:, 1]), float(np.exp(best[1])), level) if z is not None else None
        inside = convex and x.min() <= np.log(lr_interval.low) and np.log(lr_interval.high) <= x.max()
        if z is not None:
            inside = inside and z.min() <= np.log(bs_interval.low) and np.log(bs_interval.high) <= z.max()
        if not inside:
            warnings.warn(
                f"N={n:g}, D={d:g}: the optimal learning rate {lr_interval.estimate:.3g} "
                f"[{lr_interval.low:.3g}, {lr_interval.high:.3g}] is not inside the swept "
                f"{np.exp(x.min()):.3g}..{np.exp(x.max()):.3g}: extend the sweep past that edge",
                stacklevel=2,
            )
        optima.append(Optimum(float(n), float(d), lr_interval, bs_interval, bool(inside), len(group), reps))
    return optima


@dataclass(frozen=True)
class OptimumLaw:
    """``value_opt = c N^a D^b`` fitted to the optima (``b`` None when D was not varied)."""

    c: Interval
    a: Interval
    b: Interval | None

    def predict(self, N: float, D: float) -> float:
        return self.c.estimate * N**self.a.estimate * (D**self.b.estimate if self.b else 1.0)


def fit_optimum_law(
    optima: list[Optimum], which: str = "lr", level: float = 0.95, seed: int = 0
) -> OptimumLaw:
    """The power law of the optimal ``which`` ("lr" or "batch_size") in N and D; intervals from
    refitting to the optima's bootstrap replicates, one drawn per point."""
    column = 0 if which == "lr" else 1
    log_n = np.log([o.N for o in optima])
    log_d = np.log([o.D for o in optima])
    vary_d = len(np.unique(log_d)) > 1
    design = np.stack([np.ones_like(log_n), log_n, *([log_d] if vary_d else [])], axis=1)
    if len(np.unique(log_n)) < 2 or len(optima) < design.shape[1] + 1:
        raise ValueError(
            f"{len(optima)} optima over {len(np.unique(log_n))} sizes: a law of the optimum needs at least "
            f"{design.shape[1] + 1} points and 2 sizes (3 with D varied): sweep more sizes"
        )
    value = np.log([(o.lr if which == "lr" else o.batch_size).estimate for o in optima])
    estimate = np.linalg.lstsq(design, value, rcond=None)[0]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(min(len(o.replicates) for o in optima)):
        sample = np.array([o.replicates[rng.integers(len(o.replicates)), column] for o in optima])
        draws.append(np.linalg.lstsq(design, sample, rcond=None)[0])
    draws = np.array(draws)
    c = _interval(np.exp(draws[:, 0]), float(np.exp(estimate[0])), level)
    a = _interval(draws[:, 1], float(estimate[1]), level)
    b = _interval(draws[:, 2], float(estimate[2]), level) if vary_d else None
    return OptimumLaw(c, a, b)
