import numpy as np
import pytest

from analysis.bootstrap import bootstrap_fit, interval, resample_runs
from analysis.data import prepare
from analysis.fitting import fit
from analysis.laws import saturating_power_law
from analysis.study import fit_law


def test_resamples_are_multisets_of_the_present_runs():
    runs = np.array([0, 0, 2, 3, 3, 3])  # run 1 absent from this table
    counts = resample_runs(runs, 200, seed=1, size=5)
    assert counts.shape == (200, 5)
    assert (counts.sum(axis=1) == 3).all()
    assert (counts[:, [1, 4]] == 0).all()
    assert (counts[:, [0, 2, 3]] > 0).any(axis=0).all()


def test_interval_is_a_percentile_interval():
    iv = interval(np.arange(1001.0), 500.0, 0.9)
    assert (iv.low, iv.high) == pytest.approx((50.0, 950.0))
    assert np.isnan(interval(np.array([np.nan, 1.0]), 1.0, 0.9).low)


def test_intervals_cover_the_true_parameters():
    rng = np.random.default_rng(0)
    c = np.geomspace(1e15, 1e21, 40)
    y = (1.8 + 300.0 * c**-0.15) * np.exp(0.01 * rng.standard_normal(40))
    best = fit(saturating_power_law("C"), {"C": c}, y)
    run = np.arange(40)
    boot = bootstrap_fit(best, {"C": c}, y, run, resample_runs(run, 150, seed=2), level=0.99)
    assert boot.n_boot == 150 and boot.n_failed == 0
    ivs = boot.intervals(best.estimates)
    for name, true in (("E", 1.8), ("A", 300.0), ("alpha", 0.15)):
        iv = ivs[name]
        assert iv.low < iv.estimate < iv.high and iv.se > 0
        assert iv.low < true < iv.high and abs(iv.estimate - true) < 3 * iv.se, (name, iv)


def test_all_points_are_resampled_by_run(runs):
    table = prepare(runs, {"x": "flops_measured", "y": "val_loss_ema"}, points="all")
    res = fit_law(saturating_power_law("x"), table, {"x": "x"}, n_boot=40, seed=0)
    assert res.fit.n_points == len(runs) and res.table.n_runs == runs["run_id"].nunique()
    assert res.boot.n_boot == 40
    assert all(np.isfinite([iv.low, iv.high]).all() for iv in res.intervals.values())
