"""Compute-optimal frontier by the three approaches of Hoffmann et al. 2022.

Each gives ``N_opt(C) = G_N * C^a`` and ``D_opt(C) = G_D * C^b`` with bootstrap intervals:

1. envelope: the lowest loss at each compute over all runs (along training curves when the table
   has them, else per compute group); power laws fitted through the winners' (C, N, D);
2. IsoFLOP profiles: for each compute budget a parabola of loss in log N; power laws through the
   minima;
3. parametric: minimise the fitted ``L(N, D)`` subject to ``C = k N D``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.bootstrap import Bootstrap, Interval, interval
from analysis.data import Table
from analysis.errors import AnalysisError
from analysis.fitting import Fit

QUANTITIES = ("a", "G_N", "b", "G_D", "N_opt", "D_opt")
# A compute group wider than this (in decades of C) is not an IsoFLOP profile.
MAX_GROUP_SPREAD_DEX = 0.3


class FrontierError(AnalysisError):
    """An approach cannot estimate the frontier from this table."""


@dataclass(frozen=True)
class Allocation:
    """``N_opt(C) = exp(log_g_n) C^a`` and ``D_opt(C) = exp(log_g_d) C^b``."""

    a: float
    log_g_n: float
    b: float
    log_g_d: float

    def n_opt(self, c: np.ndarray | float) -> np.ndarray:
        return np.exp(self.log_g_n + self.a * np.log(c))

    def d_opt(self, c: np.ndarray | float) -> np.ndarray:
        return np.exp(self.log_g_d + self.b * np.log(c))

    def quantities(self, target: float) -> dict[str, float]:
        return {
            "a": self.a,
            "G_N": float(np.exp(self.log_g_n)),
            "b": self.b,
            "G_D": float(np.exp(self.log_g_d)),
            "N_opt": float(self.n_opt(target)),
            "D_opt": float(self.d_opt(target)),
        }


@dataclass(frozen=True)
class Frontier:
    """One approach's allocation, its intervals, and the optima it was fitted through."""

    approach: str
    allocation: Allocation
    target: float
    intervals: dict[str, Interval]
    points: pd.DataFrame  # columns C, N, D, y of the optima (empty for the parametric approach)
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    profiles: pd.DataFrame | None = field(default=None, compare=False)  # IsoFLOP points with "group"


def compute_groups(c: np.ndarray, budget: np.ndarray | None = None, tolerance_dex: float = 0.1) -> np.ndarray:
    """Compute-budget label per point: the ``budget`` column when given, else clusters of log10 C
    separated by gaps wider than ``tolerance_dex``."""
    if budget is not None:
        return pd.factorize(pd.Series(budget).astype(str))[0]
    logc = np.log10(c)
    order = np.argsort(logc)
    labels = np.empty(len(c), dtype=int)
    labels[order] = np.concatenate([[0], np.cumsum(np.diff(logc[order]) > tolerance_dex)])
    return labels


def _groups(table: Table, use_budget: bool, tolerance_dex: float) -> np.ndarray:
    return compute_groups(
        table.values("C"), table.frame["budget"].to_numpy() if use_budget else None, tolerance_dex
    )


def _allocation(c: np.ndarray, n: np.ndarray, d: np.ndarray) -> Allocation:
    """Least-squares power laws of N and D in C (log-log)."""
    if len(np.unique(c)) < 2 or len(np.unique(n)) < 2:
        raise FrontierError("the optima span fewer than two compute values or model sizes")
    a, log_g_n = np.polyfit(np.log(c), np.log(n), 1)
    b, log_g_d = np.polyfit(np.log(c), np.log(d), 1)
    return Allocation(float(a), float(log_g_n), float(b), float(log_g_d))


def _with_intervals(
    approach: str, point: Allocation, replicate, n_boot: int, target: float, level: float, **extra
) -> Frontier:
    """Evaluate ``replicate(i) -> Allocation`` for every replicate ``i`` and attach intervals."""
    samples = {q: np.full(n_boot, np.nan) for q in QUANTITIES}
    failed = 0
    for i in range(n_boot):
        try:
            values = replicate(i).quantities(target)
        except FrontierError:
            failed += 1
            continue
        for q in QUANTITIES:
            samples[q][i] = values[q]
    warnings: tuple[str, ...] = ()
    if n_boot and failed > 0.05 * n_boot:
        warnings = (
            f"approach {approach}: {failed} of {n_boot} bootstrap resamples gave no frontier, "
            "so its intervals are unreliable. Fix: add runs around the optimum.",
        )
    est = point.quantities(target)
    return Frontier(
        approach,
        point,
        target,
        {q: interval(samples[q], est[q], level) for q in QUANTITIES},
        warnings=warnings,
        **extra,
    )


# ---- approach 1: envelope -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """Loss, compute and tokens of every run (rows) at common compute positions (columns), NaN if absent."""

    y: np.ndarray
    c: np.ndarray
    d: np.ndarray
    n: np.ndarray  # per run
    run: np.ndarray  # run code per row


def curves_at(
    frame: pd.DataFrame,
    run: str,
    values: tuple[str, ...],
    log_c: np.ndarray,
    *,
    runs: np.ndarray | None = None,
    min_points: int = 1,
) -> list[np.ndarray]:
    """Each run's training curve of every column in ``values`` read at compute ``exp(log_c)``:
    interpolated linearly in log-log space between the run's evaluations, NaN outside them (and for
    runs with fewer than ``min_points`` evaluations). One (runs, len(log_c)) array per value, rows in
    the order of ``runs`` (default: the sorted run ids). The one reading of curves on a common compute
    grid: the envelope frontier and the family comparison (:mod:`analysis.compare`) both use it."""
    runs = np.unique(frame[run]) if runs is None else runs
    out = [np.full((len(runs), len(log_c)), np.nan) for _ in values]
    by_run = dict(tuple(frame.sort_values("C").groupby(run, sort=False)))
    for i, r in enumerate(runs):
        pts = by_run.get(r)
        if pts is None or len(pts) < min_points:
            continue
        lc = np.log(pts["C"].to_numpy())
        inside = (log_c >= lc[0]) & (log_c <= lc[-1])
        for grid, value in zip(out, values, strict=True):
            grid[i, inside] = np.exp(np.interp(log_c[inside], lc, np.log(pts[value].to_numpy())))
    return out


def _envelope_grid(table: Table, groups: np.ndarray, n_grid: int) -> tuple[_Grid, str]:
    f = table.frame
    runs = np.unique(table.run)
    n_per_run = f.groupby("run")["N"].first().reindex(runs).to_numpy()
    curves = f.groupby("run").size().max() > 1
    if curves:
        logc = np.log(f["C"].to_numpy())
        cols = np.linspace(logc.min(), logc.max(), n_grid)
        y, d = curves_at(f, "run", ("y", "D"), cols, runs=runs, min_points=2)
        c = np.broadcast_to(np.exp(cols), y.shape)
        how = f"training curves interpolated at {n_grid} log-spaced compute values"
    else:
        pos = {r: i for i, r in enumerate(runs)}
        y = np.full((len(runs), groups.max() + 1), np.nan)
        c, d = y.copy(), y.copy()
        rows = [pos[r] for r in table.run]
        y[rows, groups], c[rows, groups], d[rows, groups] = f["y"], f["C"], f["D"]
        how = "one point per run: the lowest loss in each compute group"
    return _Grid(y, np.asarray(c), d, n_per_run, runs), how


def _envelope(grid: _Grid, run_weight: np.ndarray | None) -> pd.DataFrame:
    """Lowest loss at each compute position, leaving out positions won by the smallest or largest
    model (there the optimum may lie beyond the sizes trained) unless fewer than two sizes remain."""
    present = np.ones(len(grid.run), bool) if run_weight is None else run_weight[grid.run] > 0
    y = np.where(present[:, None], grid.y, np.nan)
    cols = np.flatnonzero(np.isfinite(y).any(axis=0))
    win = np.nanargmin(y[:, cols], axis=0)
    out = pd.DataFrame({"C": grid.c[win, cols], "N": grid.n[win], "D": grid.d[win, cols], "y": y[win, cols]})
    inner = (out["N"] > grid.n[present].min()) & (out["N"] < grid.n[present].max())
    return out[inner] if out.loc[inner, "N"].nunique() >= 2 else out


def envelope_frontier(
    table: Table,
    counts: np.ndarray,
    *,
    target: float,
    level: float = 0.95,
    use_budget: bool = False,
    tolerance_dex: float = 0.1,
    n_grid: int = 40,
) -> Frontier:
    """Approach 1 on ``table`` (all evaluation points when available); ``counts`` from resample_runs."""
    groups = _groups(table, use_budget, tolerance_dex)
    grid, how = _envelope_grid(table, groups, n_grid)
    points = _envelope(grid, None)
    try:
        point = _allocation(points["C"], points["N"], points["D"])
    except FrontierError as err:
        raise FrontierError(
            f"approach 1 (envelope): {err}; the lowest loss is reached by {points['N'].nunique()} model "
            "size(s). Fix: train a wider range of model sizes, so that different sizes win at different "
            "compute."
        ) from None
    notes = (
        f"envelope from {how}; {len(points)} optima (positions won by the smallest or largest model left "
        "out when two or more sizes remain)",
    )
    replicate = lambda i: _allocation(*(_envelope(grid, counts[i])[k] for k in ("C", "N", "D")))
    return _with_intervals(
        "1 (envelope)", point, replicate, len(counts), target, level, points=points, notes=notes
    )


# ---- approach 2: IsoFLOP profiles -----------------------------------------------------------------------


def _isoflop_minima(f: pd.DataFrame, y: np.ndarray) -> pd.DataFrame:
    """Per compute group: parabola of ``y`` in ln N, its minimum, and D there."""
    rows = []
    for g, pts in f.groupby("group"):
        u, yg = np.log(pts["N"].to_numpy()), y[pts.index]
        if len(np.unique(u)) < 3:
            continue
        p2, p1, p0 = np.polyfit(u, yg, 2)
        u_opt = -p1 / (2 * p2) if p2 > 0 else np.nan
        if not u.min() <= u_opt <= u.max():
            continue  # not convex, or the minimum lies outside the sizes trained at this budget
        q1, q0 = np.polyfit(u, np.log(pts["D"].to_numpy()), 1)
        rows.append(
            {
                "group": g,
                "C": float(np.exp(np.log(pts["C"]).mean())),
                "N": float(np.exp(u_opt)),
                "D": float(np.exp(q0 + q1 * u_opt)),
                "y": float(p0 + p1 * u_opt + p2 * u_opt**2),
                "p0": p0,
                "p1": p1,
                "p2": p2,
            }
        )
    return pd.DataFrame(rows, columns=["group", "C", "N", "D", "y", "p0", "p1", "p2"])


def _profile_residuals(f: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Fitted parabola values of every point (NaN in groups of fewer than 3 sizes) and the pooled,
    centred, leverage-corrected residuals ``r / sqrt(1 - h)`` of the groups with more points than
    parabola coefficients (Davison & Hinkley 1997, eq. 6.9)."""
    fitted = np.full(len(f), np.nan)
    pooled = []
    for _, pts in f.groupby("group"):
        u = np.log(pts["N"].to_numpy())
        if len(np.unique(u)) < 3:
            continue
        x = np.vander(u, 3)
        coef, *_ = np.linalg.lstsq(x, pts["y"].to_numpy(), rcond=None)
        fitted[pts.index] = x @ coef
        leverage = np.einsum("ij,ji->i", x, np.linalg.pinv(x))
        free = leverage < 1 - 1e-9
        if len(pts) > 3:
            r = pts["y"].to_numpy() - fitted[pts.index]
            pooled.append(r[free] / np.sqrt(1 - leverage[free]))
    residuals = np.concatenate(pooled) if pooled else np.zeros(0)
    return fitted, residuals - residuals.mean() if residuals.size else residuals


def isoflop_frontier(
    table: Table,
    n_boot: int,
    *,
    target: float,
    seed: int = 0,
    level: float = 0.95,
    use_budget: bool = False,
    tolerance_dex: float = 0.1,
) -> Frontier:
    """Approach 2 on the final points of ``table``, grouped by its ``budget`` column or by C.

    Intervals come from a fixed-design residual bootstrap: every replicate keeps each profile's model
    sizes and draws its losses as the fitted parabola plus residuals resampled from the pool of all
    profiles. Not resampling runs, as the other approaches do: an IsoFLOP profile is a designed
    experiment of a few sizes (often 4 or 5), a repeat of the study would train the same sizes, and a
    resample of runs that drops one of them changes the design and usually leaves no parabola.
    """
    f = table.frame.copy()
    f["group"] = _groups(table, use_budget, tolerance_dex)
    spread = f.groupby("group")["C"].agg(lambda c: np.log10(c.max() / c.min()))
    wide = spread[spread > MAX_GROUP_SPREAD_DEX].index
    notes = []
    if len(wide):
        notes.append(
            f"{len(wide)} compute group(s) span more than {MAX_GROUP_SPREAD_DEX} decades of C and are "
            "not IsoFLOP profiles; left out"
        )
        f = f[~f["group"].isin(wide)].reset_index(drop=True)
    minima = _isoflop_minima(f, f["y"].to_numpy())
    n_groups = f["group"].nunique()
    if len(minima) < 2:
        raise FrontierError(
            f"approach 2 (IsoFLOP): {len(minima)} of {n_groups} compute groups give a usable profile "
            "(at least 3 model sizes at one compute budget, a convex parabola and its minimum inside the "
            "sizes trained); need 2 or more. Fix: run an IsoFLOP grid (several sizes per budget, sizes "
            "bracketing the optimum) and pass its budget column with --budget-col."
        )
    if len(minima) < n_groups:
        notes.append(
            f"{n_groups - len(minima)} of {n_groups} groups left out: fewer than 3 sizes, not convex, "
            "or minimum outside the sizes trained"
        )
    point = _allocation(minima["C"], minima["N"], minima["D"])
    fitted, residuals = _profile_residuals(f)
    notes.append(
        f"intervals: residual bootstrap with each profile's sizes fixed ({residuals.size} pooled residuals)"
    )
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, max(residuals.size, 1), size=(n_boot if residuals.size else 0, len(f)))

    def replicate(i: int) -> Allocation:
        m = _isoflop_minima(f, fitted + residuals[draws[i]])
        return _allocation(m["C"], m["N"], m["D"])

    return _with_intervals(
        "2 (IsoFLOP)",
        point,
        replicate,
        len(draws),
        target,
        level,
        points=minima,
        notes=tuple(notes),
        profiles=f,
    )


# ---- approach 3: parametric -------------------------------------------------------------------------------


def cost_ratio(table: Table) -> float:
    """``k`` in ``C = k N D``: the median over points (6 for the usual 6ND estimate)."""
    return float(np.median(table.values("C") / (table.values("N") * table.values("D"))))


def parametric_frontier(
    fit: Fit, boot: Bootstrap | None, k: float, *, target: float, level: float = 0.95
) -> Frontier:
    """Approach 3: from the fitted Chinchilla law, ``N_opt = G (C / k)^a`` and ``D_opt = C / (k N_opt)``."""

    def allocation(v) -> tuple:
        with np.errstate(divide="ignore"):  # G = 0: a replicate at an exponent's bound 0, no frontier
            log_g = np.log(v["G"])
        log_g = np.where(np.isfinite(log_g), log_g, np.nan)
        return v["a"], log_g - v["a"] * np.log(k), v["b"], -log_g - v["b"] * np.log(k)

    point = Allocation(*(float(x) for x in allocation(fit.estimates)))
    samples = {q: np.array([]) for q in QUANTITIES}
    if boot is not None:
        a, lgn, b, lgd = allocation(boot.samples)
        samples = {
            "a": a,
            "G_N": np.exp(lgn),
            "b": b,
            "G_D": np.exp(lgd),
            "N_opt": np.exp(lgn + a * np.log(target)),
            "D_opt": np.exp(lgd + b * np.log(target)),
        }
    est = point.quantities(target)
    intervals = {q: interval(samples[q], est[q], level) for q in QUANTITIES}
    notes = (f"C = k N D with k = {k:.3g} (median over the fitted points)",)
    return Frontier(
        "3 (parametric)", point, target, intervals, pd.DataFrame(columns=["C", "N", "D", "y"]), notes
    )
