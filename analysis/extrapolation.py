"""Extrapolation check: hold out the largest-compute runs, fit the rest, score the prediction."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.bootstrap import refit_replicates
from analysis.data import Table
from analysis.errors import FitError
from analysis.fitting import Fit, fit
from analysis.laws import Law


@dataclass(frozen=True)
class Extrapolation:
    """Errors of a fit on the smaller runs when it predicts the held-out larger ones (log space)."""

    fit: Fit
    held_out: pd.DataFrame  # run_id, inputs, y, predicted, log_error, pct_error[, predicted_low/high]
    order_by: str
    rmse_log: float
    mean_abs_pct: float
    max_abs_pct: float
    level: float | None = None  # of the predictions' bootstrap intervals, when there are any

    @property
    def n_inside(self) -> int | None:
        """Held-out losses inside their prediction's bootstrap interval (None without intervals)."""
        if self.level is None:
            return None
        h = self.held_out
        return int(((h["y"] >= h["predicted_low"]) & (h["y"] <= h["predicted_high"])).sum())

    def as_dict(self) -> dict:
        return {
            "order_by": self.order_by,
            "n_held_out_runs": int(self.held_out["run_id"].nunique()),
            "n_fit_points": self.fit.n_points,
            "rmse_log": self.rmse_log,
            "in_sample_rmse_log": self.fit.rmse_log,
            "mean_abs_pct_error": self.mean_abs_pct,
            "max_abs_pct_error": self.max_abs_pct,
            "interval_level": self.level,
            "n_inside_interval": self.n_inside,
            "held_out": self.held_out.to_dict(orient="records"),
        }


def extrapolation_check(
    law: Law,
    table: Table,
    *,
    holdout: float = 0.2,
    order_by: str = "C",
    delta: float = 1e-3,
    weights: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    level: float = 0.95,
) -> Extrapolation:
    """Hold out the ``holdout`` fraction of runs (at least one) with the largest ``order_by`` value,
    and every run tied with the smallest of them: ordered by ``"budget"``, the runs of an IsoFLOP grid's
    largest budget are held out together (a budget is never split between fit and check).

    With ``counts`` (run multiplicities from :func:`~analysis.bootstrap.resample_runs`) the fit on the
    kept runs is refitted on each resample of them, giving each prediction a ``level`` percentile
    interval (``predicted_low``, ``predicted_high``): the uncertainty of the fitted law, not the
    run-to-run noise of the held-out losses."""
    if not 0 < holdout < 1:
        raise FitError(f"holdout must be a fraction in (0, 1), got {holdout}")
    f = table.frame
    size = pd.to_numeric(f[order_by]).groupby(f["run"]).max().sort_values()
    n_out = max(1, math.ceil(holdout * len(size)))
    out = f["run"].isin(size.index[size >= size.iloc[-n_out]]).to_numpy()
    rest = ~out
    if rest.sum() <= len(law.params):
        raise FitError(
            f"holding out {n_out} of {len(size)} runs leaves {int(rest.sum())} points for {len(law.params)} "
            "parameters. Fix: add runs, or lower --holdout."
        )
    inputs = {k: table.values(k) for k in law.inputs}
    sub = fit(
        law,
        {k: v[rest] for k, v in inputs.items()},
        table.values("y")[rest],
        delta=delta,
        weights=None if weights is None else weights[rest],
    )
    predicted = sub.predict({k: v[out] for k, v in inputs.items()})
    observed = table.values("y")[out]
    log_err = np.log(predicted) - np.log(observed)
    pct = 100.0 * (predicted / observed - 1.0)
    cols = ["run_id", *dict.fromkeys(c for c in (*law.inputs, "C", order_by) if c in f)]
    held = f.loc[out, cols + ["y"]].assign(predicted=predicted, log_error=log_err, pct_error=pct)
    if counts is not None and len(counts):
        base = np.ones(int(rest.sum())) if weights is None else weights[rest]
        run = table.run[rest]
        thetas = refit_replicates(sub, {k: v[rest] for k, v in inputs.items()}, table.values("y")[rest],
                                  counts[:, run] * base)  # fmt: skip
        ok = np.isfinite(thetas).all(axis=1)
        if ok.sum() >= 2:
            replicas = law.predict(thetas[ok], {k: v[out] for k, v in inputs.items()})  # (replicates, out)
            tail = 50.0 * (1.0 - level)
            low, high = np.percentile(replicas, [tail, 100.0 - tail], axis=0)
            held = held.assign(predicted_low=low, predicted_high=high)
    return Extrapolation(
        fit=sub,
        held_out=held.reset_index(drop=True),
        order_by=order_by,
        rmse_log=float(np.sqrt(np.mean(log_err**2))),
        mean_abs_pct=float(np.mean(np.abs(pct))),
        max_abs_pct=float(np.max(np.abs(pct))),
        level=level if "predicted_low" in held else None,
    )
