"""Hyperparameter optima as laws (Yin et al. 2024, DeepSeek LLM, Porian et al. 2024), torch-free.

For each (N, D) point of a sweep, the loss surface in log learning rate (and log batch size) is fitted
with a least-squares quadratic; its minimum is the optimum, with intervals from a parametric bootstrap
(the residual noise pooled over the points). The optima are then fitted as power laws eta_opt =
c N^a D^b (and B_opt likewise, the forms of Yin et al. and DeepSeek LLM) by least squares in log
space, with intervals from the optima's own bootstrap replicates. :mod:`analysis.hparam_laws` builds
the loss law on and off the optimum and the bias of a one-learning-rate study on top of these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.bootstrap import Interval, interval
from analysis.errors import DataError
from analysis.frontier import compute_groups


@dataclass(frozen=True)
class Vertex:
    """The minimum of a fitted quadratic: log lr ``x``, log batch size ``z`` (None without batch sizes),
    the loss there, whether the fit is convex in x, and the loss per (log lr)^2 around it."""

    x: float
    z: float | None
    value: float
    convex: bool
    curvature: float


def quadratic_minimum(x: np.ndarray, y: np.ndarray, z: np.ndarray | None = None) -> Vertex:
    """The minimum of a least-squares quadratic of ``y`` in ``x`` (and ``z``).

    With three or more distinct ``z``, the full quadratic in (x, z); with two, the quadratic in x plus
    terms linear in z (a quadratic in z is not identifiable), whose minimum over z is the better edge.
    A fit that is not convex returns the best swept point, ``convex`` False.
    """
    levels = 0 if z is None else len(np.unique(z))
    coef = np.linalg.lstsq(quadratic_design(x, z), y, rcond=None)[0]
    best = int(np.argmin(y))
    fallback = Vertex(float(x[best]), None if z is None else float(z[best]), float(y[best]), False, np.nan)
    if coef[2] <= 0:
        return fallback
    if levels <= 1:
        xv = -coef[1] / (2 * coef[2])
        zv = None if z is None else float(z[0])
        return Vertex(float(xv), zv, float(coef[0] - coef[2] * xv**2), True, float(coef[2]))
    if levels == 2:  # linear in z: one of the two edges
        candidates = []
        for zv in (z.min(), z.max()):
            lin = coef[1] + coef[4] * zv
            xv = -lin / (2 * coef[2])
            candidates.append((coef[0] + coef[3] * zv + lin * xv + coef[2] * xv**2, xv, zv))
        value, xv, zv = min(candidates)
        return Vertex(float(xv), float(zv), float(value), True, float(coef[2]))
    hessian = np.array([[2 * coef[2], coef[4]], [coef[4], 2 * coef[5]]])
    if np.any(np.linalg.eigvalsh(hessian) <= 0):
        return fallback
    xv, zv = np.linalg.solve(hessian, -coef[[1, 3]])
    value = coef[0] + (coef[1] * xv + coef[3] * zv) / 2  # c0 + g.v/2 at the stationary point v
    return Vertex(float(xv), float(zv), float(value), True, float(coef[2]))


def quadratic_design(x: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
    """The columns of :func:`quadratic_minimum`'s least squares: 1, x, x^2 (and z, xz; z^2 from three z)."""
    levels = 0 if z is None else len(np.unique(z))
    columns = [np.ones_like(x), x, x**2] + ([z, x * z] if levels > 1 else []) + ([z**2] if levels > 2 else [])
    return np.stack(columns, axis=1)


@dataclass(frozen=True)
class Optimum:
    """The optimal learning rate (and batch size) of one (N, D) point, with intervals."""

    N: float
    D: float
    lr: Interval
    batch_size: Interval | None
    loss: Interval  # the fitted loss at the optimum
    curvature: float  # loss per (log lr)^2 away from the optimum (nan when not convex)
    lr_inside: bool  # the fit is convex and its optimal learning rate lies inside the swept range
    batch_inside: bool | None
    runs: int
    left_out: int  # runs far above the point's best loss, left out of its quadratic
    lr_range: tuple[float, float]
    batch_range: tuple[float, float] | None
    replicates: np.ndarray  # bootstrap replicates of (log lr*, log B* or nan, loss*)

    @property
    def inside(self) -> bool:
        return self.lr_inside and self.batch_inside is not False

    @property
    def warnings(self) -> list[str]:
        out = []
        where = f"N={self.N:.4g}, D={self.D:.4g}"
        if self.left_out:
            out.append(
                f"{where}: {self.left_out} of {self.runs} runs left out of the quadratic, their loss far "
                "above the point's best (diverged, or too far from the optimum for a quadratic)"
            )
        if not np.isfinite(self.lr.low):
            out.append(
                f"{where}: no interval for the optimum: the quadratics have fewer than 2 more runs than "
                "coefficients in all; sweep more learning rates"
            )
        if not self.lr_inside:
            lo, hi = self.lr_range
            side = "below" if self.lr.estimate <= np.sqrt(lo * hi) else "above"
            out.append(
                f"{where}: the optimal learning rate {self.lr.estimate:.3g} [{self.lr.low:.3g}, "
                f"{self.lr.high:.3g}] is not inside the swept {lo:.3g}..{hi:.3g}: extend the sweep "
                f"{side} that edge (a grid's hparams.adaptive does it)"
            )
        if self.batch_inside is False and self.batch_size is not None and self.batch_range is not None:
            lo, hi = self.batch_range
            out.append(
                f"{where}: the optimal batch size {self.batch_size.estimate:.3g} is not inside the swept "
                f"{lo:g}..{hi:g} (or only two batch sizes were swept): sweep 3 or more, past that edge"
            )
        return out

    def as_dict(self) -> dict:
        return {
            "N": self.N,
            "D": self.D,
            "lr": self.lr.as_dict(),
            "batch_size": self.batch_size.as_dict() if self.batch_size else None,
            "loss": self.loss.as_dict(),
            "curvature": self.curvature,
            "inside": self.inside,
            "runs": self.runs,
            "left_out": self.left_out,
            "lr_range": list(self.lr_range),
            "batch_range": list(self.batch_range) if self.batch_range else None,
        }


def point_groups(frame: pd.DataFrame, d_tolerance: float = 0.02) -> pd.Series:
    """One label per (N, D) point: runs of one size whose D agree within ``d_tolerance`` decades
    (steps rounded to keep a token budget at several batch sizes differ in D by a little)."""
    labels = pd.Series(0, index=frame.index)
    for _, rows in frame.groupby("N", sort=True):
        labels[rows.index] = compute_groups(rows["D"].to_numpy(float), tolerance_dex=d_tolerance)
    return pd.factorize(frame["N"].rank(method="dense") * 10_000 + labels, sort=True)[0]


def near_best(frame: pd.DataFrame, labels: np.ndarray, max_excess: float) -> np.ndarray:
    """The runs within ``max_excess`` (a fraction) of their point's best loss: those a point's quadratic
    is fitted to (a diverged run, or one far from the optimum, is not quadratic)."""
    best = frame.groupby(labels)["y"].transform("min")
    return (frame["y"] <= best * (1 + max_excess)).to_numpy()


def fit_optima(
    frame: pd.DataFrame,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    d_tolerance: float = 0.02,
    max_excess: float = 0.5,
) -> list[Optimum]:
    """Per (N, D) point of ``frame`` (columns N, D, y, lr and optionally batch): the loss-minimising
    learning rate (and batch size) from a quadratic in their logs, with bootstrap intervals.

    Runs whose loss exceeds the point's best by more than ``max_excess`` (a fraction) are left out: a
    diverged run, or one far from the optimum, where the loss is not quadratic. Intervals: a parametric
    bootstrap, each point refitted to its fitted surface plus Gaussian noise of the runs' residual
    spread, pooled over every point (all runs share one validation protocol). A point has a handful of
    runs: resampling them would often leave too few learning rates for a quadratic, and a single point's
    residuals have too few degrees of freedom to estimate the noise.
    """
    fits = []
    labels = point_groups(frame, d_tolerance)
    frame = frame.assign(fitted=near_best(frame, labels, max_excess))
    for _, group in frame.groupby(labels, sort=True):
        n, d = float(group["N"].iloc[0]), float(np.exp(np.log(group["D"]).mean()))
        x = np.log(group["lr"].to_numpy(float))
        z = np.log(group["batch"].to_numpy(float)) if "batch" in frame else None
        loss = group["y"].to_numpy(float)
        keep = group["fitted"].to_numpy()
        x, loss, z = x[keep], loss[keep], None if z is None else z[keep]
        swept = (float(np.exp(x.min())), float(np.exp(x.max())))  # of the runs fitted
        lrs = len(np.unique(x))
        if lrs < 3:
            raise DataError(
                f"N={n:.4g}, D={d:.4g}: {int(keep.sum())} runs over {lrs} learning rates within "
                f"{max_excess:.0%} of the point's best loss; a quadratic optimum needs at least 3: sweep "
                "more learning rates around the best (grid spec hparams.lr)"
            )
        design = quadratic_design(x, z)
        fitted = design @ np.linalg.lstsq(design, loss, rcond=None)[0]
        fits.append((n, d, x, z, loss, fitted, design.shape[1], swept, len(group), int((~keep).sum())))
    dof = sum(len(f[4]) - f[6] for f in fits)
    sigma = np.sqrt(sum(float(np.sum((f[4] - f[5]) ** 2)) for f in fits) / dof) if dof >= 2 else np.nan
    rng = np.random.default_rng(seed)
    optima = []
    for n, d, x, z, loss, fitted, _, swept, runs, left_out in fits:
        best = quadratic_minimum(x, loss, z)
        reps = []
        for _ in range(n_boot if np.isfinite(sigma) else 0):
            v = quadratic_minimum(x, fitted + rng.normal(0, sigma, len(loss)), z)
            reps.append((v.x, np.nan if v.z is None else v.z, v.value))
        reps = np.array(reps).reshape(-1, 3)
        lr = interval(np.exp(reps[:, 0]), float(np.exp(best.x)), level)
        batch = batch_inside = batch_range = None
        if z is not None:
            batch = interval(np.exp(reps[:, 1]), float(np.exp(best.z)), level)
            batch_range = (float(np.exp(z.min())), float(np.exp(z.max())))
            batch_inside = bool(len(np.unique(z)) > 2 and best.convex and z.min() < best.z < z.max())
        optima.append(
            Optimum(
                n,
                d,
                lr,
                batch,
                interval(reps[:, 2], best.value, level),
                best.curvature,
                bool(best.convex and swept[0] <= lr.estimate <= swept[1]),
                batch_inside,
                runs,
                left_out,
                swept,
                batch_range,
                reps,
            )  # fmt: skip
        )
    return optima


@dataclass(frozen=True)
class OptimumLaw:
    """``value_opt = c N^a D^b`` fitted to the optima (``b`` None when D was not varied)."""

    which: str
    c: Interval
    a: Interval
    b: Interval | None
    points: int
    outside: int  # optima used that lie outside their sweep (at an edge)

    def predict(self, N: float | np.ndarray, D: float | np.ndarray) -> float | np.ndarray:
        return (
            self.c.estimate * np.power(N, self.a.estimate) * (np.power(D, self.b.estimate) if self.b else 1.0)
        )

    @property
    def formula(self) -> str:
        name = {"lr": "eta_opt", "batch_size": "B_opt"}[self.which]
        return f"{name} = c N^a" + (" D^b" if self.b else "")

    def as_dict(self) -> dict:
        return {
            "formula": self.formula,
            "c": self.c.as_dict(),
            "a": self.a.as_dict(),
            "b": self.b.as_dict() if self.b else None,
            "points": self.points,
            "outside_sweep": self.outside,
        }


def fit_optimum_law(
    optima: list[Optimum], which: str = "lr", level: float = 0.95, seed: int = 0
) -> OptimumLaw:
    """The power law of the optimal ``which`` ("lr" or "batch_size") in N and D; intervals from
    refitting to the optima's bootstrap replicates, one drawn per point."""
    column = 0 if which == "lr" else 1
    log_n = np.log([o.N for o in optima])
    log_d = np.log([o.D for o in optima])
    vary_d = len(np.unique(np.round(log_d, 6))) > 1
    design = np.stack([np.ones_like(log_n), log_n, *([log_d] if vary_d else [])], axis=1)
    if len(np.unique(log_n)) < 2 or len(optima) < design.shape[1] + 1:
        raise DataError(
            f"{len(optima)} optima over {len(np.unique(log_n))} sizes: a law of the optimum needs at least "
            f"{design.shape[1] + 1} points and 2 sizes (3 points with D varied): sweep more sizes"
        )
    value = np.log([(o.lr if which == "lr" else o.batch_size).estimate for o in optima])
    estimate = np.linalg.lstsq(design, value, rcond=None)[0]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(min(len(o.replicates) for o in optima)):
        sample = np.array([o.replicates[rng.integers(len(o.replicates)), column] for o in optima])
        draws.append(np.linalg.lstsq(design, sample, rcond=None)[0])
    draws = np.array(draws).reshape(-1, design.shape[1])
    outside = sum(not (o.lr_inside if which == "lr" else o.batch_inside) for o in optima)
    return OptimumLaw(
        which,
        interval(np.exp(draws[:, 0]), float(np.exp(estimate[0])), level),
        interval(draws[:, 1], float(estimate[1]), level),
        interval(draws[:, 2], float(estimate[2]), level) if vary_d else None,
        len(optima),
        int(outside),
    )
