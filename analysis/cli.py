"""Command line: ``python -m analysis fit CSV ...``, ``report CSV --out DIR`` and ``hparams CSV ...``."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from analysis.data import POINTS, Columns, Table, prepare, read_table, select_rows
from analysis.errors import AnalysisError, DataError
from analysis.extrapolation import extrapolation_check
from analysis.hparam_laws import hparam_study, hparam_table, hparam_text
from analysis.io import to_json
from analysis.laws import LAWS, hoffmann_grid
from analysis.study import LawResult, StudyOptions, fit_law, run_study

DEFAULTS = Columns()


def _common(p: argparse.ArgumentParser) -> None:
    """Options shared by ``fit`` and ``report``: columns, point selection, fitting and bootstrap."""
    cols = _shared(p)
    cols.add_argument("--C", metavar="COL", help=f"compute (FLOP) column (default {DEFAULTS.C})")
    cols.add_argument("--weight-col", metavar="COL", help="optional per-point weights for the Huber loss")
    p.add_argument(
        "--points",
        choices=POINTS,
        default="final",
        help="fit each run's final evaluation (default) or every evaluation point",
    )
    p.add_argument(
        "--cost-factor",
        type=float,
        metavar="K",
        help="derive a missing D (or C) column from C = K N D, e.g. 6 for the 6ND estimate",
    )


def _shared(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Options of every command: the N, D, y, run and step columns, row selection and the bootstrap;
    returns the columns group for a command's own columns."""
    cols = p.add_argument_group("columns (defaults match runs.csv)")
    cols.add_argument("--N", metavar="COL", help=f"model size column (default {DEFAULTS.N})")
    cols.add_argument("--D", metavar="COL", help=f"data (tokens) column (default {DEFAULTS.D})")
    cols.add_argument("--y", metavar="COL", help=f"fitted metric column (default {DEFAULTS.y})")
    cols.add_argument(
        "--run-col", default=DEFAULTS.run, metavar="COL", help="run id column (default %(default)s)"
    )
    cols.add_argument(
        "--step-col",
        default=DEFAULTS.step,
        metavar="COL",
        help="step column; the final point of a run is its largest step (default %(default)s)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="B",
        help="bootstrap resamples of runs for intervals; 0 turns them off (default %(default)s)",
    )
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COL=VALUE",
        help="keep the rows where COL equals VALUE (repeatable), e.g. conditioning=text-cross",
    )
    p.add_argument(
        "--pool",
        action="append",
        default=[],
        metavar="COL",
        help="fit runs of different kinds together (a column such as conditioning is refused mixed)",
    )
    p.add_argument("--level", type=float, default=0.95, help="interval level (default %(default)s)")
    p.add_argument(
        "--huber-delta", type=float, default=1e-3, help="Huber delta on log residuals (default %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default %(default)s)")
    return cols


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis", description="Scaling-law fits, frontier and reports."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="fit one law and print its estimates and intervals")
    fit.add_argument("csv")
    fit.add_argument(
        "--law",
        choices=sorted(LAWS),
        default="chinchilla",
        help="power: y = E + A x^-alpha; pure-power: y = A x^-alpha; chinchilla: "
        "L = E + A/N^alpha + B/D^beta; metric: y = E + A x^k (x: loss) (default %(default)s)",
    )
    fit.add_argument(
        "--x",
        metavar="COL",
        help="input column of a one-input law (for power laws, --N, --D or "
        "--C alone also sets it; for metric, default the loss column)",
    )
    fit.add_argument(
        "--grid",
        choices=("default", "hoffmann"),
        default="default",
        help="initialisation grid: the law's own (anchored to the data) or, for chinchilla, the "
        "4,500 starts of Hoffmann et al. 2022",
    )
    fit.add_argument(
        "--holdout",
        type=float,
        metavar="FRAC",
        help="also fit without the FRAC largest-compute runs and report the extrapolation error",
    )
    fit.add_argument("--json", action="store_true", help="print the estimates and intervals as JSON")
    _common(fit)

    rep = sub.add_parser("report", help="write the HTML + Markdown report with plots")
    rep.add_argument("csv")
    rep.add_argument("--out", required=True, metavar="DIR", help="output folder")
    rep.add_argument(
        "--budget-col",
        default=DEFAULTS.budget,
        metavar="COL",
        help="compute-budget column for IsoFLOP profiles; without it, points are grouped by C "
        "(default %(default)s)",
    )
    rep.add_argument(
        "--budget-tolerance",
        type=float,
        default=0.1,
        metavar="DEX",
        help="group C values separated by less than this many decades (default %(default)s)",
    )
    rep.add_argument(
        "--metrics",
        metavar="COLS",
        help="comma-separated metric columns to fit against the loss (default: fvd, fid and their "
        "variants such as fvd_ema; not *_protocol or *_std)",
    )
    rep.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        metavar="FRAC",
        help="fraction of largest-compute runs held out for the extrapolation check (default %(default)s)",
    )
    rep.add_argument(
        "--target-flops",
        type=float,
        metavar="C",
        help="compute at which to report N_opt and D_opt (default 10x the largest run)",
    )
    rep.add_argument("--title", default="Scaling-law report")
    _common(rep)

    hp = sub.add_parser(
        "hparams",
        help="optimal learning rate and batch size per (N, D), their laws, the loss law on and off the "
        "optimum and the bias of one learning rate for all sizes",
    )
    hp.add_argument("csv")
    cols = _shared(hp)
    cols.add_argument(
        "--lr", default="peak_lr", metavar="COL", help="learning-rate column (default %(default)s)"
    )
    cols.add_argument(
        "--batch-size",
        default="global_batch",
        metavar="COL",
        help="batch-size column, used where it varies within an (N, D) point; 'none' ignores it "
        "(default %(default)s)",
    )
    hp.add_argument(
        "--d-tolerance",
        type=float,
        default=0.02,
        metavar="DEX",
        help="runs of one size whose D agree within this many decades are one (N, D) point "
        "(default %(default)s)",
    )
    hp.add_argument(
        "--max-excess",
        type=float,
        default=0.5,
        metavar="FRAC",
        help="leave out of a point's quadratic the runs whose loss exceeds its best by more than this "
        "fraction (diverged or far off; default %(default)s)",
    )
    hp.add_argument("--json", action="store_true", help="print the optima and laws with intervals as JSON")
    hp.add_argument("--out", metavar="DIR", help="also write the HTML + Markdown report with its plots here")
    hp.add_argument("--title", default="Hyperparameter scaling laws")
    return parser


def _columns(args: argparse.Namespace) -> Columns:
    return Columns(
        N=args.N or DEFAULTS.N,
        D=args.D or DEFAULTS.D,
        C=args.C or DEFAULTS.C,
        y=args.y or DEFAULTS.y,
        run=args.run_col,
        step=args.step_col,
        budget=getattr(args, "budget_col", DEFAULTS.budget),
        weight=args.weight_col,
    )


def _fit_table(df: pd.DataFrame, args: argparse.Namespace) -> tuple[Table, dict[str, str]]:
    """The table for ``fit`` and the law-input -> role map."""
    cols = _columns(args)
    kw = {
        "run": cols.run,
        "step": cols.step,
        "points": args.points,
        "cost_factor": args.cost_factor,
        "optional": {"weight": cols.weight},
        "pool": tuple(args.pool),
    }
    if args.law == "chinchilla":
        roles = {"N": cols.N, "D": cols.D, "y": cols.y}
        if args.C or cols.C in df:
            roles["C"] = cols.C
        return prepare(df, roles, **kw), {"N": "N", "D": "D"}
    if args.law == "metric":
        if not args.y:
            raise DataError(
                "--law metric fits a metric against the loss: name the metric with --y COL "
                "(e.g. --y fvd) and the loss with --x COL (default val_loss_ema)"
            )
        x = args.x or DEFAULTS.y
    else:
        given = [c for c in (args.N, args.D, args.C) if c]
        if args.x:
            x = args.x
        elif len(given) == 1:
            x = given[0]
        else:
            raise DataError(
                f"--law {args.law} has one input: name its column with --x COL (or one of --N, --D, --C)"
            )
    roles = {"x": x, "y": cols.y}
    if cols.C in df and x != cols.C:
        roles["C"] = cols.C
    return prepare(df, roles, **kw), {"x": "x"}


def _print_fit(res: LawResult, extra: dict | None) -> None:
    f = res.fit
    print(f"{f.law.name}: {f.law.formula}")
    print("columns: " + ", ".join(f"{k} = {v}" for k, v in res.table.columns.items()))
    print(f"points: {f.n_points} from {res.table.n_runs} runs")
    level = next(iter(res.intervals.values())).level
    print(f"{'parameter':<10} {'estimate':>12} {f'{100 * level:g}% interval':>30} {'SE':>10}")
    for k, iv in res.intervals.items():
        print(f"{k:<10} {iv.estimate:>12.5g} {f'[{iv.low:.5g}, {iv.high:.5g}]':>30} {iv.se:>10.3g}")
    print(
        f"RMSE (log) {f.rmse_log:.4g}, R^2 (log) {f.r2_log:.4f}; {f.n_starts} starts, "
        f"{f.n_converged} converged, {f.n_at_best} at the best objective {f.objective:.6g} ({f.status})"
    )
    if extra:
        print(
            f"extrapolation to the {extra['n_held_out_runs']} largest runs by {extra['order_by']}: "
            f"RMSE (log) {extra['rmse_log']:.4g} (in-sample {extra['in_sample_rmse_log']:.4g}), mean |error| "
            f"{extra['mean_abs_pct_error']:.2f}%, max {extra['max_abs_pct_error']:.2f}%"
        )


def _run_fit(args: argparse.Namespace) -> int:
    df = select_rows(read_table(args.csv), args.where)
    table, inputs = _fit_table(df, args)
    law = LAWS[args.law]("x") if "x" in inputs else LAWS[args.law]()
    if args.grid == "hoffmann" and args.law != "chinchilla":
        raise DataError("--grid hoffmann is the Chinchilla grid: use it with --law chinchilla")
    starts = hoffmann_grid() if args.grid == "hoffmann" else None
    res = fit_law(
        law,
        table,
        inputs,
        n_boot=args.bootstrap,
        level=args.level,
        seed=args.seed,
        delta=args.huber_delta,
        starts=starts,
    )
    extra = None
    if args.holdout is not None:
        order_by = "C" if "C" in table.frame else ("x" if "x" in inputs and args.law != "metric" else None)
        if order_by is None:
            raise DataError("--holdout orders runs by compute: name the compute column with --C COL")
        w = table.values("weight") if "weight" in table.frame else None
        extra = extrapolation_check(
            law, table, holdout=args.holdout, order_by=order_by, delta=args.huber_delta, weights=w
        ).as_dict()
    warnings = [*table.warnings, *res.warnings]
    if args.json:
        sys.stdout.write(to_json(res.as_dict() | {"extrapolation": extra}))
    else:
        _print_fit(res, extra)
    for w in warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from analysis.report import write_report  # matplotlib only when a report is drawn

    df = select_rows(read_table(args.csv), args.where)
    options = StudyOptions(
        columns=_columns(args),
        points=args.points,
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()) if args.metrics else None,
        cost_factor=args.cost_factor,
        n_boot=args.bootstrap,
        level=args.level,
        holdout=args.holdout,
        delta=args.huber_delta,
        budget_tolerance=args.budget_tolerance,
        target_flops=args.target_flops,
        seed=args.seed,
        title=args.title,
        pool=tuple(args.pool),
    )
    study = run_study(df, options, source=args.csv)
    paths = write_report(study, args.out)
    print(f"wrote {paths['html']}, {paths['markdown']} and {paths['json']}")
    for w in study.warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    return 0


def _run_hparams(args: argparse.Namespace) -> int:
    df = select_rows(read_table(args.csv), args.where)
    roles = {"N": args.N or DEFAULTS.N, "D": args.D or DEFAULTS.D, "y": args.y or DEFAULTS.y, "lr": args.lr}
    if args.batch_size != "none" and (args.batch_size in df or args.batch_size != "global_batch"):
        roles["batch"] = args.batch_size
    table = hparam_table(df, roles, run=args.run_col, step=args.step_col, pool=tuple(args.pool))
    study = hparam_study(
        table, n_boot=args.bootstrap, level=args.level, seed=args.seed, delta=args.huber_delta,
        d_tolerance=args.d_tolerance, max_excess=args.max_excess,
    )  # fmt: skip
    if args.json:
        sys.stdout.write(to_json(study.as_dict()))
    else:
        print(hparam_text(study))
    if args.out:
        from analysis.hparam_report import write_hparam_report  # matplotlib only when a report is drawn

        paths = write_hparam_report(study, args.out, args.title)
        print(f"wrote {paths['html']}, {paths['markdown']} and {paths['json']}")
    for w in study.warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m analysis`` (and ``lit-vdit analyze``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.level < 1:
        parser.error(f"--level is a fraction in (0, 1), e.g. 0.95; got {args.level}")
    if args.bootstrap < 0:
        parser.error(f"--bootstrap is a number of resamples >= 0; got {args.bootstrap}")
    try:
        return {"fit": _run_fit, "report": _run_report, "hparams": _run_hparams}[args.command](args)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
