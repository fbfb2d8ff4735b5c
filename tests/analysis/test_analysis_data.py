import re

import numpy as np
import pandas as pd
import pytest

from analysis.data import check_protocol, prepare, read_table
from analysis.errors import DataError

ROLES = {"N": "params_non_embedding", "D": "tokens_seen", "C": "flops_measured", "y": "val_loss_ema"}


def test_final_points_are_the_largest_step_of_each_run(runs):
    table = prepare(runs, ROLES)
    assert len(table) == runs["run_id"].nunique() == table.n_runs
    last = runs.loc[runs.groupby("run_id")["step"].idxmax()].set_index("run_id")
    got = table.frame.set_index("run_id")
    np.testing.assert_allclose(got["D"], last.loc[got.index, "tokens_seen"])
    assert prepare(runs, ROLES, points="all").frame.shape[0] == len(runs)


def test_rows_sharing_the_final_step_are_merged():
    df = pd.DataFrame(
        {
            "run_id": ["a", "a", "a"],
            "step": [10, 20, 20],
            "val_loss_ema": [3.0, 2.0, np.nan],
            "fvd": [np.nan, np.nan, 150.0],
        }
    )
    table = prepare(df, {"x": "val_loss_ema", "y": "fvd"})
    assert table.values("x").tolist() == [2.0] and table.values("y").tolist() == [150.0]


def test_missing_column_names_the_flag(runs):
    with pytest.raises(DataError, match=r"'loss' \(for y; set it with --y COL\)"):
        prepare(runs, ROLES | {"y": "loss"})


def test_missing_d_suggests_the_cost_factor(runs):
    with pytest.raises(DataError, match="--cost-factor"):
        prepare(runs.drop(columns="tokens_seen"), ROLES)
    table = prepare(runs.drop(columns="tokens_seen"), ROLES, cost_factor=6.02)
    np.testing.assert_allclose(table.values("D"), prepare(runs, ROLES).values("D"))
    assert any("derived" in n for n in table.notes)


def test_nan_final_loss_is_dropped_with_a_warning(runs):
    bad = runs.copy()
    run = bad["run_id"].iloc[0]
    bad.loc[(bad["run_id"] == run) & (bad["step"] == bad["step"].max()), "val_loss_ema"] = np.nan
    table = prepare(bad, ROLES)
    assert run not in set(table.frame["run_id"])
    assert len(table.warnings) == 1 and run in table.warnings[0] and "val_loss_ema" in table.warnings[0]


def test_non_positive_values_are_an_error(runs):
    bad = runs.copy()
    bad.loc[bad.index[-1], "flops_measured"] = 0.0
    with pytest.raises(
        DataError, match=r"'flops_measured' \(C\) must be > 0.*" + re.escape(bad["run_id"].iloc[-1])
    ):
        prepare(bad, ROLES)


@pytest.mark.parametrize("column", ["protocol", "fvd_protocol"])
def test_mixed_metric_protocols_are_refused(runs, column):
    odd_run = pd.factorize(runs["run_id"])[0] % 2 == 1
    mixed = runs.assign(**{column: np.where(odd_run, "256 clips", "2048 clips")})
    with pytest.raises(DataError, match="2 different protocols.*not comparable"):
        check_protocol(mixed, "fvd")
    with pytest.raises(DataError, match="protocols"):
        prepare(mixed, {"x": "val_loss_ema", "y": "fvd"})


def test_one_protocol_and_protocols_of_missing_values_pass(runs):
    check_protocol(runs, "fvd")  # one protocol where fvd is present, None elsewhere
    other = runs.assign(fvd_protocol=np.where(runs["fvd"].isna(), "unused", runs["fvd_protocol"]))
    check_protocol(other, "fvd")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_table(str(tmp_path / "nope.csv"))
