"""Two families of runs compared by their loss-vs-compute envelopes (e.g. U-Net against DiT).

Per family: the lower envelope of the runs' loss-vs-compute curves (the lowest loss over runs at every
evaluated compute), fitted with ``L(C) = E + A C^-alpha`` and bootstrapped over runs, each resample
rebuilding its own envelope; then the compute at which the two fitted curves last cross, with a
bootstrap interval over pairs of replicates. Works on any table of (run_id, C, y) points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.bootstrap import Interval, interval, refit_replicates, resample_runs
from analysis.fitting import Fit, fit
from analysis.frontier import curves_at
from analysis.laws import Law, saturating_power_law


@dataclass(frozen=True)
class FamilyFit:
    """A family's loss-vs-compute envelope, its fitted law and the law's bootstrap replicates."""

    name: str
    curves: pd.DataFrame  # the evaluation points used: run_id, preset, C, y
    compute: np.ndarray  # envelope compute values
    loss: np.ndarray  # lowest loss over runs there
    fit: Fit
    replicates: np.ndarray  # (n_boot, parameters), NaN rows: failed refits
    intervals: dict[str, Interval]

    @property
    def n_failed(self) -> int:
        return int((~np.isfinite(self.replicates).all(axis=1)).sum())

    @property
    def warnings(self) -> list[str]:
        out = [f"{self.name}: {w}" for w in self.fit.warnings]
        if self.n_failed > 0.05 * len(self.replicates):
            out.append(
                f"{self.name}: {self.n_failed} of {len(self.replicates)} bootstrap refits failed (too few "
                "envelope points or no convergence), so its intervals may be too narrow. Fix: add runs."
            )
        return out


def fit_family(name: str, curves: pd.DataFrame, *, n_boot: int, seed: int, level: float) -> FamilyFit:
    """Fit ``L(C) = E + A C^-alpha`` to the lower envelope of the family's curves (the lowest loss over
    runs at every evaluated compute); bootstrap over runs, rebuilding each resample's envelope."""
    law = saturating_power_law("C")
    log_c = np.log(np.unique(curves["C"]))
    (grid,) = curves_at(curves, "run_id", ("y",), log_c)
    grid = np.where(np.isnan(grid), np.inf, grid)  # a run absent at a compute never wins there
    compute, loss = np.exp(log_c), grid.min(axis=0)
    best = fit(law, {"C": compute}, loss)
    counts = resample_runs(np.arange(len(grid)), n_boot, seed)
    envelopes = np.array([grid[drawn > 0].min(axis=0) for drawn in counts]).reshape(len(counts), len(compute))
    finite = np.isfinite(envelopes)  # inf: no run of the resample reaches that compute
    replicates = refit_replicates(best, {"C": compute}, np.where(finite, envelopes, 1.0), finite)
    samples = law.reported(replicates)
    intervals = {k: interval(samples[k], v, level) for k, v in best.estimates.items()}
    return FamilyFit(name, curves, compute, loss, best, replicates, intervals)


def last_crossing(law: Law, theta_a: np.ndarray, theta_b: np.ndarray, log_c: np.ndarray) -> np.ndarray:
    """The compute at which the curves of ``theta_a`` and ``theta_b`` (..., P) last cross (NaN: never)."""
    c = {"C": np.exp(log_c)}
    diff = np.atleast_2d(law.log_predict(theta_a, c) - law.log_predict(theta_b, c))
    change = np.sign(diff[:, 1:]) != np.sign(diff[:, :-1])
    last = change.shape[1] - 1 - np.argmax(change[:, ::-1], axis=1)
    rows = np.arange(len(diff))
    d0, d1 = diff[rows, last], diff[rows, last + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        root = log_c[last] + (log_c[last + 1] - log_c[last]) * d0 / (d0 - d1)
    return np.where(change.any(axis=1), np.exp(root), np.nan)


def crossover(a: FamilyFit, b: FamilyFit, extrapolate: float, level: float) -> dict[str, Any]:
    """Where the fitted curves of families ``a`` and ``b`` last cross, from the trained compute range to
    ``extrapolate`` decades beyond it, with a bootstrap interval over pairs of replicates."""
    law = a.fit.law
    low = min(a.compute.min(), b.compute.min())
    top = max(a.compute.max(), b.compute.max())
    log_c = np.linspace(np.log(low), np.log(top) + extrapolate * np.log(10), 512)
    estimate = float(last_crossing(law, a.fit.theta, b.fit.theta, log_c)[0])
    ok = np.isfinite(a.replicates).all(axis=1) & np.isfinite(b.replicates).all(axis=1)
    boot = last_crossing(law, a.replicates[ok], b.replicates[ok], log_c) if ok.any() else np.array([])
    found = np.isfinite(boot)
    end = {"C": np.exp(log_c[-1:])}
    a_leads = law.predict(a.fit.theta, end)[0] < law.predict(b.fit.theta, end)[0]
    leader, other = (a.name, b.name) if a_leads else (b.name, a.name)
    iv = interval(boot[found], estimate, level)
    return {
        "estimate": estimate,
        "low": iv.low if np.isfinite(estimate) else float("nan"),
        "high": iv.high if np.isfinite(estimate) else float("nan"),
        "level": level,
        "replicates_with_crossing": float(found.mean()) if found.size else float("nan"),
        "n_replicates": int(found.size),
        "leader_at_top": leader,
        "other": other,
        "search_range": [float(low), float(np.exp(log_c[-1]))],
        "largest_trained": float(top),
    }


def crossing_sentence(cross: dict[str, Any]) -> str:
    """The crossover in words, e.g. "DiT overtakes U-Net at C = 3.2e+11 FLOPs (95% interval ...)"."""
    from analysis.report import num

    share, pairs = cross["replicates_with_crossing"], cross["n_replicates"]
    found = f"a crossing in {share:.0%} of {pairs} bootstrap replicate pairs" if pairs else "no bootstrap"
    lo, hi = cross["search_range"]
    if not np.isfinite(cross["estimate"]):
        return (
            f"No crossing between C = {num(lo)} and {num(hi)} FLOPs: {cross['leader_at_top']} has the lower "
            f"fitted loss over the whole range ({found})."
        )
    where = "inside the trained range" if cross["estimate"] <= cross["largest_trained"] else "extrapolated"
    return (
        f"{cross['leader_at_top']} overtakes {cross['other']} at C = {num(cross['estimate'])} FLOPs "
        f"({100 * cross['level']:g}% interval [{num(cross['low'])}, {num(cross['high'])}]; {found}; {where})."
    )


def comparison_summary(fits: list[FamilyFit], cross: dict[str, Any], level: float) -> list[str]:
    """One line per family (alpha and E with intervals) and the crossover sentence."""
    from analysis.report import estimate_text as est  # report imports this module

    pct = f"{100 * level:g}%"
    lines = [
        f"{f.name}: alpha = {est(f.intervals['alpha'])}, E = {est(f.intervals['E'])} ({pct} intervals)"
        for f in fits
    ]
    return [*lines, crossing_sentence(cross)]


def comparison_results(fits: list[FamilyFit], cross: dict[str, Any]) -> dict[str, Any]:
    """The comparison as JSON-able data: each family's law, estimates and counts, and the crossover."""
    return {
        "families": {
            f.name: {
                "law": f.fit.law.formula,
                "estimates": {k: iv.as_dict() for k, iv in f.intervals.items()},
                "rmse_log": f.fit.rmse_log,
                "runs": int(f.curves["run_id"].nunique()),
                "envelope_points": len(f.compute),
                "bootstrap_failed": f.n_failed,
                "warnings": f.warnings,
            }
            for f in fits
        },
        "crossover": cross,
    }
