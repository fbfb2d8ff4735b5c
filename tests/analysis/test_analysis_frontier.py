import numpy as np
import pandas as pd
import pytest

from analysis.bootstrap import resample_runs
from analysis.data import prepare
from analysis.frontier import (
    FrontierError,
    compute_groups,
    cost_ratio,
    envelope_frontier,
    isoflop_frontier,
    parametric_frontier,
)
from analysis.laws import chinchilla_law
from analysis.study import fit_law

ROLES = {"N": "params_non_embedding", "D": "tokens_seen", "C": "flops_measured", "y": "val_loss_ema"}
SIZES = tuple(np.geomspace(1e6, 2e8, 9))
BUDGETS = (1e15, 3e15, 1e16, 3e16, 1e17)


def test_compute_groups_cluster_jittered_budgets():
    c = np.array([1e18, 1.05e18, 0.97e18, 1e19, 1.1e19, 1e20])
    assert compute_groups(c).tolist() == [0, 0, 0, 1, 1, 2]
    assert compute_groups(c, budget=np.array(["a", "a", "b", "b", "c", "c"])).tolist() == [0, 0, 1, 1, 2, 2]


@pytest.fixture
def isoflop(make_runs):
    runs = make_runs(sizes=SIZES, budgets=BUDGETS, noise=0.002, evals=5)
    return prepare(runs, ROLES, optional={"budget": "flop_budget"}), prepare(runs, ROLES, points="all")


def test_isoflop_and_parametric_approaches_recover_the_true_exponent(isoflop, truth):
    final, _ = isoflop
    a_true = truth["beta"] / (truth["alpha"] + truth["beta"])
    counts = resample_runs(final.run, 60, seed=0, size=final.n_codes)
    target = 1e18
    two = isoflop_frontier(final, 60, target=target, use_budget=True)
    assert len(two.points) == len(BUDGETS)
    assert two.allocation.a == pytest.approx(a_true, abs=0.03)
    assert two.allocation.a + two.allocation.b == pytest.approx(1.0, abs=0.02)  # D_opt = C / (k N_opt)
    assert two.intervals["a"].low < a_true < two.intervals["a"].high

    res = fit_law(chinchilla_law(), final, {"N": "N", "D": "D"}, n_boot=60, counts=counts)
    three = parametric_frontier(res.fit, res.boot, cost_ratio(final), target=target)
    assert three.allocation.a == pytest.approx(a_true, abs=0.02)
    n_true = (truth["alpha"] * truth["A"] / (truth["beta"] * truth["B"])) ** (1 / 0.62) * (
        target / 6.02
    ) ** a_true
    assert three.intervals["N_opt"].estimate == pytest.approx(n_true, rel=0.25)
    assert three.intervals["N_opt"].low < three.intervals["N_opt"].estimate < three.intervals["N_opt"].high


def test_envelope_approach_on_training_curves(isoflop):
    _, curves = isoflop
    one = envelope_frontier(curves, resample_runs(curves.run, 30, seed=0, size=curves.n_codes), target=1e18)
    assert 0.2 < one.allocation.a < 0.8
    assert "training curves" in one.notes[0]
    assert np.isfinite(one.intervals["a"].low)


def test_no_isoflop_structure_is_a_clear_error(make_runs):
    runs = make_runs(sizes=(1e6, 1e7), budgets=(1e15, 1e16))
    table = prepare(runs, ROLES)
    with pytest.raises(FrontierError, match="need 2 or more.*--budget-col"):
        isoflop_frontier(table, 5, target=1e18)


def test_isoflop_intervals_keep_each_profiles_sizes(make_runs, truth):
    """Four sizes per budget, as a small IsoFLOP grid trains: resampling runs would drop a size from a
    profile in most replicates; the residual bootstrap keeps every profile and covers the true exponent."""
    a_true = truth["beta"] / (truth["alpha"] + truth["beta"])
    g = (truth["alpha"] * truth["A"] / (truth["beta"] * truth["B"])) ** (1 / (truth["alpha"] + truth["beta"]))
    budgets = (1e15, 1e16, 1e17)
    spread = np.array([0.25, 0.6, 1.5, 4.0])  # around each budget's optimum
    grids = []
    for i, b in enumerate(budgets):
        grids.append(make_runs(sizes=tuple(g * (b / 6) ** a_true * spread), budgets=(b,), seed=i))
    runs = pd.concat(grids)
    table = prepare(runs, ROLES, optional={"budget": "flop_budget"})
    two = isoflop_frontier(table, 200, target=1e18, use_budget=True, seed=1)
    assert len(two.points) == len(budgets)
    assert two.warnings == ()
    assert two.intervals["a"].low < a_true < two.intervals["a"].high
    assert two.intervals["a"].high - two.intervals["a"].low < 0.3
