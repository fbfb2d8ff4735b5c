"""Post-hoc EMA (EDM2): power-function profiles, their least-squares reconstruction, snapshots in a
run, `lit-vdit posthoc-ema` and the run table's column."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from lit_vdit.cli import main
from lit_vdit.modules.posthoc_ema import ema_beta, reconstruct, sigma_rel_to_gamma, solve_coefficients

RUN = [
    "--model", "configs/model/dit_demo.yaml", "--data", "configs/data/synthetic.yaml",
    "--trainer", "configs/trainer/cpu.yaml", "--trainer.enable_progress_bar", "false",
    "--model.init_args.denoiser.init_args.preset", "T0", "--model.init_args.denoiser.init_args.patch_size",
    "[1, 4, 4]", "--data.init_args.frames", "2", "--data.init_args.height", "8",
    "--data.init_args.width", "8",
    "--data.init_args.num_clips", "16", "--data.init_args.val_clips", "4", "--data.init_args.batch_size", "4",
    "--model.init_args.val_timesteps", "2",
]  # fmt: skip


def test_sigma_rel_and_gamma_are_edm2s():
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    assert ema_beta(1, 6.94) == 0.0  # the first update copies the weights
    with pytest.raises(ValueError, match="sigma_rel must be in"):
        sigma_rel_to_gamma(0.5)


def simulated(gammas, steps, every, seed=0):
    """Power-function EMAs of a random walk of 256 weights, tracked exactly in discrete time."""
    rng = np.random.default_rng(seed)
    theta = np.cumsum(rng.normal(size=(steps, 256)), axis=0) + 5.0
    emas = {g: np.zeros(256) for g in gammas}
    snaps = []
    for t in range(1, steps + 1):
        for g in gammas:
            emas[g] = ema_beta(t, g) * emas[g] + (1 - ema_beta(t, g)) * theta[t - 1]
        if t % every == 0:
            snaps.append((t, {g: emas[g].copy() for g in gammas}))
    return snaps


def test_reconstruction_from_two_profiles_matches_a_directly_tracked_third():
    g05, g10, g075 = (sigma_rel_to_gamma(s) for s in (0.05, 0.10, 0.075))
    snaps = simulated([g05, g10, g075], steps=2000, every=100)
    final = snaps[-1][1]
    basis = [(t, g, v) for t, profiles in snaps for g, v in profiles.items() if g != g075]
    x = solve_coefficients([t for t, _, _ in basis], [g for _, g, _ in basis], 2000, g075)
    rebuilt = sum(c * v for c, (_, _, v) in zip(x, basis, strict=True))
    moved = np.linalg.norm(final[g075] - final[g10])  # how far apart two profiles' averages are
    assert np.linalg.norm(rebuilt - final[g075]) < 0.05 * moved
    assert x.sum() == pytest.approx(1.0, abs=1e-3)  # an average of averages


def test_a_run_stores_snapshots_and_posthoc_ema_evaluates_and_records_lengths(repo_root, tmp_path):
    os.chdir(repo_root)
    run = tmp_path / "run"
    extra = [
        "--model.init_args.posthoc_ema",
        "[0.05, 0.1, 0.075]",
        "--model.init_args.ema_snapshot_every",
        "5",
    ]
    main(["fit", *RUN, "--trainer.default_root_dir", str(run), "--trainer.max_steps", "42", *extra])
    snapshots = sorted(p.name for p in (run / "ema_snapshots").glob("*.pt"))
    assert snapshots == [f"step={s:08d}.pt" for s in (*range(5, 42, 5), 42)]  # and the final step
    first = torch.load(run / "ema_snapshots" / snapshots[0], weights_only=True)
    assert first["step"] == 5 and set(first["profiles"]) == {"0.05", "0.1", "0.075"}
    # the directly tracked 0.075 profile against its reconstruction from 0.05 and 0.1
    saved = [(torch.load(run / "ema_snapshots" / n, weights_only=True)) for n in snapshots]
    pairs = [(s["step"], s["profiles"]) for s in saved]
    rebuilt, _ = reconstruct(pairs, 0.075, profiles=[0.05, 0.1])
    direct, other = pairs[-1][1]["0.075"], pairs[-1][1]["0.1"]
    error = sum(float((rebuilt[k] - direct[k]).norm() ** 2) for k in direct) ** 0.5
    apart = sum(float((other[k] - direct[k]).norm() ** 2) for k in direct) ** 0.5
    assert error < 0.2 * apart  # measured: 0.0088 against 0.090

    assert main(["posthoc-ema", str(run), "--sigma-rel", "0.05", "0.1", "--record"]) == 0
    table = pd.read_csv(run / "posthoc_ema.csv")
    assert list(table["sigma_rel"]) == [0.05, 0.1] and (table["step"] == 42).all()
    recorded = json.loads((run / "result.json").read_text())["posthoc_ema"]
    assert recorded["val_loss"] == table["val_loss"].min() and recorded["step"] == 42


def test_posthoc_ema_needs_snapshots(repo_root, tmp_path):
    from lit_vdit.modules import DiffusionModule

    with pytest.raises(ValueError, match="set ema_snapshot_every > 0"):
        DiffusionModule(lambda *a: None, posthoc_ema=[0.05])
    with pytest.raises(SystemExit, match="no EMA snapshots"):
        main(["posthoc-ema", str(tmp_path)])
