"""The study's power laws in N and C, the agreement of the frontier approaches, and the held-out
prediction of an IsoFLOP grid's largest budget."""

import numpy as np
import pandas as pd

from analysis.bootstrap import Interval
from analysis.frontier import Allocation, Frontier
from analysis.plots import make_plots
from analysis.report import build_sections, render_markdown
from analysis.study import StudyOptions, frontier_agreement, run_study


def test_size_law_is_the_fitted_surface_at_the_largest_data_budget(runs, truth):
    study = run_study(runs, StudyOptions(n_boot=60))
    law, main = study.size_law, study.main
    d = runs.loc[runs["step"] == runs.groupby("run_id")["step"].transform("max"), "tokens_seen"].max()
    assert law.d == d
    est = main.fit.estimates
    assert law.intervals["E_D"].estimate == est["E"] + est["B"] * d ** -est["beta"]
    assert law.intervals["alpha"] == main.intervals["alpha"]
    n = np.array([1e6, 1e8])
    assert np.allclose(law.predict(n), main.fit.predict({"N": n, "D": np.full(2, d)}))
    e_d = law.intervals["E_D"]
    assert e_d.low < e_d.estimate < e_d.high
    assert abs(law.intervals["alpha"].estimate - truth["alpha"]) < 0.1


def test_compute_law_is_fitted_to_the_envelope_of_the_curves(runs):
    study = run_study(runs, StudyOptions(n_boot=60))
    law = study.compute_law
    assert law is not None and law.curves["run_id"].nunique() == runs["run_id"].nunique()
    alpha = law.intervals["alpha"]
    assert 0 < alpha.low <= alpha.estimate <= alpha.high
    # every envelope point is the lowest loss any run reaches at that compute
    assert np.all(law.loss <= law.fit.predict({"C": law.compute}) * 1.2)
    assert "power_laws" in {p.name for p in make_plots(study)}
    text = render_markdown("t", build_sections(study, []))
    assert "Power laws in N and C" in text and "L(C), compute envelope" in text


def test_prediction_holds_out_the_whole_largest_budget(runs):
    study = run_study(runs, StudyOptions(n_boot=0))
    e = study.extrapolation
    largest = runs["flop_budget"].max()
    assert e.order_by == "budget"
    assert set(e.held_out["run_id"]) == set(runs.loc[runs["flop_budget"] == largest, "run_id"])
    assert e.mean_abs_pct < 3  # the synthetic law is a Chinchilla law: its prediction is close


def _frontier(name: str, low: float, high: float) -> Frontier:
    iv = Interval(np.sqrt(low * high), low, high, 0.0, 0.95)
    return Frontier(name, Allocation(0.5, 0.0, 0.5, 0.0), 1e20, {"N_opt": iv}, pd.DataFrame())


def test_frontier_agreement_says_whether_the_intervals_overlap_and_why_not():
    agree = frontier_agreement([_frontier("1", 1e8, 4e8), _frontier("2", 3e8, 9e8), _frontier("3", 2e8, 5e8)])
    assert agree.startswith("The 3 approaches agree")
    disagree = frontier_agreement([_frontier("1", 1e8, 2e8), _frontier("2", 3e8, 9e8)])
    assert disagree.startswith("The approaches disagree") and "weigh the runs differently" in disagree
    assert frontier_agreement([_frontier("1", 1e8, 2e8)]) == ""


def test_held_out_predictions_carry_bootstrap_intervals(runs, truth):
    e = run_study(runs, StudyOptions(n_boot=60)).extrapolation
    h = e.held_out
    assert e.level == 0.95 and (h["predicted_low"] <= h["predicted"]).all()
    assert (h["predicted"] <= h["predicted_high"]).all() and (h["predicted_low"] < h["predicted_high"]).all()
    true_loss = truth["E"] + truth["A"] / h["N"] ** truth["alpha"] + truth["B"] / h["D"] ** truth["beta"]
    assert ((h["predicted_low"] <= true_loss) & (true_loss <= h["predicted_high"])).all()
    assert e.n_inside == int(((h["y"] >= h["predicted_low"]) & (h["y"] <= h["predicted_high"])).sum())
    assert e.as_dict()["n_inside_interval"] == e.n_inside
    assert run_study(runs, StudyOptions(n_boot=0)).extrapolation.level is None  # no resamples, no intervals
