"""Video U-Net: shapes, parameter ladder matched to the DiT, training through the CLI, U-Net vs DiT bench."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.bench_unet_vs_dit import PAIRS
from experiments.bench_unet_vs_dit import main as bench_main
from lit_vdit.cli import main
from lit_vdit.models.dit import VideoDiT
from lit_vdit.models.unet import UNET_SIZES, VideoUNet


def non_embedding(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters()) - model.embedding_parameters()


@pytest.mark.parametrize(
    ("shape", "num_classes", "learn_sigma"),
    [((3, 4, 16, 16), 5, True), ((3, 1, 8, 8), 5, False), ((4, 3, 8, 16), 0, False)],
)
def test_forward_shapes_video_image_unconditional_and_learned_sigma(shape, num_classes, learn_sigma):
    model = VideoUNet(shape, num_classes, preset="U1", learn_sigma=learn_sigma)
    x = torch.randn(2, *shape)
    y = torch.tensor([0, 4]) if num_classes else None
    out = model(x, torch.tensor([3.0, 500.0]), y)
    channels = shape[0] * (2 if learn_sigma else 1)
    assert out.shape == (2, channels, *shape[1:])
    assert model.num_tokens == shape[1] * shape[2] * shape[3]
    assert model.null_class == (num_classes if num_classes else None)
    assert model.embedding_parameters() == ((num_classes + 1) * 12 if num_classes else 0)  # U1: width 12


def test_output_is_zero_at_init_and_becomes_nonzero_after_a_step():
    model = VideoUNet((3, 2, 8, 8), 3, preset="U0")
    x, t, y = torch.randn(2, 3, 2, 8, 8), torch.tensor([1.0, 2.0]), torch.tensor([0, 2])
    assert torch.count_nonzero(model(x, t, y)) == 0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    (model(x, t, y) - x).pow(2).mean().backward()
    optimizer.step()
    assert torch.count_nonzero(model(x, t, y)) > 0


def test_stages_are_the_fsdp_units_and_sizes_are_checked():
    model = VideoUNet((3, 2, 8, 8), 0, preset="U0")
    assert model.fsdp_units() == [*model.down, model.mid, *model.up]
    with pytest.raises(ValueError, match="divisible by 4"):
        VideoUNet((3, 2, 6, 6), 0, preset="U1")
    with pytest.raises(ValueError, match="unknown U-Net preset"):
        VideoUNet((3, 2, 8, 8), 0, preset="T1")


@pytest.mark.parametrize(
    ("clip", "patch"), [((3, 4, 16, 16), (1, 4, 4)), ((3, 8, 32, 32), (2, 4, 4))], ids=["demo", "dit_demo"]
)
def test_ladder_matches_the_dit_ladder_within_10_percent(clip, patch):
    assert list(PAIRS.values()) == list(UNET_SIZES)
    for dit, unet in PAIRS.items():
        with torch.device("meta"):
            n_dit = non_embedding(VideoDiT(clip, 16, dit, patch_size=patch))
            n_unet = non_embedding(VideoUNet(clip, 16, unet))
        assert abs(n_unet / n_dit - 1) < 0.10, (dit, n_dit, unet, n_unet)


@pytest.mark.parametrize(
    ("config", "preset", "denoiser"),
    [("dit_demo", "T0", "VideoDiT"), ("unet_demo", "U0", "VideoUNet")],
)
def test_the_same_training_loop_drives_both_families(repo_root, tmp_path, config, preset, denoiser):
    os.chdir(repo_root)
    main(
        [
            "fit",
            *("--model", f"configs/model/{config}.yaml"),
            *("--data", "configs/data/synthetic.yaml"),
            *("--trainer", "configs/trainer/cpu.yaml"),
            *("--trainer.max_steps", "3", "--trainer.default_root_dir", str(tmp_path)),
            *("--trainer.enable_progress_bar", "false", "--trainer.logger", "false"),
            *("--model.init_args.denoiser.init_args.preset", preset),
            *("--data.init_args.frames", "2", "--data.init_args.height", "8", "--data.init_args.width", "8"),
            *("--data.init_args.num_clips", "16", "--data.init_args.val_clips", "4"),
            *("--data.init_args.batch_size", "4"),
        ]
    )
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["finished"] and result["denoiser"] == denoiser
    assert list(metrics["step"]) == [1, 2, 3] and np.isfinite(metrics["val_loss_raw"]).all()
    assert metrics["flops_measured"].iloc[-1] == 12 * result["costs"]["flops_train_step"]


TINY_SPEC = """
name: tiny
base:
  model: configs/model/dit_demo.yaml
  data: configs/data/synthetic.yaml
  trainer: configs/trainer/cpu.yaml
  overrides:
    batch_size: 2
    data.init_args.frames: 2
    data.init_args.height: 8
    data.init_args.width: 8
    model.init_args.denoiser.init_args.patch_size: [1, 4, 4]
axes:
  preset: [T0, U0, T1, U1, T2]
derived:
  model.init_args.denoiser.class_path:
    by: preset
    values:
      T0: lit_vdit.models.dit.VideoDiT
      T1: lit_vdit.models.dit.VideoDiT
      T2: lit_vdit.models.dit.VideoDiT
      U0: lit_vdit.models.unet.VideoUNet
      U1: lit_vdit.models.unet.VideoUNet
"""


def test_bench_throughput_table_has_a_row_per_matched_pair(repo_root, tmp_path):
    os.chdir(repo_root)
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC)
    args = ["--spec", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path), "--stages", "throughput"]
    assert bench_main([*args, "--steps", "1", "--device", "cpu"]) == 0
    table = pd.read_csv(tmp_path / "throughput.csv")
    assert list(table["pair"]) == ["T0/U0", "T1/U1"]  # T2 has no U-Net in the grid
    assert (abs(table["unet_params"] / table["dit_params"] - 1) < 0.1).all()
    for family in ("dit", "unet"):
        assert (table[f"{family}_step_time_s"] > 0).all() and (table[f"{family}_peak_memory_mb"] >= 0).all()
        assert (table[f"{family}_train_flops_per_sample"] > 0).all()
    markdown = (tmp_path / "throughput.md").read_text()
    assert "T0/U0" in markdown and "T1/U1" in markdown


def fake_runs(rng: np.random.Generator) -> pd.DataFrame:
    """Loss curves of two families on known laws: the DiT is worse at small compute, better at large."""
    laws = {"VideoDiT": (1.0, 200.0, 0.25), "VideoUNet": (1.3, 6.0, 0.1)}  # E, A, alpha
    rows = []
    for denoiser, (e, a, alpha) in laws.items():
        for i, c_end in enumerate(np.geomspace(1e8, 1e11, 5)):
            for step, c in enumerate(np.geomspace(c_end / 100, c_end, 8), start=20):
                loss = (e + a * c**-alpha) * (1 + 0.003 * rng.standard_normal())
                rows.append(
                    {
                        "run_id": f"{denoiser}{i}",
                        "preset": f"<b>P{i}",
                        "step": step,
                        "flops_measured": c,
                        "val_loss_raw": loss,
                        "denoiser": denoiser,
                        "params_non_embedding": 1000 * (i + 1),
                        "finished": True,
                    }
                )
    return pd.DataFrame(rows)


def test_bench_report_fits_both_families_and_finds_the_crossover(tmp_path):
    (tmp_path / "grid").mkdir()
    fake_runs(np.random.default_rng(0)).to_csv(tmp_path / "grid" / "runs.csv", index=False)
    args = ["--out", str(tmp_path), "--stages", "report", "--bootstrap", "50", "--extrapolate", "2"]
    assert bench_main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    dit, unet = results["families"]["DiT"]["estimates"], results["families"]["U-Net"]["estimates"]
    assert dit["alpha"]["estimate"] == pytest.approx(0.25, abs=0.05)
    assert unet["alpha"]["estimate"] == pytest.approx(0.1, abs=0.05)
    cross = results["crossover"]  # 1 + 200 C^-0.25 = 1.3 + 6 C^-0.1 at C = 1.35e9
    assert cross["leader_at_top"] == "DiT" and 5e8 < cross["estimate"] < 4e9
    assert cross["low"] <= cross["estimate"] <= cross["high"]
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "<b>" not in html
    assert (tmp_path / "report.md").is_file() and (tmp_path / "figures" / "family_comparison.png").is_file()
