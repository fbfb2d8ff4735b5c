"""From a runs table to validated points: column mapping, point selection and input checks.

Works on any table with columns for N, D, C and a metric; the defaults match lit_vdit's
``runs.csv`` (one row per run per evaluation point).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import DataError

POINTS = ("final", "all")
# Columns that tell runs of different kinds apart (lit_vdit's runs.csv: class-, text- or un-conditioned,
# and the text mechanism): a fit pools them only when asked to (``pool``).
KIND_COLUMNS = ("conditioning",)
# Flag that sets each role's column on the command line, named in error messages.
FLAGS = {
    "N": "--N", "D": "--D", "C": "--C", "y": "--y", "x": "--x", "weight": "--weight-col", "lr": "--lr",
    "batch": "--batch-size",
}  # fmt: skip


@dataclass(frozen=True)
class Columns:
    """Which table columns hold what. Defaults match lit_vdit's ``runs.csv``."""

    N: str = "params_non_embedding"
    D: str = "tokens_seen"
    C: str = "flops_measured"
    y: str = "val_loss_ema"
    run: str = "run_id"
    step: str = "step"
    budget: str = "flop_budget"
    weight: str | None = None


@dataclass(frozen=True)
class Table:
    """Validated points. ``frame`` has one column per role (N, D, C, y, ...), all finite and > 0,
    plus ``run`` (integer code shared by every table built from the same source), ``run_id`` and
    ``step``. ``notes`` say what was assumed; ``warnings`` what was dropped."""

    frame: pd.DataFrame
    columns: dict[str, str]
    notes: tuple[str, ...]
    warnings: tuple[str, ...]
    n_codes: int  # runs in the source table: run codes lie in range(n_codes)

    def __len__(self) -> int:
        return len(self.frame)

    def values(self, role: str) -> np.ndarray:
        return self.frame[role].to_numpy(float)

    @property
    def run(self) -> np.ndarray:
        return self.frame["run"].to_numpy()

    @property
    def n_runs(self) -> int:
        return int(self.frame["run"].nunique())


def read_table(path: str) -> pd.DataFrame:
    """Read a CSV, with a clear error when it is missing or empty."""
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"no such file: {path}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: expected a CSV table with a header row") from None
    if df.empty:
        raise DataError(f"{path} has a header but no rows")
    return df


def check_protocol(df: pd.DataFrame, metric: str) -> None:
    """Refuse a metric measured under more than one protocol (``<metric>_protocol`` or ``protocol``)."""
    rows = df[df[metric].notna()] if metric in df else df
    for col in (f"{metric}_protocol", "protocol"):
        if col not in rows:
            continue
        found = sorted(map(str, rows[col].dropna().unique()))
        if len(found) > 1:
            shown = ", ".join(repr(v) for v in found[:4]) + (", ..." if len(found) > 4 else "")
            raise DataError(
                f"{metric!r} was measured under {len(found)} different protocols (column {col!r}: {shown}); "
                "values from different protocols are not comparable and must not be fitted together. "
                f"Fix: keep the rows of one protocol (filter the table on {col!r}) and fit again."
            )


def select_rows(df: pd.DataFrame, where: Sequence[str]) -> pd.DataFrame:
    """The rows of ``df`` matching every ``COL=VALUE`` of ``where`` (compared as text)."""
    for condition in where:
        column, sep, value = condition.partition("=")
        if not sep or not column:
            raise DataError(f"--where takes COL=VALUE (e.g. conditioning=text-cross), got {condition!r}")
        if column not in df:
            raise DataError(f"--where {condition}: no column {column!r} (columns: {', '.join(df.columns)})")
        df = df[df[column].astype(str) == value]
        if df.empty:
            raise DataError(f"no rows with {column} = {value!r}")
    return df


def check_kinds(df: pd.DataFrame, pool: Sequence[str] = ()) -> None:
    """Refuse a table that mixes runs of different kinds (:data:`KIND_COLUMNS`) unless pooled."""
    for column in KIND_COLUMNS:
        if column in df and column not in pool:
            kinds = sorted(str(v) for v in df[column].dropna().unique())
            if len(kinds) > 1:
                raise DataError(
                    f"the table mixes runs of {column} {kinds}: fit them separately (--where "
                    f"{column}={kinds[0]}) or together (--pool {column})"
                )


def prepare(
    df: pd.DataFrame,
    roles: Mapping[str, str],
    *,
    run: str | None = "run_id",
    step: str | None = "step",
    points: str = "final",
    cost_factor: float | None = None,
    optional: Mapping[str, str] | None = None,
    pool: Sequence[str] = (),
) -> Table:
    """Select, check and convert the points of ``df`` for the given roles (role -> column).

    ``points="final"`` keeps each run's last evaluation (the rows at its largest step, merged);
    ``"all"`` keeps every row, which also counts the early points of a run (where D and C are
    still growing) as separate points. A role ``"D"`` (or ``"C"``) whose column is absent is derived
    from ``C = cost_factor * N * D`` when ``cost_factor`` is given. ``optional`` roles (budget,
    weight) are carried along when their column exists. Rows with missing or non-finite values
    are dropped with a warning; non-positive values raise :class:`DataError`, and so do runs of
    different kinds (:func:`check_kinds`) unless their column is in ``pool``.
    """
    if points not in POINTS:
        raise DataError(f"points must be one of {POINTS}, got {points!r}")
    roles = dict(roles)
    notes: list[str] = []
    derive = _derivable(df, roles, cost_factor)
    missing = [r for r, c in roles.items() if c not in df and r not in derive]
    if missing:
        _raise_missing(df, roles, missing, cost_factor)
    if "y" in roles:
        check_protocol(df, roles["y"])
    check_kinds(df, pool)

    has_run = run is not None and run in df
    has_step = step is not None and step in df
    src = pd.DataFrame(index=df.index)
    src["run_id"] = df[run].astype(str) if has_run else df.index.astype(str)
    src["run"], uniques = pd.factorize(src["run_id"])
    n_codes = len(uniques)
    src["step"] = pd.to_numeric(df[step], errors="coerce") if has_step else np.arange(len(df))
    if not has_run:
        notes.append(f"no run column ({run!r}): each row is treated as one run")
    for role, col in roles.items():
        if role not in derive:
            src[role] = _numeric(df[col], role)
    extra = {r: c for r, c in (optional or {}).items() if c is not None and c in df}
    for role, col in extra.items():
        src[role] = df[col] if role == "budget" else _numeric(df[col], role)

    if points == "final" and has_run:
        at_last = src["step"] == src.groupby("run")["step"].transform("max")
        if not has_step:
            notes.append(f"no step column ({step!r}): the last row of each run is its final point")
        # Several rows can share a run's last step (e.g. metrics logged separately): merge them.
        src = src[at_last].groupby("run", as_index=False, sort=False).last()

    warnings: list[str] = []
    checked = [r for r in roles if r not in derive] + [r for r in extra if r != "budget"]
    bad = ~np.isfinite(src[checked].to_numpy(float)).all(axis=1)
    if bad.any():
        cols = [
            roles.get(r) or extra[r]
            for r in checked
            if not np.isfinite(src.loc[bad, r].to_numpy(float)).all()
        ]
        warnings.append(
            f"dropped {int(bad.sum())} of {len(src)} points with a missing, non-numeric or infinite value in "
            f"{', '.join(map(repr, cols))} (runs: {_some(src.loc[bad, 'run_id'])}); a diverged or unfinished "
            "run shows up this way. Fix: rerun or remove these runs if the drop is unintended."
        )
        src = src[~bad]
    if src.empty:
        raise DataError("no valid points remain after dropping rows with missing values")
    for role in checked:
        nonpos = src[role] <= 0
        if nonpos.any():
            col = roles.get(role) or extra[role]
            raise DataError(
                f"column {col!r} ({role}) must be > 0 because the laws are fitted in log space, but "
                f"{int(nonpos.sum())} of {len(src)} points are <= 0 "
                f"(runs: {_some(src.loc[nonpos, 'run_id'])}). "
                f"Fix: remove those rows, or choose another column with {FLAGS.get(role, '--' + role)}."
            )
    derived = {}
    for role in derive:
        k = float(cost_factor)
        src[role] = src["C"] / (k * src["N"]) if role == "D" else k * src["N"] * src["D"]
        derived[role] = f"derived: C / ({k:g} N)" if role == "D" else f"derived: {k:g} N D"
        notes.append(f"{role} is {derived[role]}, as the table has no column {roles[role]!r}")
    columns = {r: derived.get(r, roles[r]) for r in roles} | extra
    return Table(src.reset_index(drop=True), columns, tuple(notes), tuple(warnings), n_codes)


def _numeric(values: pd.Series, role: str) -> pd.Series:
    """The column as floats; a column with values but no number among them is an error."""
    out = pd.to_numeric(values, errors="coerce")
    if out.isna().all() and values.notna().any():
        example = values.dropna().iloc[0]
        raise DataError(
            f"column {values.name!r} ({role}) holds no numbers (e.g. {str(example)!r}). "
            f"Fix: choose a numeric column with {FLAGS.get(role, '--' + role)} COL."
        )
    return out


def _derivable(df: pd.DataFrame, roles: Mapping[str, str], cost_factor: float | None) -> set[str]:
    """Roles (D or C) to derive from ``C = k N D``: their column is absent and the other two exist."""
    if cost_factor is None or not {"N", "D", "C"} <= set(roles):
        return set()
    present = {r for r in ("N", "D", "C") if roles[r] in df}
    return {r for r in ("D", "C") if r not in present and present == {"N", "D", "C"} - {r}}


def _raise_missing(df: pd.DataFrame, roles: Mapping[str, str], missing: list[str], cost_factor) -> None:
    parts = [f"{roles[r]!r} (for {r}; set it with {FLAGS.get(r, '--' + r)} COL)" for r in missing]
    fix = ""
    if {"D", "C"} & set(missing) and cost_factor is None and "N" not in missing:
        fix = (
            " If the table has only one of D and C, pass --cost-factor K to derive the other from C = K N D."
        )
    shown = ", ".join(map(repr, list(df.columns)[:30])) + (", ..." if df.shape[1] > 30 else "")
    raise DataError(f"missing column(s) {', '.join(parts)}. The table has: {shown}.{fix}")


def _some(ids: pd.Series, k: int = 5) -> str:
    ids = list(dict.fromkeys(map(str, ids)))
    return ", ".join(ids[:k]) + (f" and {len(ids) - k} more" if len(ids) > k else "")
