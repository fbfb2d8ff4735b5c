"""Figures of a study (seaborn on matplotlib ``Figure`` objects: no pyplot, no global backend).

Rendering goes through Agg for PNG and the SVG backend for SVG; nothing here needs a display.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from analysis.compare import FamilyFit
from analysis.study import LawResult, Study

PALETTE = "viridis"
MAX_CURVES = 8  # fitted curves drawn per figure, at evenly spaced model sizes
APPROACH_COLOURS = {"1": "tab:orange", "2": "tab:green", "3": "black"}


@dataclass(frozen=True)
class Plot:
    name: str  # file stem
    caption: str
    figure: Figure

    @cached_property
    def png(self) -> bytes:
        _tidy_log_ticks(self.figure)
        return _render(self.figure, "png")

    @cached_property
    def svg(self) -> bytes:
        self.png  # noqa: B018 - lay the figure out once, at the PNG render, and keep that layout
        self.figure.set_layout_engine("none")
        return _render(self.figure, "svg")


def _render(fig: Figure, fmt: str) -> bytes:
    buf = io.BytesIO()
    meta = {"Date": None} if fmt == "svg" else {"Software": None}
    fig.savefig(buf, format=fmt, dpi=110, metadata=meta)
    return buf.getvalue()


def _tidy_log_ticks(fig: Figure) -> None:
    """On log axes, label the decades and, where fewer than two decades show, only the 2x and 5x
    ticks between them: matplotlib labels every minor tick there and they overlap. Colour bars
    keep their labels."""
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            if axis.get_scale() != "log":
                continue
            lo, hi = np.log10(min(lim)), np.log10(max(lim))
            axis.set_minor_formatter(NullFormatter() if np.floor(hi) - np.ceil(lo) >= 1 else _MINOR_2_5)


def _minor_2_5(value: float, _pos) -> str:
    exponent = int(np.floor(np.log10(value) + 1e-9))
    mantissa = value / 10.0**exponent  # minor ticks may fall between integers (1.5, 1.6, ...)
    return (
        rf"${round(mantissa)}\times10^{{{exponent}}}$"
        if min(abs(mantissa - 2), abs(mantissa - 5)) < 1e-6
        else ""
    )


_MINOR_2_5 = FuncFormatter(_minor_2_5)


def text(s: object) -> str:
    """A user-supplied string safe for matplotlib text (``$`` would start mathtext)."""
    return str(s).replace("$", r"\$")


def _figure(ncols: int = 1, width: float = 6.4, height: float = 4.4) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    with sns.axes_style("whitegrid"):
        axes = np.atleast_1d(fig.subplots(1, ncols))
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
    return fig, axes


def _colourbar(fig: Figure, ax, values: np.ndarray, label: str) -> LogNorm:
    norm = LogNorm(vmin=float(np.min(values)), vmax=float(np.max(values)) * (1 + 1e-9))
    fig.colorbar(ScalarMappable(norm=norm, cmap=PALETTE), ax=ax, label=label)
    return norm


def _cmap(norm: LogNorm, value: float):
    return sns.color_palette(PALETTE, as_cmap=True)(norm(value))


def _scatter(ax, frame: pd.DataFrame, x: str, y: str, hue: str, norm: LogNorm, **kw) -> None:
    ax.scatter(
        frame[x], frame[y], c=frame[hue], norm=norm, cmap=PALETTE, edgecolor="black", linewidth=0.3, **kw
    )


def _label(study: Study, role: str) -> str:
    return text(f"{role} = {study.table.columns.get(role, role)}")


def loss_vs_compute(study: Study) -> Plot:
    """Loss against compute, coloured by N, with the fitted law per model size and the frontier."""
    points = study.curves if study.curves is not None else study.table
    f = points.frame
    fig, (ax,) = _figure(width=8.0, height=5.0)
    norm = _colourbar(fig, ax, f["N"], _label(study, "N"))
    if f.groupby("run").size().max() > 1:
        for _, run in f.sort_values("C").groupby("run"):
            ax.plot(run["C"], run["y"], color=_cmap(norm, run["N"].iloc[0]), alpha=0.35, linewidth=1)
    _scatter(ax, f, "C", "y", "N", norm, s=22, zorder=3)
    if study.main is not None:
        k = float(np.median(f["C"] / (f["N"] * f["D"])))
        sizes = np.unique(f["N"])
        shown = sizes[
            np.unique(np.linspace(0, len(sizes) - 1, min(len(sizes), MAX_CURVES)).round().astype(int))
        ]
        for n, run in f[f["N"].isin(shown)].groupby("N"):
            c = np.geomspace(run["C"].min() / 1.5, run["C"].max() * 1.5, 60)
            ax.plot(
                c,
                study.main.fit.predict({"N": np.full_like(c, n), "D": c / (k * n)}),
                color=_cmap(norm, n),
                linewidth=1.2,
                linestyle=":",
            )
    for fr in study.frontiers:
        key = fr.approach[0]
        if key == "3" and study.main is not None:
            c = np.geomspace(f["C"].min(), study.target, 100)
            ax.plot(
                c,
                study.main.fit.predict({"N": fr.allocation.n_opt(c), "D": fr.allocation.d_opt(c)}),
                color="black",
                linestyle="--",
                linewidth=1.8,
                label="compute-optimal frontier (approach 3)",
            )
        elif len(fr.points):
            ax.scatter(
                fr.points["C"],
                fr.points["y"],
                marker="*",
                s=90,
                color=APPROACH_COLOURS[key],
                edgecolor="black",
                linewidth=0.5,
                zorder=4,
                label=f"optima, approach {fr.approach}",
            )
    # the fitted curves run far above the data at small compute: the axes show the data's range
    ax.set_ylim(0.8 * f["y"].min(), 1.5 * f["y"].max())
    ax.set(xlabel=_label(study, "C"), ylabel=_label(study, "y"), title="Loss vs compute")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return Plot(
        "loss_vs_compute",
        "Loss against compute, coloured by model size. Dotted: the fitted "
        "L(N, D) along model sizes; dashed: the compute-optimal frontier; stars: optima.",
        fig,
    )


def loss_vs_n_and_d(study: Study) -> Plot:
    """Loss against N (coloured by D) and against D (coloured by N), with the fitted law at fixed levels."""
    f = study.table.frame
    fig, axes = _figure(ncols=2)
    for ax, x, hue in ((axes[0], "N", "D"), (axes[1], "D", "N")):
        norm = _colourbar(fig, ax, f[hue], _label(study, hue))
        _scatter(ax, f, x, "y", hue, norm, s=24)
        if study.main is not None:
            grid = np.geomspace(f[x].min() / 1.5, f[x].max() * 1.5, 80)
            for level in np.unique(np.quantile(f[hue], [0.0, 0.5, 1.0])):
                pred = study.main.fit.predict({x: grid, hue: np.full_like(grid, level)})
                ax.plot(grid, pred, color=_cmap(norm, level), linewidth=1.2, linestyle=":")
        ax.set(xlabel=_label(study, x), ylabel=_label(study, "y"), title=f"Loss vs {x}")
    return Plot(
        "loss_vs_n_and_d",
        "Loss against model size N and data D. Dotted: the fitted L(N, D) at the "
        "smallest, median and largest value of the other input.",
        fig,
    )


def isoflop_profiles(study: Study) -> Plot | None:
    fr = next((fr for fr in study.frontiers if fr.approach.startswith("2")), None)
    if fr is None:
        return None
    f = fr.profiles
    fig, (ax,) = _figure(width=8.0, height=5.0)
    ax.set_yscale("linear")
    norm = _colourbar(fig, ax, f["C"], _label(study, "C") + " (budget)")
    _scatter(ax, f, "N", "y", "C", norm, s=26)
    for _, m in fr.points.iterrows():
        sizes = f.loc[f["group"] == m["group"], "N"]
        u = np.linspace(np.log(sizes.min()), np.log(sizes.max()), 60)
        ax.plot(np.exp(u), m["p0"] + m["p1"] * u + m["p2"] * u**2, color=_cmap(norm, m["C"]), linewidth=1.2)
    ax.scatter(
        fr.points["N"],
        fr.points["y"],
        marker="*",
        s=140,
        color="tab:red",
        edgecolor="black",
        zorder=4,
        label="minimum of each profile",
    )
    ax.legend(fontsize=8)
    ax.set(xlabel=_label(study, "N"), ylabel=_label(study, "y"), title="IsoFLOP profiles (approach 2)")
    return Plot(
        "isoflop_profiles",
        "IsoFLOP profiles: a parabola in log N per compute budget, with its minimum (approach 2).",
        fig,
    )


def frontier(study: Study) -> Plot | None:
    if not study.frontiers:
        return None
    c_all = study.table.values("C")
    c = np.geomspace(c_all.min(), study.target, 100)
    fig, axes = _figure(ncols=2)
    for ax, role in zip(axes, ("N", "D"), strict=True):
        for i, fr in enumerate(study.frontiers):
            colour = APPROACH_COLOURS[fr.approach[0]]
            line = fr.allocation.n_opt(c) if role == "N" else fr.allocation.d_opt(c)
            exp = fr.intervals["a" if role == "N" else "b"].estimate
            ax.plot(c, line, color=colour, label=f"approach {fr.approach}: exponent {exp:.3f}")
            if len(fr.points):
                ax.scatter(
                    fr.points["C"],
                    fr.points[role],
                    color=colour,
                    edgecolor="black",
                    s=24,
                    zorder=3,
                    alpha=0.8,
                )
            iv = fr.intervals[f"{role}_opt"]
            if np.isfinite(iv.low):  # side by side around the target compute
                x = study.target * 1.15 ** (i - 1)
                # a percentile interval need not contain the estimate: bar and point drawn apart
                ax.plot([x, x], [iv.low, iv.high], color=colour, marker="_", markersize=8)
                ax.plot([x], [iv.estimate], color=colour, marker="o")
        ax.axvline(c_all.max(), color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel=_label(study, "C"), ylabel=f"optimal {_label(study, role)}", title=f"{role}_opt(C)")
        ax.legend(fontsize=8)
    return Plot(
        "frontier",
        "Compute-optimal model size and data by the three approaches; bars: intervals "
        "at the target compute; dotted line: the largest run.",
        fig,
    )


def residuals(study: Study) -> Plot | None:
    if study.main is None:
        return None
    res = study.main
    f = res.table.frame
    pred = res.fit.predict({k: f[v].to_numpy(float) for k, v in res.inputs.items()})
    frame = f.assign(resid=np.log(f["y"]) - np.log(pred), predicted=pred)
    fig, axes = _figure(ncols=2)
    axes[0].set_yscale("linear")
    norm = _colourbar(fig, axes[0], frame["N"], _label(study, "N"))
    _scatter(axes[0], frame, "C", "resid", "N", norm, s=24)
    axes[0].axhline(0, color="black", linewidth=1)
    if study.extrapolation is not None:
        held = study.extrapolation.held_out
        axes[0].scatter(
            held["C"],
            -held["log_error"],
            marker="x",
            color="tab:red",
            s=40,
            label="held out: observed vs extrapolated",
        )
        axes[0].legend(fontsize=8)
    axes[0].set(
        xlabel=_label(study, "C"), ylabel="log(observed) - log(fitted)", title="Residuals (log space)"
    )
    _scatter(axes[1], frame, "predicted", "y", "N", norm, s=24)
    lim = [min(frame["y"].min(), pred.min()), max(frame["y"].max(), pred.max())]
    axes[1].plot(lim, lim, color="black", linewidth=1)
    axes[1].set(xlabel="fitted", ylabel=_label(study, "y"), title="Observed vs fitted")
    return Plot(
        "residuals",
        f"Residuals of the Chinchilla fit (RMSE in log space {res.fit.rmse_log:.4f}, "
        f"R^2 {res.fit.r2_log:.4f}); crosses: runs held out for the extrapolation check.",
        fig,
    )


def bootstrap_distributions(study: Study) -> Plot | None:
    if study.main is None or study.main.boot is None:
        return None
    res = study.main
    names = list(res.intervals)
    cols = 4
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows), layout="constrained")
    with sns.axes_style("whitegrid"):
        axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, name in zip(axes, names, strict=False):
        iv = res.intervals[name]
        s = res.boot.samples[name]
        ax.hist(s[np.isfinite(s)], bins=40, color=sns.color_palette()[0], alpha=0.8)
        for v, style in ((iv.estimate, "-"), (iv.low, "--"), (iv.high, "--")):
            ax.axvline(v, color="black", linestyle=style, linewidth=1)
        ax.set(title=text(name), ylabel="")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    return Plot(
        "bootstrap",
        f"Bootstrap distributions ({res.boot.n_boot} resamples of runs) with the estimate "
        f"(solid) and the {100 * res.boot.level:g}% interval (dashed).",
        fig,
    )


def metric_vs_loss(study: Study) -> Plot | None:
    if not study.metrics:
        return None
    fig, axes = _figure(ncols=len(study.metrics))
    for ax, m in zip(axes, study.metrics, strict=True):
        _metric_panel(ax, m)
    return Plot(
        "metric_vs_loss",
        "Sample-quality metrics against validation loss with the fitted y = E + A * loss^k.",
        fig,
    )


def _metric_panel(ax, m: LawResult) -> None:
    f = m.table.frame
    ax.scatter(f["x"], f["y"], color="tab:purple", edgecolor="black", linewidth=0.3)
    grid = np.geomspace(f["x"].min() / 1.1, f["x"].max() * 1.1, 80)
    (name,) = m.inputs
    ax.plot(grid, m.fit.predict({name: grid}), color="black")
    ax.set(
        xlabel=text(m.table.columns["x"]),
        ylabel=text(m.table.columns["y"]),
        title=text(f"{m.table.columns['y']} vs {m.table.columns['x']}"),
    )


def _envelope_panel(ax, f: FamilyFit, colour: str, top: float, level: float, curves: bool = True) -> None:
    """A family's runs (thin), its envelope (dots), the fitted E + A C^-alpha to ``top`` with its
    bootstrap band."""
    if curves:
        for _, run in f.curves.groupby("run_id"):
            ax.plot(run["C"], run["y"], color=colour, alpha=0.3, lw=0.8)
    ax.scatter(f.compute, f.loss, color=colour, s=10, zorder=3, label=text(f"{f.name} envelope"))
    c = np.geomspace(f.compute.min(), top, 200)
    alpha = f.intervals["alpha"]
    label = f"{f.name}: E + A C^-alpha, alpha = {alpha.estimate:.3g} [{alpha.low:.3g}, {alpha.high:.3g}]"
    ax.plot(c, f.fit.predict({"C": c}), color=colour, lw=2, label=text(label))
    ok = np.isfinite(f.replicates).all(axis=1)
    if ok.sum() > 1:
        band = np.percentile(
            f.fit.law.predict(f.replicates[ok], {"C": c}), [50 * (1 - level), 50 * (1 + level)], 0
        )
        ax.fill_between(c, band[0], band[1], color=colour, alpha=0.15)


def family_comparison(fits: list[FamilyFit], cross: dict[str, Any], level: float) -> Plot:
    """Families compared (:mod:`analysis.compare`): runs' curves, envelopes, fits with bootstrap bands
    and the crossover, on log-log axes."""
    fig = Figure(figsize=(7.5, 5.0), layout="constrained")
    ax = fig.subplots()
    ax.set(
        xscale="log", yscale="log", xlabel="training compute C (FLOPs, measured)", ylabel="validation loss"
    )
    for colour, f in zip(("tab:blue", "tab:orange", "tab:green", "tab:red"), fits, strict=False):
        _envelope_panel(ax, f, colour, cross["search_range"][1], level)
    if np.isfinite(cross["estimate"]):
        ax.axvline(cross["estimate"], color="k", ls="--", lw=1, label="crossover")
        if np.isfinite(cross["low"]):
            ax.axvspan(cross["low"], cross["high"], color="k", alpha=0.08)
    ax.axvline(max(f.compute.max() for f in fits), color="grey", ls=":", lw=1)
    ax.legend(fontsize=8)
    caption = (
        f"Validation loss against training compute: thin lines are runs, dots the lowest loss over runs, "
        f"thick lines the fitted E + A C^-alpha with {100 * level:g}% bootstrap bands; the dotted line marks "
        "the largest trained compute (beyond it the fits are extrapolated)."
    )
    return Plot("family_comparison", caption, fig)


def power_laws(study: Study) -> Plot | None:
    """L(N) at the largest data budget (the L(N, D) slice) and L(C) through the curves' envelope."""
    if study.size_law is None and study.compute_law is None:
        return None
    level = study.options.level
    fig, axes = _figure(ncols=2)
    f = study.table.frame
    if study.size_law is not None:
        law, ax = study.size_law, axes[0]
        norm = _colourbar(fig, ax, f["D"], _label(study, "D"))
        _scatter(ax, f, "N", "y", "D", norm, s=24)
        n = np.geomspace(f["N"].min() / 1.5, f["N"].max() * 3, 80)
        alpha = law.intervals["alpha"]
        label = f"L(N) at D = {law.d:.3g}: alpha = {alpha.estimate:.3g} [{alpha.low:.3g}, {alpha.high:.3g}]"
        ax.plot(n, law.predict(n), color=_cmap(norm, law.d), lw=2, label=text(label))
        curves = law.replicate_predictions(n)
        if len(curves) > 1:
            band = np.percentile(curves, [50 * (1 - level), 50 * (1 + level)], 0)
            ax.fill_between(n, band[0], band[1], color=_cmap(norm, law.d), alpha=0.15)
        ax.legend(fontsize=8)
        ax.set(xlabel=_label(study, "N"), ylabel=_label(study, "y"), title="L(N) at the largest data budget")
    if study.compute_law is not None:
        ax, fam = axes[1], study.compute_law
        _envelope_panel(ax, fam, "tab:purple", study.target, level, curves=False)
        pts = (study.table if study.curves is None else study.curves).frame
        ax.scatter(pts["C"], pts["y"], color="grey", s=6, alpha=0.4, zorder=2, label="evaluations")
        ax.axvline(fam.compute.max(), color="grey", ls=":", lw=1)
        ax.legend(fontsize=8)
        ax.set(xlabel=_label(study, "C"), ylabel=_label(study, "y"), title="L(C): the compute envelope")
    return Plot(
        "power_laws",
        f"Left: final losses coloured by data D and the fitted L(N, D) at the largest D, a power law in N, "
        f"with its {100 * level:g}% bootstrap band. Right: every evaluation (grey), the lowest loss at each "
        "compute (dots) and E + A C^-alpha fitted to them with its band, extrapolated to the target compute "
        "past the dotted line.",
        fig,
    )


FIGURES: tuple[Callable[[Study], Plot | None], ...] = (
    loss_vs_compute,
    loss_vs_n_and_d,
    power_laws,
    isoflop_profiles,
    frontier,
    residuals,
    bootstrap_distributions,
    metric_vs_loss,
)


def make_plots(study: Study) -> list[Plot]:
    """Every figure the study supports, in report order."""
    if study.table is None:
        return []
    return [p for p in (make(study) for make in FIGURES) if p is not None]
