"""Laws of the optimal learning rate and batch size, recovered from losses of a known law."""

import warnings

import numpy as np
import pandas as pd
import pytest

from analysis.hparams import fit_optima, fit_optimum_law, quadratic_minimum


def swept(a_lr=-0.5, b_lr=-0.2, a_bs=0.25, noise=0.002, seed=0, batch_sizes=(16, 32, 64, 128)):
    """Losses of a sweep whose optima follow eta* = 0.3 N^a_lr D^b_lr, B* = 2 N^a_bs; the penalty is
    quadratic in log eta and log B around them (as Yin et al. find), plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in (1e5, 3e5, 1e6, 3e6):
        for d in (1e8, 1e9):
            eta, bs = 0.3 * n**a_lr * d**b_lr, 2 * n**a_bs
            for lr in eta * np.exp(np.linspace(-1.5, 1.5, 7)):
                for b in batch_sizes:
                    loss = 1 + 50 / n**0.3 + 0.05 * np.log(lr / eta) ** 2 + 0.02 * np.log(b / bs) ** 2
                    rows.append({"N": n, "D": d, "lr": lr, "bs": b, "loss": loss + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def test_quadratic_minimum_finds_the_vertex_and_reports_a_concave_fit():
    x = np.linspace(-2, 2, 9)
    assert quadratic_minimum(x, (x - 0.7) ** 2)[0] == pytest.approx([0.7])
    location, convex = quadratic_minimum(x, -((x - 0.7) ** 2))
    assert not convex and location[0] in (-2, 2)


def test_the_exponents_of_known_optimum_laws_are_recovered_within_their_intervals():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every optimum inside the sweep: no warning
        optima = fit_optima(swept(), y="loss", lr="lr", batch_size="bs", n_boot=100)
    assert len(optima) == 8 and all(o.inside for o in optima)
    lr_law = fit_optimum_law(optima, "lr")
    assert lr_law.a.low <= -0.5 <= lr_law.a.high and lr_law.a.estimate == pytest.approx(-0.5, abs=0.05)
    assert lr_law.b.low <= -0.2 <= lr_law.b.high
    assert lr_law.predict(1e6, 1e9) == pytest.approx(0.3 * 1e6**-0.5 * 1e9**-0.2, rel=0.15)
    bs_law = fit_optimum_law(optima, "batch_size")
    assert bs_law.a.low <= 0.25 <= bs_law.a.high and bs_law.b.low <= 0 <= bs_law.b.high


def test_an_optimum_outside_the_sweep_warns_naming_the_edge():
    table = swept()
    table = table[(table["lr"] < table.groupby(["N", "D"])["lr"].transform("median")) & (table["bs"] == 32)]
    with pytest.warns(UserWarning, match="extend the sweep past that edge"):
        fit_optima(table, y="loss", lr="lr", n_boot=20)
    with pytest.raises(ValueError, match="at least 3 learning rates"):
        fit_optima(table[table["lr"] == table["lr"].min()], y="loss", lr="lr")
