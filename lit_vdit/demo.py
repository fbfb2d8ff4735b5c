"""``lit-vdit demo``: a small scaling grid on the synthetic clips, samples, then fits and a report.

Every step resumes: rerunning the demo skips finished runs and redoes only what is missing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from experiments.cli import main as grid_main
from lit_vdit.cli import main as cli_main

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lit-vdit demo", description=__doc__)
    parser.add_argument("--out", default="demo_out", help="output folder")
    parser.add_argument("--spec", default=str(REPO_ROOT / "experiments" / "demo.yaml"), help="grid spec")
    parser.add_argument("--workers", type=int, default=1, help="concurrent runs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    start = time.perf_counter()

    code = grid_main(["run", args.spec, "--out", str(out / "grid"), "--workers", str(args.workers)])
    if code:
        print(f"demo: some runs failed; see `lit-vdit grid status {out / 'grid'}` and their log.txt")
        return code

    # Samples from the largest model of the grid (EMA weights, classifier-free guidance).
    runs = json.loads((out / "grid" / "grid.json").read_text())["runs"]
    largest = max(runs, key=lambda run: run["params_non_embedding"])
    run_dir = out / "grid" / "runs" / largest["run_id"]
    predict_args = [
        arg for key in ("model", "data", "trainer") for arg in (f"--{key}", largest["files"][key])
    ]
    for key, value in largest["overrides"].items():
        predict_args += [f"--{key}", json.dumps(value) if isinstance(value, list | dict) else str(value)]
    cli_main(
        [
            "predict",
            *predict_args,
            "--trainer.default_root_dir",
            str(run_dir),
            "--trainer.logger",
            "false",
            "--ckpt_path",
            str(run_dir / "checkpoints" / "last.ckpt"),
        ]
    )

    code = cli_main(["analyze", "report", str(out / "grid" / "runs.csv"), "--out", str(out / "report")])
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    print(f"  runs table : {out / 'grid' / 'runs.csv'}")
    print(f"  samples    : {run_dir / 'samples'} ({largest['name']})")
    print(f"  report     : {out / 'report' / 'report.html'}")
    return code
