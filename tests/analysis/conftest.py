"""Synthetic runs tables for the analysis tests: a known Chinchilla law plus noise, laid out like runs.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# Hoffmann et al. 2022's published law, used as ground truth.
TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
CHINCHILLA_CSV = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "chinchilla_svg_extracted_data.csv"
)


def chinchilla_loss(n, d, p=TRUE):
    return p["E"] + p["A"] / np.asarray(n) ** p["alpha"] + p["B"] / np.asarray(d) ** p["beta"]


def runs_table(
    sizes=(2e6, 5e6, 1.2e7, 3e7, 8e7),
    budgets=(1e15, 3e15, 1e16, 3e16),
    evals: int = 6,
    noise: float = 0.005,
    seed: int = 0,
) -> pd.DataFrame:
    """An IsoFLOP grid (every size at every budget) in runs.csv layout, one row per evaluation.

    Evaluations are log-spaced in step, so early rows have smaller D and C than the run's final one.
    FVD (with its protocol) is recorded at the final step only.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for b in budgets:
        for n in sizes:
            d_final = b / (6 * n)
            steps = np.unique(np.geomspace(50, 1000, evals).astype(int))
            for step in steps:
                d = d_final * step / steps[-1]
                loss = chinchilla_loss(n, d) * np.exp(noise * rng.standard_normal())
                final = step == steps[-1]
                rows.append(
                    {
                        "run_id": f"n{n:.0e}-c{b:.0e}",
                        "preset": "synthetic",
                        "params_non_embedding": n,
                        "params_total": 1.1 * n,
                        "tokens_seen": d,
                        "samples_seen": d / 256,
                        "flops_measured": 6.02 * n * d,
                        "flops_6nd": 6 * n * d,
                        "step": int(step),
                        "train_loss": loss * 1.01,
                        "val_loss_ema": loss,
                        "val_loss_raw": loss * 1.002,
                        "flop_budget": b,
                        "fvd": 40 + 30 * loss**3 * np.exp(0.02 * rng.standard_normal()) if final else np.nan,
                        "fvd_protocol": "2048 clips, 16 frames, 224px" if final else None,
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture
def make_runs():
    """The :func:`runs_table` factory, for tests that need a variant of the grid."""
    return runs_table


@pytest.fixture
def truth() -> dict[str, float]:
    return dict(TRUE)


@pytest.fixture
def runs() -> pd.DataFrame:
    return runs_table()


@pytest.fixture
def runs_csv(tmp_path, runs) -> Path:
    path = tmp_path / "runs.csv"
    runs.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def chinchilla_data() -> pd.DataFrame:
    """The 240 Chinchilla points Besiroglu et al. fitted (5 highest losses dropped), with D = C / 6N."""
    if not CHINCHILLA_CSV.exists():
        pytest.skip(
            f"reference data not found at {CHINCHILLA_CSV} (kept outside the repository: see "
            "shared/data/README.md)"
        )
    df = pd.read_csv(CHINCHILLA_CSV)
    df = df.drop(df["loss"].nlargest(5).index)
    return df.assign(D=df["Training FLOP"] / (6 * df["Model Size"]))
