"""Everything a report shows, computed from one table: fits, intervals, extrapolation, frontier.

Each part that cannot be computed from the table (too few runs, no IsoFLOP structure, ...) becomes
a warning naming the problem and the fix; the other parts still run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.bootstrap import Bootstrap, Interval, bootstrap_fit, interval, resample_runs
from analysis.compare import FamilyFit, fit_family
from analysis.data import Columns, Table, prepare
from analysis.errors import AnalysisError
from analysis.extrapolation import Extrapolation, extrapolation_check
from analysis.fitting import Fit, fit
from analysis.frontier import (
    Frontier,
    cost_ratio,
    envelope_frontier,
    isoflop_frontier,
    parametric_frontier,
)
from analysis.laws import Law, chinchilla_law, metric_vs_loss

# Columns fitted against the loss when none are named: fvd, fid and variants such as fvd_ema, but not
# the <metric>_protocol and <metric>_std columns written beside them. KID (which can be <= 0) only
# when asked for.
METRIC_PATTERN = re.compile(r"^(fvd|fid)(_(?!protocol$|std$)\w+)?$", re.IGNORECASE)


@dataclass(frozen=True)
class LawResult:
    """A fitted law with its bootstrap intervals and the table it was fitted on."""

    fit: Fit
    intervals: dict[str, Interval]
    boot: Bootstrap | None
    table: Table
    inputs: dict[str, str]  # law input -> table role

    @property
    def warnings(self) -> list[str]:
        what = self.fit.law.name
        return [*self.fit.warnings, *(self.boot.warnings(what) if self.boot else [])]

    def as_dict(self) -> dict:
        f = self.fit
        return {
            "law": f.law.name,
            "formula": f.law.formula,
            "columns": self.table.columns,
            "n_points": f.n_points,
            "n_runs": self.table.n_runs,
            "estimates": {k: iv.as_dict() for k, iv in self.intervals.items()},
            "n_boot": self.boot.n_boot if self.boot else 0,
            "bootstrap_failed": self.boot.n_failed if self.boot else 0,
            "rmse_log": f.rmse_log,
            "r2_log": f.r2_log,
            "huber_delta": f.delta,
            "objective": f.objective,
            "converged": f.converged,
            "status": f.status,
            "n_starts": f.n_starts,
            "n_starts_converged": f.n_converged,
            "n_starts_at_best": f.n_at_best,
            "warnings": self.warnings,
            "notes": list(self.table.notes) + list(self.table.warnings),
        }


@dataclass(frozen=True)
class SizeLaw:
    """``L(N) = E_D + A N^-alpha``: the fitted ``L(N, D)`` at a fixed data budget ``D``, where
    ``E_D = E + B D^-beta``; intervals from the same bootstrap replicates as the surface."""

    d: float
    intervals: dict[str, Interval]  # E_D, A, alpha
    samples: dict[str, np.ndarray] = field(default_factory=dict)  # E_D, A, alpha per replicate

    def predict(self, n: np.ndarray) -> np.ndarray:
        return _size_curve({k: iv.estimate for k, iv in self.intervals.items()}, n)

    def replicate_predictions(self, n: np.ndarray) -> np.ndarray:
        """L(N) at ``n`` for every bootstrap replicate with finite values: (replicates, len(n))."""
        if not self.samples:
            return np.empty((0, len(n)))
        curves = _size_curve({k: v[:, None] for k, v in self.samples.items()}, n)
        return curves[np.isfinite(curves).all(axis=1)]

    def as_dict(self) -> dict:
        return {"D": self.d, "estimates": {k: iv.as_dict() for k, iv in self.intervals.items()}}


def _size_curve(p: Mapping[str, np.ndarray | float], n: np.ndarray) -> np.ndarray:
    return p["E_D"] + p["A"] * np.asarray(n, float) ** -p["alpha"]


def size_law(main: LawResult, d: float) -> SizeLaw:
    """The slice of a fitted Chinchilla ``L(N, D)`` at data budget ``d`` as a power law in N."""

    def slice_at_d(v: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"E_D": v["E"] + v["B"] * d ** -v["beta"], "A": v["A"], "alpha": v["alpha"]}

    level = next(iter(main.intervals.values())).level
    samples = slice_at_d(main.boot.samples) if main.boot else {}
    estimate = float(slice_at_d(main.fit.estimates)["E_D"])
    intervals = {"E_D": interval(samples.get("E_D", np.array([])), estimate, level)}
    intervals |= {k: main.intervals[k] for k in ("A", "alpha")}
    return SizeLaw(float(d), intervals, samples)


def frontier_agreement(frontiers: list[Frontier]) -> str:
    """Whether the approaches' intervals for N_opt at the target compute overlap, and if not, why."""
    ivs = [(fr.approach, fr.intervals["N_opt"]) for fr in frontiers if np.isfinite(fr.intervals["N_opt"].low)]
    if len(ivs) < 2:
        return ""
    shown = "; ".join(f"approach {a}: {iv.low:.3g} .. {iv.high:.3g}" for a, iv in ivs)
    low, high = max(iv.low for _, iv in ivs), min(iv.high for _, iv in ivs)
    if low <= high:
        return f"The {len(ivs)} approaches agree: their N_opt intervals overlap ({shown})."
    return (
        f"The approaches disagree: their N_opt intervals do not all overlap ({shown}). They weigh the runs "
        "differently (1: the lowest point of any training curve; 2: a parabola through each budget's final "
        "losses; 3: the fitted L(N, D) surface), so a gap means the surface's form or the budgets' "
        "profiles do not describe these runs equally well: see the residuals and the IsoFLOP profiles."
    )


def fit_law(
    law: Law,
    table: Table,
    inputs: Mapping[str, str],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    delta: float = 1e-3,
    starts: np.ndarray | None = None,
    counts: np.ndarray | None = None,
) -> LawResult:
    """Fit ``law`` (inputs named by table role) and bootstrap it over runs (``counts`` or fresh)."""
    x = {name: table.values(role) for name, role in inputs.items()}
    y = table.values("y")
    w = table.values("weight") if "weight" in table.frame else None
    best = fit(law, x, y, weights=w, delta=delta, starts=starts)
    boot = None
    if n_boot > 0:
        counts = resample_runs(table.run, n_boot, seed, size=table.n_codes) if counts is None else counts
        boot = bootstrap_fit(best, x, y, table.run, counts, weights=w, level=level)
    intervals = (
        boot.intervals(best.estimates)
        if boot
        else {k: Interval(v, *[np.nan] * 3, level) for k, v in best.estimates.items()}
    )
    return LawResult(best, intervals, boot, table, dict(inputs))


@dataclass(frozen=True)
class StudyOptions:
    """Choices of a report; the defaults suit lit_vdit's runs.csv."""

    columns: Columns = field(default_factory=Columns)
    points: str = "final"
    metrics: tuple[str, ...] | None = None  # None: the columns METRIC_PATTERN matches
    cost_factor: float | None = None
    n_boot: int = 1000
    level: float = 0.95
    holdout: float = 0.2
    delta: float = 1e-3
    budget_tolerance: float = 0.1
    target_flops: float | None = None
    seed: int = 0
    title: str = "Scaling-law report"
    envelope_from: float = 0.1  # L(C) envelope: each run's evaluations from this fraction of its steps on
    pool: tuple[str, ...] = ()  # kind columns (analysis.data.KIND_COLUMNS) whose runs may be fitted together


@dataclass
class Study:
    """Results of every part of the analysis; ``warnings`` lists what failed or looks doubtful."""

    options: StudyOptions
    source: str
    table: Table | None = None
    curves: Table | None = None
    main: LawResult | None = None
    size_law: SizeLaw | None = None  # L(N) at the largest data budget, from ``main``
    compute_law: FamilyFit | None = None  # L(C) through the lower envelope of the training curves
    agreement: str = ""  # do the frontier approaches agree (see :func:`frontier_agreement`)
    extrapolation: Extrapolation | None = None
    frontiers: list[Frontier] = field(default_factory=list)
    metrics: list[LawResult] = field(default_factory=list)
    target: float = float("nan")
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "title": self.options.title,
            "warnings": self.warnings,
            "notes": self.notes,
            "options": {k: v for k, v in vars(self.options).items() if k != "columns"}
            | {"columns": vars(self.options.columns)},
            "fit": self.main.as_dict() if self.main else None,
            "size_law": self.size_law.as_dict() if self.size_law else None,
            "compute_law": (
                {
                    "formula": self.compute_law.fit.law.formula,
                    "estimates": {k: iv.as_dict() for k, iv in self.compute_law.intervals.items()},
                    "envelope_points": len(self.compute_law.compute),
                }
                if self.compute_law
                else None
            ),
            "frontier_agreement": self.agreement,
            "extrapolation": self.extrapolation.as_dict() if self.extrapolation else None,
            "frontier": {
                "target_flops": self.target,
                "approaches": [
                    {
                        "approach": fr.approach,
                        "estimates": {k: iv.as_dict() for k, iv in fr.intervals.items()},
                        "notes": list(fr.notes),
                        "warnings": list(fr.warnings),
                    }
                    for fr in self.frontiers
                ],
            },
            "metrics": [m.as_dict() for m in self.metrics],
        }


def run_study(df: pd.DataFrame, options: StudyOptions, source: str = "") -> Study:
    """Run every part of the analysis that the table supports."""
    o, cols = options, options.columns
    study = Study(o, source)
    roles = {"N": cols.N, "D": cols.D, "C": cols.C, "y": cols.y}
    optional = {"budget": cols.budget, "weight": cols.weight}
    common = {
        "run": cols.run,
        "step": cols.step,
        "cost_factor": o.cost_factor,
        "optional": optional,
        "pool": o.pool,
    }
    # An error here (missing columns, mixed protocols, bad values) stops the report: nothing can be shown.
    study.table = prepare(df, roles, points=o.points, **common)
    study.notes += study.table.notes
    study.warnings += study.table.warnings
    counts = (
        resample_runs(study.table.run, o.n_boot, o.seed, size=study.table.n_codes)
        if o.n_boot > 0
        else np.zeros((0, 1), int)
    )
    study.target = o.target_flops or 10.0 * float(study.table.values("C").max())

    def attempt(what: str, step):
        try:
            return step()
        except AnalysisError as err:
            study.warnings.append(f"{what}: {err}")
            return None

    study.main = attempt(
        "Chinchilla fit",
        lambda: fit_law(
            chinchilla_law(),
            study.table,
            {"N": "N", "D": "D"},
            n_boot=o.n_boot,
            level=o.level,
            seed=o.seed,
            delta=o.delta,
            counts=counts,
        ),
    )
    frame = study.table.frame
    has_budget = "budget" in frame
    budgets = pd.to_numeric(frame["budget"]).nunique() if has_budget else 0
    if study.main:
        study.warnings += study.main.warnings
        study.size_law = size_law(study.main, float(study.table.values("D").max()))
        study.extrapolation = attempt(
            "extrapolation check",
            lambda: extrapolation_check(
                chinchilla_law(),
                study.table,
                holdout=o.holdout,
                order_by="budget" if budgets >= 2 else "C",
                delta=o.delta,
                weights=study.table.values("weight") if "weight" in study.table.frame else None,
                counts=counts,
                level=o.level,
            ),
        )

    study.curves = (
        study.table
        if o.points == "all"
        else attempt("training curves", lambda: prepare(df, roles, points="all", **common))
    )
    study.notes.append(
        f"compute budgets from column {cols.budget!r}"
        if has_budget
        else f"compute budgets: points grouped by C (gaps wider than {o.budget_tolerance} decades split "
        f"groups); no column {cols.budget!r}"
    )
    where = {
        "target": study.target,
        "level": o.level,
        "use_budget": has_budget,
        "tolerance_dex": o.budget_tolerance,
    }
    frontiers = [
        attempt(
            "frontier approach 1",
            lambda: envelope_frontier(study.table if study.curves is None else study.curves, counts, **where),
        ),
        attempt(
            "frontier approach 2",
            lambda: isoflop_frontier(study.table, o.n_boot, seed=o.seed, **where),
        ),
    ]
    if study.main:
        frontiers.append(
            parametric_frontier(
                study.main.fit, study.main.boot, cost_ratio(study.table), target=study.target, level=o.level
            )
        )
    study.frontiers = [fr for fr in frontiers if fr is not None]
    study.agreement = frontier_agreement(study.frontiers)
    curves = (study.table if study.curves is None else study.curves).frame
    if curves.groupby("run").size().max() > 1:
        # The first evaluations of a run are its initial transient (warm-up, loss near its start
        # value), not a compute-limited loss: the envelope starts at ``envelope_from`` of each run.
        late = curves["step"] >= o.envelope_from * curves.groupby("run")["step"].transform("max")
        study.compute_law = attempt(
            "L(C) envelope",
            lambda: fit_family("all runs", curves[late], n_boot=o.n_boot, seed=o.seed, level=o.level),
        )
        if study.compute_law:
            study.warnings += study.compute_law.warnings
    for fr in study.frontiers:
        study.warnings += fr.warnings

    names = (
        o.metrics
        if o.metrics is not None
        else tuple(c for c in df.columns if METRIC_PATTERN.match(str(c)) and c != cols.y)
    )
    for metric in names:
        result = attempt(f"{metric} vs {cols.y}", lambda m=metric: _metric_fit(df, m, o, common, counts))
        if result:
            study.metrics.append(result)
            study.warnings += result.warnings
    return study


def _metric_fit(
    df: pd.DataFrame, metric: str, o: StudyOptions, common: dict, counts: np.ndarray
) -> LawResult:
    table = prepare(
        df,
        {"x": o.columns.y, "y": metric},
        points=o.points,
        **{k: v for k, v in common.items() if k != "optional"},
    )
    law = metric_vs_loss(o.columns.y)
    return fit_law(
        law,
        table,
        {o.columns.y: "x"},
        n_boot=o.n_boot,
        level=o.level,
        seed=o.seed,
        delta=o.delta,
        counts=counts,
    )
