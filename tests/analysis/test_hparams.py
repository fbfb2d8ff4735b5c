"""Laws of the optimal learning rate and batch size, recovered from losses of a known law."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.data import prepare
from analysis.errors import DataError
from analysis.hparam_laws import hparam_study
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
                    rows.append({"N": n, "D": d, "lr": lr, "batch": b, "y": loss + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def one_lr_grid(noise=0.001, seed=0):
    """A study at one D whose sizes share one absolute learning-rate grid (as a plain grid has):
    eta* = 0.3 N^-0.5, L = 1 + 50 N^-0.3 + 0.05 ln(eta / eta*)^2."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, n in enumerate((1e5, 3e5, 1e6, 3e6, 1e7)):
        eta = 0.3 * n**-0.5
        for lr in 5e-5 * 2.0 ** np.arange(7):
            loss = 1 + 50 / n**0.3 + 0.05 * np.log(lr / eta) ** 2 + rng.normal(0, noise)
            rows.append({"run_id": f"{i}-{lr:g}", "step": 100, "N": n, "D": 1e9, "lr": lr, "y": loss})
    return pd.DataFrame(rows)


def test_quadratic_minimum_finds_the_vertex_and_reports_a_concave_fit():
    x = np.linspace(-2, 2, 9)
    v = quadratic_minimum(x, (x - 0.7) ** 2 + 3)
    assert (
        v.convex
        and v.x == pytest.approx(0.7)
        and v.value == pytest.approx(3)
        and v.curvature == pytest.approx(1)
    )
    v = quadratic_minimum(x, -((x - 0.7) ** 2))
    assert not v.convex and v.x in (-2, 2)
    xx, zz = (g.ravel() for g in np.meshgrid(x, np.linspace(-1, 2, 4)))
    v = quadratic_minimum(xx, 2 + (xx - 0.5) ** 2 + 0.5 * (zz - 1.2) ** 2 + 0.2 * (xx - 0.5) * (zz - 1.2), zz)
    assert (v.x, v.z, v.value) == pytest.approx((0.5, 1.2, 2.0))
    two = np.isin(zz, (-1, 2))  # two batch sizes: the better edge, and the lr optimum there
    v = quadratic_minimum(xx[two], (xx[two] - 0.5 - 0.1 * zz[two]) ** 2 + 0.3 * zz[two], zz[two])
    assert v.z == -1 and v.x == pytest.approx(0.4)


def test_the_exponents_of_known_optimum_laws_are_recovered_within_their_intervals():
    optima = fit_optima(swept(), n_boot=100)
    assert len(optima) == 8 and all(o.inside for o in optima) and not any(o.warnings for o in optima)
    lr_law = fit_optimum_law(optima, "lr")
    assert lr_law.a.low <= -0.5 <= lr_law.a.high and lr_law.a.estimate == pytest.approx(-0.5, abs=0.05)
    assert lr_law.b.low <= -0.2 <= lr_law.b.high
    assert lr_law.predict(1e6, 1e9) == pytest.approx(0.3 * 1e6**-0.5 * 1e9**-0.2, rel=0.15)
    bs_law = fit_optimum_law(optima, "batch_size")
    assert bs_law.a.low <= 0.25 <= bs_law.a.high and bs_law.b.low <= 0 <= bs_law.b.high


def test_an_optimum_outside_the_sweep_warns_naming_the_edge():
    table = swept()
    table = table[
        (table["lr"] < table.groupby(["N", "D"])["lr"].transform("median")) & (table["batch"] == 32)
    ]
    optima = fit_optima(table.drop(columns="batch"), n_boot=20)
    assert not any(o.inside for o in optima)
    assert all(any("extend the sweep above that edge" in w for w in o.warnings) for o in optima)
    with pytest.raises(DataError, match="a quadratic optimum needs at least 3"):
        fit_optima(table[table["lr"] == table["lr"].min()].drop(columns="batch"))


def test_study_recovers_the_loss_law_at_and_off_the_optimum_and_the_bias_of_one_learning_rate():
    table = prepare(one_lr_grid(), {"N": "N", "D": "D", "y": "y", "lr": "lr"})
    study = hparam_study(table, n_boot=100)
    assert study.lr_law.a.low <= -0.5 <= study.lr_law.a.high
    alpha = study.loss_law.intervals["alpha"]
    assert alpha.estimate == pytest.approx(0.3, abs=0.03) and alpha.low <= 0.3 <= alpha.high
    assert study.curvature[0] == pytest.approx(0.05, rel=0.1) and abs(study.curvature[1]) < 0.02
    assert study.off_optimum_rmse < 0.005
    assert study.predict(1e6, 1e9, 1e-3) == pytest.approx(
        1 + 50 / 1e6**0.3 + 0.05 * np.log(1e-3 / 3e-4) ** 2, rel=0.01
    )
    # One learning rate for every size: each lr is far from some size's optimum, so a plain fit of its
    # losses is biased: at the grid's ends the exponent's interval leaves out the true 0.3.
    assert len(study.fixed_lr) == 7
    for bias in study.fixed_lr:
        assert bias.penalty["penalty"].min() >= -0.01 and bias.penalty["penalty"].max() > 0.02
    for bias in (study.fixed_lr[0], study.fixed_lr[-1]):
        assert not bias.law.intervals["alpha"].low <= 0.3 <= bias.law.intervals["alpha"].high


def test_hparams_command_prints_the_laws_and_json(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    one_lr_grid().to_csv(path, index=False)
    args = [str(path), "--N", "N", "--D", "D", "--y", "y", "--lr", "lr", "--bootstrap", "50"]
    assert main(["hparams", *args]) == 0
    out = capsys.readouterr().out
    assert "eta_opt = c N^a" in out and "one learning rate for every size" in out
    assert main(["hparams", *args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["lr_law"]["a"]["low"] <= -0.5 <= result["lr_law"]["a"]["high"]
    assert len(result["optima"]) == 5 and result["off_optimum"]["relative_rmse"] < 0.005
    frame = one_lr_grid().rename(columns={"y": "<b>loss</b>"})
    frame.to_csv(path, index=False)
    out = tmp_path / "report"
    assert (
        main(
            [
                "hparams",
                str(path),
                "--N",
                "N",
                "--D",
                "D",
                "--y",
                "<b>loss</b>",
                "--lr",
                "lr",
                "--out",
                str(out),
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    page = (out / "report.html").read_text()
    assert (
        "Hyperparameter scaling laws" in page and "&lt;b&gt;loss&lt;/b&gt;" in page and "<b>loss" not in page
    )
    assert (out / "figures" / "hparams_loss_vs_lr.png").is_file() and (
        out / "figures" / "hparams_fixed_lr.svg"
    ).is_file()
    assert json.loads((out / "results.json").read_text())["lr_law"]["points"] == 5
    capsys.readouterr()
    assert main(["hparams", *args, "--lr", "nope"]) == 2
    assert "'nope' (for lr; set it with --lr COL)" in capsys.readouterr().err


def test_runs_that_did_not_finish_are_left_out_with_a_warning():
    from analysis.hparam_laws import hparam_table

    runs = one_lr_grid().assign(finished=True)
    diverged = runs.iloc[[0]].assign(run_id="diverged", finished=False, D=3e8, lr=0.1, y=2.0)
    table = hparam_table(pd.concat([runs, diverged]), {"N": "N", "D": "D", "y": "y", "lr": "lr"})
    assert len(table) == len(runs) and "diverged" not in set(table.frame["run_id"])
    assert any("did not finish" in w and "diverged" in w for w in table.warnings)
    assert len(hparam_study(table, n_boot=20).optima) == 5
