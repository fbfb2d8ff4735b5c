"""A hyperparameter sweep as a study: optima and their laws, the loss law on and off the optimum, and
the bias of a scaling law fitted with one learning rate for every size (torch-free).

The loss off the optimum generalises Yin et al. 2024's L(N, T): L(N, D, eta) = L*(N, D) + k(N) (ln eta -
ln eta_opt(N, D))^2, with L* the loss law fitted to the optima's losses (Chinchilla's form when D
varies, else a power law in N), eta_opt its power law and k(N) = k0 N^kappa the curvature of the
per-point quadratics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.bootstrap import Interval, bootstrap_fit
from analysis.data import Table, prepare
from analysis.errors import DataError
from analysis.hparams import Optimum, OptimumLaw, fit_optima, fit_optimum_law, near_best, point_groups
from analysis.laws import LAWS
from analysis.study import LawResult, fit_law


def hparam_table(
    df: pd.DataFrame,
    roles: dict[str, str],
    *,
    run: str = "run_id",
    step: str = "step",
    pool: Sequence[str] = (),
) -> Table:
    """Each run's final point with roles N, D, y, lr and (optionally) batch, checked as for a fit. Runs
    that did not finish (a ``finished`` column false: diverged or stopped) are left out with a warning:
    their last evaluation is at a smaller D, which would make a point of its own."""
    unfinished: list[str] = []
    if "finished" in df and run in df:
        done = df.groupby(run)["finished"].transform(
            lambda f: f.astype(str).str.lower().isin(["true", "1"]).all()
        )
        unfinished = sorted(map(str, df.loc[~done, run].unique()))
        df = df[done]
    table = prepare(df, roles, run=run, step=step, points="final", pool=pool)
    if not unfinished:
        return table
    shown = ", ".join(unfinished[:5]) + (f" and {len(unfinished) - 5} more" if len(unfinished) > 5 else "")
    note = (
        f"left out {len(unfinished)} run(s) that did not finish (diverged or stopped: {shown}); rerun them "
        "(`grid run` resumes) or lower their learning rate if they diverged"
    )
    return dataclasses.replace(table, warnings=(*table.warnings, note))


def _loss_law(
    frame: pd.DataFrame,
    n_boot: int,
    level: float,
    seed: int,
    delta: float,
    replicates: np.ndarray | None = None,
) -> LawResult:
    """Chinchilla's L(N, D) when D varies over 6+ points; else y = E + A N^-alpha (4+ points) or
    y = A N^-alpha (3). Intervals: refits to ``replicates`` (R, points) of the responses when given
    (the optima's bootstrap losses), else to resamples of the points."""
    points = len(frame)
    vary_d = frame["D"].round(6).nunique() > 1
    if vary_d and points >= 6:
        law, inputs, roles = LAWS["chinchilla"](), {"N": "N", "D": "D"}, {"N": "N", "D": "D", "y": "y"}
    elif points >= 3:
        law = LAWS["power" if points >= 4 else "pure-power"]("N")
        inputs, roles = {"N": "x"}, {"x": "N", "y": "y"}
    else:
        raise DataError(f"{points} (N, D) points: a loss law needs at least 3 (sweep more sizes)")
    table = prepare(frame.assign(point=np.arange(points)), roles, run="point", step=None)
    if replicates is None:
        return fit_law(law, table, inputs, n_boot=n_boot, level=level, seed=seed, delta=delta)
    res = fit_law(law, table, inputs, n_boot=0, delta=delta)
    x = {name: table.values(role) for name, role in inputs.items()}
    every_point = np.ones((len(replicates), table.n_codes))  # each replicate: all points, new responses
    boot = bootstrap_fit(res.fit, x, replicates, table.run, every_point, level=level)
    return LawResult(res.fit, boot.intervals(res.fit.estimates), boot, table, dict(inputs))


@dataclass(frozen=True)
class FixedLrBias:
    """A study run at one learning rate for every size: its loss penalty per point against the
    optimum, and its loss law against the law at the optima."""

    lr: float
    penalty: pd.DataFrame  # N, D, loss at this lr, loss at the optimum, penalty (fraction)
    law: LawResult | None  # None when the points do not determine a law

    def as_dict(self) -> dict:
        return {
            "lr": self.lr,
            "mean_penalty": float(self.penalty["penalty"].mean()),
            "max_penalty": float(self.penalty["penalty"].max()),
            "points": self.penalty.to_dict("records"),
            "law": {k: v.as_dict() for k, v in self.law.intervals.items()} if self.law else None,
        }


@dataclass(frozen=True)
class HparamStudy:
    """Everything ``python -m analysis hparams`` prints and the report's section draws."""

    points: pd.DataFrame  # the runs' final points (N, D, y, lr, [batch], point, fitted)
    optima: list[Optimum]
    lr_law: OptimumLaw | None
    batch_law: OptimumLaw | None
    loss_law: LawResult | None  # L*(N, D) at the optima
    curvature: tuple[float, float] | None  # k0, kappa of k(N) = k0 N^kappa
    off_optimum_rmse: float  # relative RMSE of L(N, D, eta) over every run
    fixed_lr: list[FixedLrBias]
    columns: dict[str, str]
    warnings: list[str]

    def predict(self, N: float, D: float, lr: float) -> float:
        """The loss law off the optimum (at the optimal batch size): L*(N, D) + k(N) ln(eta/eta*)^2."""
        if self.loss_law is None or self.lr_law is None or self.curvature is None:
            raise DataError("the sweep does not determine the loss law off the optimum (see the warnings)")
        inputs = {"N": np.atleast_1d(N), "D": np.atleast_1d(D), "x": np.atleast_1d(N)}
        at_opt = self.loss_law.fit.predict({k: inputs[k] for k in self.loss_law.fit.law.inputs})[0]
        k = self.curvature[0] * N ** self.curvature[1]
        return float(at_opt + k * np.log(lr / self.lr_law.predict(N, D)) ** 2)

    def as_dict(self) -> dict:
        return {
            "columns": self.columns,
            "runs": len(self.points),
            "optima": [o.as_dict() for o in self.optima],
            "lr_law": self.lr_law.as_dict() if self.lr_law else None,
            "batch_size_law": self.batch_law.as_dict() if self.batch_law else None,
            "loss_law_at_optimum": self.loss_law.as_dict() if self.loss_law else None,
            "off_optimum": None
            if self.curvature is None
            else {
                "formula": "L(N, D, eta) = L*(N, D) + k0 N^kappa ln(eta / eta_opt(N, D))^2",
                "k0": self.curvature[0],
                "kappa": self.curvature[1],
                "relative_rmse": self.off_optimum_rmse,
            },
            "fixed_lr": [f.as_dict() for f in self.fixed_lr],
            "warnings": self.warnings,
        }


def _curvature_law(optima: list[Optimum]) -> tuple[float, float] | None:
    convex = [o for o in optima if np.isfinite(o.curvature) and o.curvature > 0]
    if len({o.N for o in convex}) < 2:
        return None
    kappa, log_k0 = np.polyfit(np.log([o.N for o in convex]), np.log([o.curvature for o in convex]), 1)
    return float(np.exp(log_k0)), float(kappa)


def _fixed_lr(
    points: pd.DataFrame, optima: list[Optimum], n_boot: int, level: float, seed: int, delta: float
) -> list[FixedLrBias]:
    """One entry per learning rate swept at every (N, D) point (the best batch size at it). The law's
    intervals take each point's noise from its optimum's bootstrap (one run per point and learning
    rate has none of its own)."""
    rng = np.random.default_rng(seed)
    labels = points["point"].to_numpy()
    rounded = points["lr"].map(lambda v: float(f"{v:.6g}"))
    common = set.intersection(*(set(rounded[labels == p]) for p in np.unique(labels)))
    out = []
    for lr in sorted(common):
        at = points[rounded == lr].groupby("point")["y"].min()
        rows = pd.DataFrame(
            {
                "N": [optima[p].N for p in at.index],
                "D": [optima[p].D for p in at.index],
                "y": at.to_numpy(),
                "y_opt": [optima[p].loss.estimate for p in at.index],
            }
        )
        rows["penalty"] = rows["y"] / rows["y_opt"] - 1
        noise = [optima[p].replicates[:, 2] - optima[p].loss.estimate for p in at.index]
        replicates = None
        if n_boot and all(len(n) for n in noise):
            replicates = rows["y"].to_numpy() + np.stack(
                [n[rng.integers(len(n), size=n_boot)] for n in noise], 1
            )
        try:
            law = _loss_law(rows[["N", "D", "y"]], n_boot, level, seed, delta, replicates)
        except DataError:
            law = None
        out.append(FixedLrBias(lr, rows, law))
    return out


def _law_or_warning(optima, which, level, seed, warnings) -> OptimumLaw | None:
    try:
        return fit_optimum_law(optima, which, level=level, seed=seed)
    except DataError as err:
        warnings.append(f"no law of the optimal {which}: {err}")
        return None


def hparam_study(
    table: Table,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    delta: float = 1e-3,
    d_tolerance: float = 0.02,
    max_excess: float = 0.5,
) -> HparamStudy:
    """Optima per (N, D), their laws, the loss law on and off the optimum, the fixed-LR bias."""
    points = table.frame[[c for c in ("N", "D", "y", "lr", "batch") if c in table.frame]].copy()
    points["point"] = point_groups(points, d_tolerance)
    points["fitted"] = near_best(points, points["point"].to_numpy(), max_excess)
    if "batch" in points and points.groupby("point")["batch"].nunique().max() < 2:
        points = points.drop(columns="batch")  # one batch size per point: a learning-rate sweep
    optima = fit_optima(points, n_boot, level, seed, d_tolerance, max_excess)
    warnings = list(table.warnings) + [w for o in optima for w in o.warnings]
    lr_law = _law_or_warning(optima, "lr", level, seed, warnings)
    batch_law = _law_or_warning(optima, "batch_size", level, seed, warnings) if "batch" in points else None
    if batch_law is not None and batch_law.outside == batch_law.points:
        warnings.append(
            "every optimal batch size lies at an edge of its sweep: no batch-size law (sweep 3 or more "
            "batch sizes past the edge)"
        )
        batch_law = None
    frame = pd.DataFrame(
        {"N": [o.N for o in optima], "D": [o.D for o in optima], "y": [o.loss.estimate for o in optima]}
    )
    rng = np.random.default_rng(seed)
    replicates = None  # the optima's bootstrap losses, when every optimum has them
    if n_boot and all(len(o.replicates) for o in optima):
        replicates = np.stack(
            [o.replicates[rng.integers(len(o.replicates), size=n_boot), 2] for o in optima], 1
        )
    try:
        loss_law = _loss_law(frame, n_boot, level, seed, delta, replicates)
    except DataError as err:
        loss_law = None
        warnings.append(f"no loss law at the optimum: {err}")
    curvature = _curvature_law(optima)
    study = HparamStudy(
        points, optima, lr_law, batch_law, loss_law, curvature, float("nan"),
        _fixed_lr(points, optima, n_boot, level, seed, delta), dict(table.columns), warnings,
    )  # fmt: skip
    if loss_law is None or lr_law is None or curvature is None:
        return study
    checked = points[points["fitted"]]
    if "batch" in points:  # the law is at the optimal batch size: check it on the runs nearest to it
        nearest = [
            np.abs(np.log(rows["batch"]) - np.log(optima[p].batch_size.estimate)).idxmin()
            for p, rows in points.groupby("point")
        ]
        checked = checked.merge(points.loc[nearest, ["point", "batch"]], on=["point", "batch"])
    predicted = np.array([study.predict(r.N, r.D, r.lr) for r in checked.itertuples()])
    rmse = float(np.sqrt(np.mean((predicted / checked["y"].to_numpy() - 1) ** 2)))
    return HparamStudy(**{**study.__dict__, "off_optimum_rmse": rmse})


def interval_text(iv: Interval) -> str:
    return f"{iv.estimate:.4g} [{iv.low:.4g}, {iv.high:.4g}]"


def optima_rows(study: HparamStudy) -> tuple[list[str], list[list[str]]]:
    """The per-point table of optima (console and report)."""
    level = f"{100 * study.optima[0].lr.level:g}%"
    headers = ["N", "D", "runs", f"lr_opt [{level}]", "swept lr"]
    if "batch" in study.points:
        headers += [f"B_opt [{level}]", "swept B"]
    headers += ["loss at optimum", "curvature k"]
    rows = []
    for o in study.optima:
        lr = interval_text(o.lr) + ("" if o.lr_inside else " (edge)")
        row = [f"{o.N:.4g}", f"{o.D:.4g}", str(o.runs), lr, f"{o.lr_range[0]:.3g}..{o.lr_range[1]:.3g}"]
        if o.batch_size is not None:
            edge = "" if o.batch_inside else " (edge)"
            row += [interval_text(o.batch_size) + edge, f"{o.batch_range[0]:g}..{o.batch_range[1]:g}"]
        rows.append(row + [interval_text(o.loss), f"{o.curvature:.4g}"])
    return headers, rows


def law_lines(study: HparamStudy) -> list[str]:
    """One sentence per fitted law (console and report)."""
    lines = []
    for law in (study.lr_law, study.batch_law):
        if law is not None:
            terms = f"a = {interval_text(law.a)}" + (f", b = {interval_text(law.b)}" if law.b else "")
            edge = f"; {law.outside} of its {law.points} optima at a sweep edge" if law.outside else ""
            lines.append(f"{law.formula}: c = {interval_text(law.c)}, {terms}{edge}")
    if study.loss_law is not None:
        f = study.loss_law
        est = ", ".join(f"{k} = {interval_text(v)}" for k, v in f.intervals.items())
        named = " (x = N)" if "x" in f.inputs.values() else ""
        lines.append(f"loss at the optimum, {f.fit.law.formula}{named}: {est}")
    if study.curvature is not None:
        k0, kappa = study.curvature
        lines.append(
            f"off the optimum, L(N, D, eta) = L*(N, D) + k(N) ln(eta / eta_opt)^2 with k(N) = {k0:.4g} "
            f"N^{kappa:.3f}: relative RMSE {100 * study.off_optimum_rmse:.2f}% over the runs"
            + (" at the batch size nearest each optimum" if "batch" in study.points else "")
        )
    return lines


def bias_rows(study: HparamStudy) -> tuple[list[str], list[list[str]]]:
    """Per fixed learning rate: the loss penalty against the optimum and the fitted exponent."""
    exponent = "alpha" if study.loss_law is not None and "alpha" in study.loss_law.intervals else None
    headers = ["fixed lr", "mean penalty", "max penalty"]
    if exponent:
        headers += [f"{exponent} at this lr", f"{exponent} at the optima"]
    rows = []
    for f in study.fixed_lr:
        row = [
            f"{f.lr:.4g}",
            f"{100 * f.penalty['penalty'].mean():.2f}%",
            f"{100 * f.penalty['penalty'].max():.2f}%",
        ]
        if exponent:
            fixed = interval_text(f.law.intervals[exponent]) if f.law else "n/a"
            row += [fixed, interval_text(study.loss_law.intervals[exponent])]
        rows.append(row)
    return headers, rows


def _text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [headers, *rows])


def hparam_text(study: HparamStudy) -> str:
    """The console summary of ``python -m analysis hparams``."""
    cols = ", ".join(f"{k} = {v}" for k, v in study.columns.items() if k in study.points)
    parts = [f"{len(study.points)} runs at {len(study.optima)} (N, D) points; columns {cols}", ""]
    parts += [_text_table(*optima_rows(study)), "", *law_lines(study)]
    if study.fixed_lr:
        parts += ["", "one learning rate for every size:", _text_table(*bias_rows(study))]
    return "\n".join(parts)
