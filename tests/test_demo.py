"""`lit-vdit demo --latent`: demo VAE, then the grid in its latent space, samples, report; reruns resume."""

import json
from pathlib import Path

import av
import pandas as pd
import torch
import yaml

from experiments.demo import main as demo_main

REPO = Path(__file__).resolve().parents[1]


def test_latent_demo_trains_the_vae_then_the_grid_in_its_latents(tmp_path):
    spec = yaml.safe_load((REPO / "experiments" / "demo.yaml").read_text())
    spec["axes"]["preset"] = ["T0", "T1", "T2", "T3"]
    spec["base"]["overrides"].update({"steps": 6, "data.init_args.val_clips": 8})
    spec_path = tmp_path / "demo.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    args = ["--out", str(out), "--spec", str(spec_path), "--latent", "--vae-steps", "10"]
    assert demo_main(args) == 0

    vae = out / "vae" / "checkpoints" / "last.ckpt"
    assert torch.load(vae, weights_only=True)["global_step"] == 10
    runs = pd.read_csv(out / "grid_latent" / "runs.csv")
    assert sorted(runs["preset"].unique()) == ["T0", "T1", "T2", "T3"] and runs["finished"].all()
    assert (runs["vae_encode_flops"] > 0).all() and (runs["flops_vae_encode"] > 0).all()
    for result in (out / "grid_latent" / "runs").glob("*/result.json"):
        info = json.loads(result.read_text())
        assert info["costs"]["latent_shape"] == [4, 4, 4, 4]  # 4x16x16 clips through the 1x4x4 VAE
        assert info["hparams"]["vae_checkpoint"] == str(vae.resolve())
    samples = sorted((out / "grid_latent").glob("runs/*/samples/*.mp4"))
    assert samples, "the largest model's samples, decoded by the VAE"
    with av.open(str(samples[0])) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (16, 16)
    assert (out / "report_latent" / "report.html").is_file() and not (out / "grid").exists()

    stamp = vae.stat().st_mtime_ns
    assert demo_main(args) == 0  # a rerun reuses the VAE and the finished runs
    assert vae.stat().st_mtime_ns == stamp
