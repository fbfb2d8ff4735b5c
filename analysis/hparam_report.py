"""The report of a hyperparameter sweep (:mod:`analysis.hparam_laws`): loss against learning rate per
size with the optima, the optimum laws with intervals, and the bias of one learning rate for all
sizes, as a section of the project's HTML + Markdown report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm

from analysis.hparam_laws import HparamStudy, bias_rows, law_lines, optima_rows
from analysis.plots import Plot, _cmap, _colourbar, _figure, text
from analysis.report import Bullets, Section, Table, save_report

MARKERS = "osD^vP*X"


def loss_vs_lr(study: HparamStudy) -> Plot:
    """Final loss against learning rate, one curve per (N, D) point: the runs, the fitted quadratic
    (at the optimal batch size) and the optimum with its interval."""
    points, cols = study.points, study.columns
    fig, axes = _figure()
    ax = axes[0]
    ax.set_yscale("linear")
    norm = _colourbar(fig, ax, points["N"], text(f"N = {cols['N']}"))
    batches = sorted(points["batch"].unique()) if "batch" in points else [None]
    fitted = points[points["fitted"]]
    for marker, b in zip(MARKERS, batches, strict=False):
        rows = fitted if b is None else fitted[fitted["batch"] == b]
        ax.scatter(rows["lr"], rows["y"], c=rows["N"], norm=norm, cmap="viridis", marker=marker, s=22,
                   edgecolor="black", linewidth=0.3, label=None if b is None else f"B = {b:g}")  # fmt: skip
    for o in study.optima:
        colour = _cmap(norm, o.N)
        if np.isfinite(o.curvature):
            lr = np.geomspace(*o.lr_range, 60)
            ax.plot(lr, o.loss.estimate + o.curvature * np.log(lr / o.lr.estimate) ** 2, color=colour, lw=1.2)
        err = [[o.lr.estimate - o.lr.low], [o.lr.high - o.lr.estimate]]
        ax.errorbar([o.lr.estimate], [o.loss.estimate], xerr=err, fmt="*", ms=11, color=colour, mec="black")
    left_out = points[~points["fitted"]]
    if len(left_out):  # diverged or far off: named in the caption, kept off the axis range
        span = fitted["y"].max() - fitted["y"].min()
        ax.set_ylim(fitted["y"].min() - 0.05 * span, fitted["y"].max() + 0.1 * span)
    if batches != [None]:
        ax.legend(fontsize=8)
    ax.set(
        xlabel=text(f"learning rate = {cols['lr']}"),
        ylabel=text(f"y = {cols['y']}"),
        title="loss against learning rate",
    )
    return Plot(
        "hparams_loss_vs_lr",
        "Final loss of every run against its peak learning rate, coloured by model size N"
        + (" (marker: batch size)" if batches != [None] else "")
        + "; per (N, D) point the fitted quadratic in log learning rate (at the optimal batch size) and its "
        f"optimum (star) with its {100 * study.optima[0].lr.level:g}% bootstrap interval"
        + (f"; {len(left_out)} run(s) far above their point's best loss left out" if len(left_out) else "")
        + ".",
        fig,
    )


def optimum_laws(study: HparamStudy) -> Plot | None:
    """The optimal learning rate (and batch size) against N with the fitted power laws."""
    laws = [(law, attr) for law, attr in ((study.lr_law, "lr"), (study.batch_law, "batch_size")) if law]
    if not laws:
        return None
    fig, axes = _figure(ncols=len(laws))
    d_values = np.array([o.D for o in study.optima])
    norm = LogNorm(vmin=d_values.min(), vmax=d_values.max() * (1 + 1e-9))
    for ax, (law, attr) in zip(axes, laws, strict=True):
        for o in study.optima:
            iv = getattr(o, attr)
            err = [[iv.estimate - iv.low], [iv.high - iv.estimate]]
            ax.errorbar([o.N], [iv.estimate], yerr=err, fmt="o", color=_cmap(norm, o.D), mec="black", ms=6)
        n = np.geomspace(min(o.N for o in study.optima) / 1.5, max(o.N for o in study.optima) * 1.5, 50)
        for d in np.unique(d_values):
            ax.plot(n, law.predict(n, d), color=_cmap(norm, d), lw=1.5, label=text(f"D = {d:.3g}"))
        a = law.a
        what = "learning rate" if attr == "lr" else "batch size"
        title = text(f"{law.formula}: a = {a.estimate:.3g} [{a.low:.3g}, {a.high:.3g}]")
        ax.set(xlabel=text(f"N = {study.columns['N']}"), ylabel=f"optimal {what}", title=title)
        ax.legend(fontsize=8)
    return Plot(
        "hparams_optimum_laws",
        "The optima of each (N, D) point with their bootstrap intervals and the power laws fitted to them "
        "(one line per data budget D).",
        fig,
    )


def fixed_lr_bias(study: HparamStudy) -> Plot | None:
    """Loss against N at each fixed learning rate and at the optima."""
    if not study.fixed_lr:
        return None
    fig, axes = _figure()
    ax = axes[0]
    norm = _colourbar(fig, ax, [f.lr for f in study.fixed_lr], "fixed learning rate")
    for f in study.fixed_lr:
        rows = f.penalty.sort_values("N")
        ax.plot(rows["N"], rows["y"], "o-", color=_cmap(norm, f.lr), ms=4, lw=1)
    opt = sorted((o.N, o.loss.estimate) for o in study.optima)
    ax.plot(*zip(*opt, strict=True), "k*-", ms=9, lw=2, label="at the optimal learning rate")
    ax.legend(fontsize=8)
    ax.set(
        xlabel=text(f"N = {study.columns['N']}"),
        ylabel=text(f"y = {study.columns['y']}"),
        title="one learning rate for every size",
    )
    return Plot(
        "hparams_fixed_lr",
        "Final loss against model size when every size trains at one learning rate (coloured lines), and at "
        "each size's optimal learning rate (black): the gap is the penalty, its trend with N the bias of a "
        "scaling law fitted at one learning rate.",
        fig,
    )


def hparam_section(study: HparamStudy, plots: list[Plot]) -> Section:
    """The sweep as one report section."""
    level = f"{100 * study.optima[0].lr.level:g}%"
    blocks = [
        f"{len(study.points)} runs at {len(study.optima)} (N, D) points. Per point, the final loss is fitted "
        "with a least-squares quadratic in log learning rate"
        + (" and log batch size" if "batch" in study.points else "")
        + f"; its minimum is the optimum, with {level} intervals from a parametric bootstrap (refits with "
        "Gaussian noise of the residual spread pooled over every point; runs far above their point's best "
        "are left out of its fit). The "
        "optima are fitted as power laws in N (and D) by least squares in log space, intervals from their "
        "bootstrap replicates; the loss at the optima is fitted with the scaling law its points determine. "
        "Columns: " + ", ".join(f"{k} = {v}" for k, v in study.columns.items() if k in study.points) + ".",
        Table(*optima_rows(study)),
        Bullets(law_lines(study)),
        *[p for p in plots if p.name != "hparams_fixed_lr"],
    ]  # fmt: skip
    if study.fixed_lr:
        blocks += [
            "The bias of one learning rate for all sizes: per learning rate swept at every point, the "
            "loss penalty against each point's optimum and the scaling law fitted to those losses, against "
            "the law at the optima.",
            Table(*bias_rows(study)),
            *[p for p in plots if p.name == "hparams_fixed_lr"],
        ]
    if study.warnings:
        blocks.append(Bullets(study.warnings, warning=True))
    return Section("Hyperparameter scaling laws", blocks)


def write_hparam_report(study: HparamStudy, out_dir: str | Path, title: str) -> dict[str, Path]:
    """report.html, report.md, results.json and the figures of ``study`` in ``out_dir``."""
    plots = [p for p in (loss_vs_lr(study), optimum_laws(study), fixed_lr_bias(study)) if p is not None]
    return save_report(out_dir, title, [hparam_section(study, plots)], plots, study.as_dict())
