"""Self-contained HTML report and its Markdown twin, from one list of sections.

Content is plain data (paragraphs, lists, tables, figures) and every string in it is escaped by
the renderer, so a column name or run id such as ``<script>`` shows as text and never runs.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from analysis.bootstrap import Interval
from analysis.compare import FamilyFit, crossing_sentence
from analysis.frontier import QUANTITIES
from analysis.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from analysis.plots import Plot, make_plots
from analysis.study import LawResult, Study


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Bullets:
    items: list[str]
    warning: bool = False


Block = str | Table | Bullets | Plot  # a str is a paragraph


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


def num(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.4g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.3e}"


def _interval_row(name: str, iv: Interval) -> list[str]:
    return [name, num(iv.estimate), f"[{num(iv.low)}, {num(iv.high)}]", num(iv.se)]


def _law_blocks(res: LawResult) -> list[Block]:
    f = res.fit
    level = f"{100 * next(iter(res.intervals.values())).level:g}% interval"
    used = [*res.inputs.values(), "y"]
    cols = ", ".join(f"{role} = {res.table.columns[role]}" for role in used)
    boot = (
        f"{res.boot.n_boot} bootstrap resamples of runs ({res.boot.n_failed} failed)"
        if res.boot
        else "no bootstrap (intervals not computed)"
    )
    return [
        f"Law: {f.law.formula}. Columns: {cols}.",
        Table(
            ["parameter", "estimate", level, "bootstrap SE"],
            [_interval_row(k, v) for k, v in res.intervals.items()],
        ),
        f"Fit: {f.n_points} points from {res.table.n_runs} runs; Huber delta {f.delta:g} on log residuals; "
        f"{f.n_starts} L-BFGS starts, {f.n_converged} converged, {f.n_at_best} reached the best objective "
        f"{f.objective:.6g} (best start: {f.status}). Goodness of fit in log space: RMSE {f.rmse_log:.4g}, "
        f"R^2 {f.r2_log:.4f}. Intervals: {boot}.",
    ]


def estimate_text(iv: Interval) -> str:
    """An estimate with its interval, as every report, summary and console line writes it."""
    return f"{num(iv.estimate)} [{num(iv.low)}, {num(iv.high)}]"


def _power_law_section(study: Study, plot: Plot | None) -> Section:
    """L(N) at the largest data budget and L(C) through the envelope, each E + A x^-alpha."""
    level = f"{100 * study.options.level:g}%"
    rows = []
    if study.size_law is not None:
        iv = study.size_law.intervals
        rows.append(
            [f"L(N) at D = {num(study.size_law.d)}", *(estimate_text(iv[k]) for k in ("E_D", "A", "alpha")),
             "slice of L(N, D): E_D = E + B D^-beta"]
        )  # fmt: skip
    if study.compute_law is not None:
        fam = study.compute_law
        rows.append(
            ["L(C), compute envelope", *(estimate_text(fam.intervals[k]) for k in ("E", "A", "alpha")),
             f"{len(fam.compute)} envelope points from {fam.curves['run_id'].nunique()} runs; "
             f"RMSE (log) {num(fam.fit.rmse_log)}"]
        )  # fmt: skip
    blocks: list[Block] = [
        f"Power laws y = E + A x^-alpha with {level} bootstrap intervals (resampling runs). L(N) is the "
        "fitted L(N, D) at the most data any run saw; L(C) is fitted to the lowest loss over all runs' "
        f"training curves at each compute, from {100 * study.options.envelope_from:g}% of each run's steps "
        "on, past its initial transient (each resample rebuilds its envelope).",
        Table(["law", "E", "A", "alpha", "from"], rows),
    ]
    return Section("Power laws in N and C", blocks + ([plot] if plot else []))


def comparison_section(
    title: str,
    fits: list[FamilyFit],
    cross: dict,
    plot: Plot,
    *,
    metric: str,
    min_step: int,
    level: float,
    extrapolate: float,
) -> Section:
    """Two families' envelope fits (:mod:`analysis.compare`) and their crossover as one section."""
    pct = f"{100 * level:g}%"
    n_boot = len(fits[0].replicates)
    rows = [
        [f.name, str(f.curves["run_id"].nunique()), str(len(f.compute)),
         *(estimate_text(f.intervals[k]) for k in ("E", "A", "alpha")), num(f.fit.rmse_log),
         f"{n_boot - f.n_failed}/{n_boot}"]
        for f in fits
    ]  # fmt: skip
    warnings = [w for f in fits for w in f.warnings]
    return Section(
        title,
        [
            f"Metric: {metric} at every evaluation from step {min_step} on. Per family, the lowest loss over "
            "runs at every evaluated compute (each run's curve interpolated in log-log space between its "
            "evaluations: the compute-efficient envelope) is fitted with L(C) = E + A C^-alpha (Huber loss "
            f"on log residuals, multi-start L-BFGS). Intervals: {pct} percentile bootstrap over runs "
            f"({n_boot} resamples: envelope rebuilt and law refitted).",
            Table(
                ["family", "runs", "envelope points", "E", "A", "alpha", "RMSE (log)", "bootstrap fits"], rows
            ),
            plot,
            *([Bullets(warnings, warning=True)] if warnings else []),
            crossing_sentence(cross),
            "The crossover is the largest compute at which the two fitted curves are equal, searched from "
            f"the smallest trained compute to {extrapolate:g} decade(s) beyond the largest; its interval "
            "comes from pairs of bootstrap replicates (one per family) that cross.",
        ],
    )


def build_sections(study: Study, plots: list[Plot]) -> list[Section]:
    """The report's content, shared by the HTML and Markdown renderings."""
    o = study.options
    by_name = {p.name: p for p in plots}
    out = []
    if study.warnings:
        out.append(Section("Warnings", [Bullets(study.warnings, warning=True)]))
    t = study.table
    data = Section(
        "Data",
        [
            f"Source: {study.source or 'table'}. Points: {o.points} ("
            + ("the last evaluation of each run" if o.points == "final" else "every evaluation")
            + ")."
        ],
    )
    if t is not None:
        f = t.frame
        data.blocks.append(
            Table(
                ["role", "column", "min", "max"],
                [
                    [role, col, num(f[role].min()), num(f[role].max())]
                    for role, col in t.columns.items()
                    if role in f and role != "budget"
                ],
            )
        )
        data.blocks.append(f"{len(t)} points from {t.n_runs} runs.")
    if study.notes:
        data.blocks.append(Bullets(study.notes))
    out.append(data)

    if study.main is not None:
        sec = Section("Scaling law L(N, D)", _law_blocks(study.main))
        sec.blocks.append(
            "Derived: a = beta / (alpha + beta) and b = alpha / (alpha + beta) are the exponents of "
            "N_opt ~ C^a and D_opt ~ C^b; G is the coefficient of N_opt = G (C / k)^a with C = k N D."
        )
        sec.blocks += [
            by_name[n]
            for n in ("loss_vs_compute", "loss_vs_n_and_d", "residuals", "bootstrap")
            if n in by_name
        ]
        out.append(sec)
    elif "loss_vs_compute" in by_name:
        out.append(Section("Data plots", [by_name["loss_vs_compute"]]))
    if study.size_law is not None or study.compute_law is not None:
        out.append(_power_law_section(study, by_name.get("power_laws")))

    if study.extrapolation is not None:
        e = study.extrapolation
        held = e.held_out
        intervals = e.level is not None
        text = (
            f"The {held['run_id'].nunique()} runs with the largest {e.order_by} were held out; the "
            f"law was fitted on the other {e.fit.n_points} points and predicts the held-out ones "
            f"with RMSE {e.rmse_log:.4g} in log space (in-sample {e.fit.rmse_log:.4g}), mean "
            f"absolute error {e.mean_abs_pct:.2f}% and largest {e.max_abs_pct:.2f}%."
        )
        if intervals:
            text += (
                f" {e.n_inside} of {len(held)} observed losses lie inside their prediction's "
                f"{100 * e.level:g}% interval (bootstrap over the fitted runs: the law's uncertainty, "
                "not the run-to-run noise)."
            )
        header = ["run", "N", "D", "C", "observed", "predicted"] + ["interval"] * intervals + ["error %"]
        rows = [
            [str(r.run_id), num(r.N), num(r.D), num(r.C), num(r.y), num(r.predicted),
             *([f"[{num(r.predicted_low)}, {num(r.predicted_high)}]"] if intervals else []),
             f"{r.pct_error:+.2f}"]
            for r in held.itertuples()
        ]  # fmt: skip
        out.append(Section("Extrapolation check", [text, Table(header, rows)]))

    if study.frontiers:
        level = f"{100 * o.level:g}%"
        rows = [
            [q if q not in ("N_opt", "D_opt") else f"{q} at C = {num(study.target)}"]
            + [estimate_text(fr.intervals[q]) for fr in study.frontiers]
            for q in QUANTITIES
        ]
        sec = Section(
            "Compute-optimal frontier",
            [
                f"N_opt(C) = G_N C^a and D_opt(C) = G_D C^b by each approach of Hoffmann et al. 2022, "
                f"with {level} bootstrap intervals. Approach 1: lowest loss at each compute (resampling "
                "runs); approach 2: IsoFLOP parabolas (resampling each parabola's residuals, its sizes "
                "fixed); approach 3: the fitted L(N, D) (resampling runs).",
                Table(["quantity", *(f"approach {fr.approach}" for fr in study.frontiers)], rows),
                *([study.agreement] if study.agreement else []),
                Bullets([f"approach {fr.approach}: {n}" for fr in study.frontiers for n in fr.notes]),
            ],
        )
        sec.blocks += [by_name[n] for n in ("frontier", "isoflop_profiles") if n in by_name]
        out.append(sec)

    for m in study.metrics:
        out.append(Section(f"{m.table.columns['y']} vs {m.table.columns['x']}", _law_blocks(m)))
    if "metric_vs_loss" in by_name:
        out[-1].blocks.append(by_name["metric_vs_loss"])
    return out


# ---- rendering ------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.92em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.warn{background:#fff4e5;border-left:4px solid #e67e22;padding:0.5em 1em}
figure{margin:1.5em 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:0.9em}
"""


def _html_block(b: Block) -> str:
    e = lambda s: html.escape(str(s), quote=True)
    if isinstance(b, str):
        return f"<p>{e(b)}</p>"
    if isinstance(b, Bullets):
        items = "".join(f"<li>{e(i)}</li>" for i in b.items)
        return f'<ul class="warn">{items}</ul>' if b.warning else f"<ul>{items}</ul>"
    if isinstance(b, Table):
        head = "".join(f"<th>{e(h)}</th>" for h in b.headers)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows)
        return f"<table><tr>{head}</tr>{body}</table>"
    data = base64.b64encode(b.png).decode("ascii")
    return (
        f'<figure><img alt="{e(b.name)}" src="data:image/png;base64,{data}">'
        f'<figcaption>{e(b.caption)} (<a href="figures/{e(b.name)}.svg">SVG</a>)</figcaption></figure>'
    )


def render_html(title: str, sections: list[Section]) -> str:
    body = "".join(
        f"<h2>{html.escape(s.title)}</h2>" + "".join(_html_block(b) for b in s.blocks) for s in sections
    )
    t = html.escape(title)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t}</title>'
        f"<style>{_CSS}</style></head><body><h1>{t}</h1>{body}</body></html>\n"
    )


def md_escape(s: object) -> str:
    """Markdown-safe text: HTML escaped (renderers pass HTML through) and Markdown syntax escaped."""
    return re.sub(r"([\\`*_\[\]|#])", r"\\\1", html.escape(str(s), quote=False))


def _md_block(b: Block) -> str:
    if isinstance(b, str):
        return md_escape(b)
    if isinstance(b, Bullets):
        return "\n".join(("- **Warning:** " if b.warning else "- ") + md_escape(i) for i in b.items)
    if isinstance(b, Table):
        row = lambda cells: "| " + " | ".join(md_escape(c) for c in cells) + " |"
        return "\n".join([row(b.headers), "|" + "---|" * len(b.headers), *(row(r) for r in b.rows)])
    return f"![{md_escape(b.name)}](figures/{b.name}.png)\n\n*{md_escape(b.caption)}*"


def render_markdown(title: str, sections: list[Section]) -> str:
    parts = [f"# {md_escape(title)}"]
    for s in sections:
        parts.append(f"## {md_escape(s.title)}")
        parts += [_md_block(b) for b in s.blocks]
    return "\n\n".join(parts) + "\n"


def save_report(
    out_dir: str | Path, title: str, sections: list[Section], plots: list[Plot], results: dict
) -> dict[str, Path]:
    """Write report.html (self-contained), report.md, results.json and figures/*.png|svg to ``out_dir``,
    each atomically; returns the paths by name. Every report of the project is written by it."""
    out = Path(out_dir)
    paths = {}
    for p in plots:
        for fmt, data in (("png", p.png), ("svg", p.svg)):
            paths[f"{p.name}.{fmt}"] = out / "figures" / f"{p.name}.{fmt}"
            atomic_write_bytes(paths[f"{p.name}.{fmt}"], data)
    paths |= {"html": out / "report.html", "markdown": out / "report.md", "json": out / "results.json"}
    atomic_write_text(paths["html"], render_html(title, sections))
    atomic_write_text(paths["markdown"], render_markdown(title, sections))
    atomic_write_json(paths["json"], results)
    return paths


def write_report(study: Study, out_dir: str | Path) -> dict[str, Path]:
    """The scaling-law report of ``study`` (:func:`save_report`)."""
    plots = make_plots(study)
    return save_report(out_dir, study.options.title, build_sections(study, plots), plots, study.as_dict())
