import json
import re

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.data import Columns
from analysis.report import build_sections, render_html, render_markdown
from analysis.study import METRIC_PATTERN, StudyOptions, run_study

EVIL = "<script>alert(1)</script>"


def test_report_on_a_runs_table(runs_csv, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(runs_csv), "--out", str(out), "--bootstrap", "40"]) == 0
    page = (out / "report.html").read_text()
    for name in (
        "loss_vs_compute",
        "loss_vs_n_and_d",
        "isoflop_profiles",
        "frontier",
        "residuals",
        "bootstrap",
        "metric_vs_loss",
    ):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
        assert (out / "figures" / f"{name}.svg").exists()
        assert f'alt="{name}" src="data:image/png;base64,' in page
    assert not re.search(r'src="(?!data:)', page)  # self-contained: every image is embedded
    for text in (
        "approach 1 (envelope)",
        "approach 2 (IsoFLOP)",
        "approach 3 (parametric)",
        "Extrapolation check",
        "fvd vs val_loss_ema",
    ):
        assert text in page
    results = json.loads((out / "results.json").read_text())  # strict JSON: NaN written as null
    assert set(results["fit"]["estimates"]) == {"E", "A", "B", "alpha", "beta", "a", "b", "G"}
    assert len(results["frontier"]["approaches"]) == 3
    md = (out / "report.md").read_text()
    assert "| approach 1 (envelope) | approach 2 (IsoFLOP) | approach 3 (parametric) |" in md.replace(
        "\\", ""
    )
    assert "![frontier](figures/frontier.png)" in md


def test_user_strings_are_escaped(make_runs):
    runs = make_runs(sizes=(2e6, 5e6, 1.2e7), budgets=(1e15, 1e16), evals=2)
    runs = runs.rename(columns={"val_loss_ema": EVIL})
    runs.loc[runs["run_id"] == runs["run_id"].iloc[-1], "run_id"] = EVIL
    runs.loc[runs.index[-1], "flops_measured"] = np.nan  # a warning that names the run
    opts = StudyOptions(columns=Columns(y=EVIL), n_boot=0, title=f"title {EVIL}", metrics=())
    study = run_study(runs, opts, source=f"/tmp/{EVIL}.csv")
    assert any(EVIL in w for w in study.warnings)
    sections = build_sections(study, plots=[])
    page = render_html(opts.title, sections)
    assert "<script" not in page and "&lt;script&gt;" in page
    md = render_markdown(opts.title, sections)
    assert "<script" not in md and "&lt;script&gt;" in md


def test_a_tiny_grid_still_gets_a_report_that_explains_what_is_missing(make_runs, tmp_path):
    tiny = make_runs(sizes=(2e6, 8e6), budgets=(1e15, 4e15), evals=3)
    path = tmp_path / "runs.csv"
    tiny.to_csv(path, index=False)
    out = tmp_path / "out"
    assert main(["report", str(path), "--out", str(out), "--bootstrap", "20"]) == 0
    page = (out / "report.html").read_text()
    assert "Chinchilla fit: Chinchilla L(N, D) has 5 parameters but only 4 points" in page
    assert "--points all" in page and "frontier approach 2" in page
    assert (out / "figures" / "loss_vs_compute.png").exists()


def test_fit_json(runs_csv, capsys, truth):
    assert (
        main(["fit", str(runs_csv), "--law", "chinchilla", "--json", "--bootstrap", "30", "--holdout", "0.2"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["converged"] and out["n_points"] == 20
    est = out["estimates"]
    assert est["beta"]["low"] < est["beta"]["estimate"] < est["beta"]["high"]
    # 20% of 20 runs is 4, but the 5 runs of the largest budget tie in C: they are held out together.
    assert out["extrapolation"]["n_held_out_runs"] == 5 and out["extrapolation"]["order_by"] == "C"


def test_fit_one_input_laws(runs_csv, capsys):
    assert (
        main(
            [
                "fit",
                str(runs_csv),
                "--law",
                "power",
                "--C",
                "flops_measured",
                "--points",
                "all",
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    assert "saturating power law in x" in capsys.readouterr().out
    assert main(["fit", str(runs_csv), "--law", "metric", "--y", "fvd", "--json", "--bootstrap", "20"]) == 0
    assert json.loads(capsys.readouterr().out)["estimates"]["k"]["estimate"] == pytest.approx(3, abs=0.5)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--y", "loss"], "missing column(s) 'loss' (for y; set it with --y COL)"),
        (["--law", "metric"], "name the metric with --y COL"),
        (["--law", "power"], "name its column with --x COL"),
        (["--law", "power", "--x", "preset"], "column 'preset' (x) holds no numbers (e.g. 'synthetic')"),
    ],
)
def test_fit_errors_name_the_problem_and_the_fix(runs_csv, capsys, args, message):
    assert main(["fit", str(runs_csv), "--bootstrap", "0", *args]) == 2
    assert message in capsys.readouterr().err


def test_mixed_protocols_are_refused(runs, tmp_path, capsys):
    path = tmp_path / "mixed.csv"
    odd = pd.factorize(runs["run_id"])[0] % 2 == 1
    runs.assign(fvd_protocol=np.where(odd, "256 clips", "2048 clips")).to_csv(path, index=False)
    assert main(["fit", str(path), "--law", "metric", "--y", "fvd", "--bootstrap", "0"]) == 2
    assert "'fvd' was measured under 2 different protocols" in capsys.readouterr().err


def test_metric_columns_found_by_default():
    found = [
        c
        for c in ("fvd", "FID", "fvd_ema", "fvd_protocol", "fid_std", "kid", "is")
        if METRIC_PATTERN.match(c)
    ]
    assert found == ["fvd", "FID", "fvd_ema"]


def test_runs_of_different_conditioning_are_never_pooled_silently(runs, tmp_path, capsys):
    """A table of text- and class-conditioned runs is refused, naming both fixes: select one kind
    with --where, or pool them with --pool."""
    mixed = runs.copy()
    ids = sorted(mixed["run_id"].unique())
    mixed["conditioning"] = mixed["run_id"].map(
        {r: "text-cross" if i % 2 else "class" for i, r in enumerate(ids)}
    )
    path = tmp_path / "mixed.csv"
    mixed.to_csv(path, index=False)
    base = ["fit", str(path), "--law", "chinchilla", "--json", "--bootstrap", "0"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert (
        "mixes runs of conditioning ['class', 'text-cross']" in err and "--where" in err and "--pool" in err
    )
    assert main([*base, "--where", "conditioning=class"]) == 0
    assert json.loads(capsys.readouterr().out)["n_points"] == len(ids) // 2 + len(ids) % 2
    assert main([*base, "--pool", "conditioning"]) == 0
    assert json.loads(capsys.readouterr().out)["n_points"] == len(ids)
    assert main([*base, "--where", "conditioning=none"]) == 2
    assert "no rows with conditioning = 'none'" in capsys.readouterr().err


def test_log_axes_label_only_the_2x_and_5x_minor_ticks():
    from analysis.plots import _minor_2_5

    assert _minor_2_5(2.0, None) == r"$2\times10^{0}$" and _minor_2_5(5e-3, None) == r"$5\times10^{-3}$"
    assert [_minor_2_5(v, None) for v in (1.5, 1.6, 3.0, 4.6)] == ["", "", "", ""]  # not "2x", "5x"
