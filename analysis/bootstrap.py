"""Bootstrap intervals: resample runs with replacement, refit, read off percentiles.

A resample is a vector of run multiplicities; a point's weight in the refit is the multiplicity
of its run, so all replicates (times a few starts each) run as one batched minimisation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from analysis.fitting import Fit, solve

# Replicates refitted together; bounds the (replicates * starts, points) weight and response arrays.
_REPLICATES_PER_BATCH = 256


@dataclass(frozen=True)
class Interval:
    """Point estimate, percentile interval at ``level`` and bootstrap standard error."""

    estimate: float
    low: float
    high: float
    se: float
    level: float

    def as_dict(self) -> dict[str, float]:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "se": self.se,
            "level": self.level,
        }


def resample_runs(runs: np.ndarray, n_boot: int, seed: int = 0, size: int | None = None) -> np.ndarray:
    """Multiplicities (n_boot, size) of the distinct run codes in ``runs`` drawn with replacement.

    ``size`` (default: largest code + 1) covers every run code of the source table; codes absent
    from ``runs`` get 0, so one matrix serves every table built from that source.
    """
    present = np.unique(runs)
    rng = np.random.default_rng(seed)
    drawn = rng.multinomial(len(present), np.full(len(present), 1.0 / len(present)), size=n_boot)
    counts = np.zeros((n_boot, size or int(present.max()) + 1), dtype=np.int64)
    counts[:, present] = drawn
    return counts


def interval(samples: np.ndarray, estimate: float, level: float) -> Interval:
    """Percentile interval of the finite ``samples`` around ``estimate``."""
    ok = np.asarray(samples, float)
    ok = ok[np.isfinite(ok)]
    if ok.size < 2:
        nan = float("nan")
        return Interval(float(estimate), nan, nan, nan, level)
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(ok, [tail, 100.0 - tail])
    return Interval(float(estimate), float(low), float(high), float(np.std(ok, ddof=1)), level)


@dataclass(frozen=True)
class Bootstrap:
    """Bootstrap samples of every reported parameter and derived quantity (NaN: failed replicate)."""

    samples: dict[str, np.ndarray]
    level: float
    n_failed: int

    @property
    def n_boot(self) -> int:
        return len(next(iter(self.samples.values())))

    def intervals(self, estimates: Mapping[str, float]) -> dict[str, Interval]:
        return {
            k: interval(self.samples[k], v, self.level) for k, v in estimates.items() if k in self.samples
        }

    def warnings(self, what: str) -> list[str]:
        if self.n_failed <= 0.05 * self.n_boot:
            return []
        return [
            f"{what}: {self.n_failed} of {self.n_boot} bootstrap refits did not converge and were left out, "
            "so the intervals may be too narrow. Fix: add runs, or check the fit's other warnings."
        ]


def refit_replicates(
    fit: Fit, inputs: Mapping[str, np.ndarray], y: np.ndarray, point_weights: np.ndarray
) -> np.ndarray:
    """Refit ``fit.law`` once per row of ``point_weights`` (R, n) from ``fit.restarts``.

    ``y`` is the response shared by every replicate (n,) or one per replicate (R, n), as when each
    resample has its own envelope. Replicates are solved in batches, each batch by one call of
    ``solve`` with a row of weights (and of responses) per problem. Returns (R, parameters) in the
    law's own parameters, NaN rows for failed refits (no converged start, or no more weighted points
    than parameters).
    """
    y = np.asarray(y, float)
    point_weights = np.asarray(point_weights, float)
    starts, n_par = fit.restarts, len(fit.law.params)
    out = np.full((len(point_weights), n_par), np.nan)
    for lo in range(0, len(point_weights), _REPLICATES_PER_BATCH):
        w = point_weights[lo : lo + _REPLICATES_PER_BATCH]
        k = len(w)
        response = np.repeat(y[lo : lo + k], len(starts), axis=0) if y.ndim == 2 else y
        res = solve(
            fit.law, inputs, response, np.tile(starts, (k, 1)), np.repeat(w, len(starts), axis=0), fit.delta
        )
        fun = np.where(np.isfinite(res.fun), res.fun, np.inf).reshape(k, len(starts))
        best = fun.argmin(axis=1) + len(starts) * np.arange(k)
        ok = res.converged[best] & np.isfinite(res.fun[best]) & ((w > 0).sum(axis=1) > n_par)
        out[lo : lo + k][ok] = res.x[best][ok]
    return out


def bootstrap_fit(
    fit: Fit,
    inputs: Mapping[str, np.ndarray],
    y: np.ndarray,
    run: np.ndarray,
    counts: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    level: float = 0.95,
) -> Bootstrap:
    """Refit ``fit.law`` on each resample of runs (rows of ``counts``): a point's weight is its run's
    multiplicity (:func:`refit_replicates`). ``y`` is the response (n,), or one per resample (R, n).

    Each replicate runs from ``fit.restarts``: a few grid starts whose runs reached the best optimum
    on the full data. Not from that optimum itself: the Huber objective with a small delta is nearly
    piecewise linear, and a run started at the old optimum stalls there instead of moving to the
    resample's optimum, which would shrink the intervals.
    """
    base = np.ones(np.shape(y)[-1]) if weights is None else np.asarray(weights, float)
    thetas = refit_replicates(fit, inputs, y, counts[:, run] * base)
    failed = int((~np.isfinite(thetas).all(axis=1)).sum())
    samples = fit.law.reported(thetas)
    return Bootstrap({k: np.asarray(v, float) for k, v in samples.items()}, level, failed)
