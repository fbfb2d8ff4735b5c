"""`lit-vdit demo`: an IsoFLOP study with fits, a held-out prediction, U-Net vs DiT and samples; reruns
resume; `--latent` runs it in the demo VAE's latent space (from a latent cache). A cheaper twin of
`make demo`: the same code on a grid of 3 DiT sizes and a U-Net at 2 small budgets."""

import json
from pathlib import Path

import pandas as pd
import torch
import yaml

from experiments.demo import main as demo_main

REPO = Path(__file__).resolve().parents[1]


def tiny_spec(tmp_path: Path, presets=("T0", "T1", "T2", "U0"), budgets=(1.0e9, 2.0e9, 4.0e9)) -> Path:
    """experiments/demo.yaml on small DiTs and a U-Net (U0 matches T0) at budgets of a few GFLOPs."""
    spec = yaml.safe_load((REPO / "experiments" / "demo.yaml").read_text())
    presets = list(presets)
    spec["axes"]["preset"] = presets
    classes = {
        p: "lit_vdit.models.unet.VideoUNet" if p[0] == "U" else "lit_vdit.models.dit.VideoDiT"
        for p in presets
    }
    spec["derived"] = {
        "lr": {"by": "preset", "values": dict.fromkeys(presets, 1e-3)},
        "model.init_args.denoiser.class_path": {"by": "preset", "values": classes},
    }
    spec["base"]["overrides"].update({"batch_size": 4, "data.init_args.val_clips": 8})
    spec["isoflop"] = {"budgets": list(budgets), "min_steps": 4, "warmup_fraction": 0.1}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_demo_runs_an_isoflop_study_and_reports_it(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--out", str(out), "--spec", str(tiny_spec(tmp_path)), "--workers", "2", "--bootstrap", "20"]
    assert demo_main(args) == 0
    console = capsys.readouterr().out
    runs = pd.read_csv(out / "grid" / "runs.csv")
    assert runs["run_id"].nunique() == 12 and runs["finished"].all()
    assert sorted(runs["flop_budget"].unique()) == [1.0e9, 2.0e9, 4.0e9]
    final = runs.sort_values("step").groupby("run_id").tail(1)
    # warm-up is 10% of each run's own steps, then a cosine decay to 0.1 x lr at its last step
    for directory in (out / "grid" / "runs").iterdir():
        hparams = json.loads((directory / "result.json").read_text())["hparams"]
        steps = int(final.loc[final["run_id"] == directory.name, "step"].iloc[0])
        assert hparams["warmup_steps"] == max(1, round(0.1 * steps)) and hparams["lr_schedule"] == "cosine"
    assert console.count("done preset=") == 12 and "runs already finished" not in console
    for text in (
        "L(N, D) = E + A/N^alpha",
        "L(C) envelope: alpha",
        "approach 2",
        "prediction of the",
        "report",
    ):
        assert text in console

    page = (out / "report" / "report.html").read_text()
    for section in ("Samples", "Study design", "Power laws in N and C", "Compute-optimal frontier",
                    "Extrapolation check", "U-Net vs DiT at matched compute"):  # fmt: skip
        assert section in page
    assert "the real clips in the last row" in page  # the gallery ends with the prompts' real clips
    assert "<td>T2</td><td>DiT</td>" in page and "0.512 / d_model" in page  # each size's lr and steps
    for figure in ("samples", "power_laws", "loss_vs_compute", "family_comparison"):
        assert (out / "report" / "figures" / f"{figure}.png").stat().st_size > 1000
        assert f'alt="{figure}"' in page
    results = json.loads((out / "report" / "results.json").read_text())
    assert results["extrapolation"]["order_by"] == "budget"
    held = {r["run_id"] for r in results["extrapolation"]["held_out"]}
    dits = final[final["denoiser"] == "VideoDiT"]
    assert held == set(dits.loc[dits["flop_budget"] == 4.0e9, "run_id"])  # the largest budget's runs
    assert set(results["unet_vs_dit"]["families"]) == {"DiT", "U-Net"}

    stamps = {p: p.stat().st_mtime_ns for p in (out / "grid" / "runs").glob("*/result.json")}
    assert demo_main(args) == 0  # a rerun resumes: no run trains again, the report is written again
    assert "12 of 12 runs already finished" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_latent_demo_trains_the_vae_then_the_study_in_its_latents(tmp_path):
    out = tmp_path / "out"
    spec = tiny_spec(tmp_path, presets=("T0", "T1", "U0"), budgets=(1.0e9, 2.0e9))
    args = ["--out", str(out), "--spec", str(spec), "--latent", "--vae-steps", "10",
            "--bootstrap", "10", "--workers", "2"]  # fmt: skip
    assert demo_main(args) == 0

    vae = out / "vae" / "checkpoints" / "last.ckpt"
    assert torch.load(vae, weights_only=True)["global_step"] == 10
    meta = json.loads((out / "latents" / "meta.json").read_text())  # every clip encoded once, up front
    assert meta["written"] == meta["setup"]["clips"] and meta["setup"]["latent_shape"] == [4, 4, 4, 4]
    runs = pd.read_csv(out / "grid_latent" / "runs.csv")
    assert runs["finished"].all() and (runs["flops_vae_encode"] == 0).all()  # the runs read the cache
    for result in (out / "grid_latent" / "runs").glob("*/result.json"):
        info = json.loads(result.read_text())
        assert info["costs"]["latent_shape"] == [4, 4, 4, 4]  # 4x16x16 clips through the 1x4x4 VAE
        assert info["hparams"]["vae_checkpoint"] == str(vae.resolve())
    assert (out / "report_latent" / "figures" / "samples.png").is_file() and not (out / "grid").exists()

    stamp = vae.stat().st_mtime_ns
    assert demo_main(args) == 0  # a rerun reuses the VAE and the finished runs
    assert vae.stat().st_mtime_ns == stamp
