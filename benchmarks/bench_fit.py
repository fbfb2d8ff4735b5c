"""Wall time of the 4,500-start Chinchilla fit: vectorised (analysis) vs a plain scipy loop.

The plain loop is what a straightforward replication does: one ``scipy.optimize.minimize``
(L-BFGS-B, same bounds, same Huber objective with its analytic gradient) per start. The whole loop
takes many minutes, so by default it runs on a random subset of starts and the total is
extrapolated (labelled as such); ``--full`` times every start.

    python benchmarks/bench_fit.py                   # vectorised + 300 loop starts, extrapolated
    python benchmarks/bench_fit.py --full            # vectorised + all 4,500 loop starts
    python benchmarks/bench_fit.py --numeric-grad    # loop with finite-difference gradients
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from analysis.fitting import fit
from analysis.laws import chinchilla_law, hoffmann_grid

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chinchilla_svg_extracted_data.csv"
DELTA = 1e-3


def load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N, D = C / 6N and loss of Besiroglu et al.'s 240 points (5 highest losses dropped)."""
    df = pd.read_csv(path)
    df = df.drop(df["loss"].nlargest(5).index)
    n, c = df["Model Size"].to_numpy(), df["Training FLOP"].to_numpy()
    return n, c / (6 * n), df["loss"].to_numpy()


def plain_objective(theta, log_n, log_d, log_y):
    """Summed Huber loss of the log-sum-exp residuals for one start, and its gradient."""
    log_e, log_a, log_b, alpha, beta = theta
    terms = np.stack([np.full_like(log_n, log_e), log_a - alpha * log_n, log_b - beta * log_d])
    resid = logsumexp(terms, axis=0) - log_y
    clipped = np.clip(resid, -DELTA, DELTA)
    weights = softmax(terms, axis=0) * clipped
    grad = [
        weights[0].sum(),
        weights[1].sum(),
        weights[2].sum(),
        -(weights[1] * log_n).sum(),
        -(weights[2] * log_d).sum(),
    ]
    return float(np.sum(clipped * (resid - 0.5 * clipped))), np.array(grad)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", type=Path, default=DATA)
    p.add_argument(
        "--loop-starts", type=int, default=300, help="starts timed in the plain loop (default 300)"
    )
    p.add_argument("--full", action="store_true", help="time the plain loop on all 4,500 starts")
    p.add_argument("--numeric-grad", action="store_true", help="plain loop with finite-difference gradients")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    n, d, y = load(args.csv)
    law, starts = chinchilla_law(), hoffmann_grid()
    print(
        f"data: {len(y)} points; {len(starts)} starts; cpus {os.cpu_count()}; load {os.getloadavg()[0]:.1f}"
    )

    t0 = time.perf_counter()
    res = fit(law, {"N": n, "D": d}, y, delta=DELTA, starts=starts)
    vec = time.perf_counter() - t0
    est = ", ".join(f"{k} {v:.4g}" for k, v in res.estimates.items() if k in ("E", "A", "B", "alpha", "beta"))
    print(f"vectorised: {vec:.2f} s for {len(starts)} starts; best objective {res.objective:.10g}; {est}")

    idx = np.arange(len(starts))
    if not args.full:
        idx = np.sort(np.random.default_rng(args.seed).choice(len(starts), args.loop_starts, replace=False))
    log_n, log_d, log_y = np.log(n), np.log(d), np.log(y)
    bounds = list(zip(law.lower, law.upper, strict=True))
    if args.numeric_grad:
        fun, jac = (lambda th: plain_objective(th, log_n, log_d, log_y)[0]), None
    else:
        fun, jac = (lambda th: plain_objective(th, log_n, log_d, log_y)), True
    t0 = time.perf_counter()
    best = min(
        (minimize(fun, starts[i], jac=jac, method="L-BFGS-B", bounds=bounds) for i in idx),
        key=lambda r: r.fun,
    )
    loop = time.perf_counter() - t0
    grad = "finite-difference" if args.numeric_grad else "analytic"
    print(
        f"plain loop ({grad} gradients): {loop:.2f} s for {len(idx)} starts; best objective {best.fun:.10g}"
    )
    total = loop * len(starts) / len(idx)
    label = "measured" if len(idx) == len(starts) else f"EXTRAPOLATED from {len(idx)} random starts"
    print(f"plain loop, all {len(starts)} starts: {total:.1f} s = {total / 60:.1f} min ({label})")
    print(f"speed-up: {total / vec:.0f}x")


if __name__ == "__main__":
    main()
