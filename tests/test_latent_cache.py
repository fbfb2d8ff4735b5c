"""Latent cache: `lit-vdit cache-latents` (build, resume, metadata), LatentDataModule, training from it."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from test_vae import vae_checkpoint
from test_video_data import CLASSES, write_video

from lit_vdit.cli import main as cli_main
from lit_vdit.data import LatentDataModule, SyntheticDataModule, VideoFolderDataModule
from lit_vdit.data.latents import SourceVideosUnavailableError, build_cache, main
from lit_vdit.io import fingerprint, sha256_file
from lit_vdit.models.vae import IdentityVAE, load_frozen_vae

CLIP = ["--data.init_args.frames", "4", "--data.init_args.height", "16", "--data.init_args.width", "16"]


@pytest.fixture(autouse=True)
def index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def videos(tmp_path):
    for c in CLASSES[:2]:
        for v in range(4):
            write_video(tmp_path / "videos" / c / f"{c}_{v}.mp4", 10)
    return tmp_path / "videos"


def cache_args(root, out, *extra):
    return [
        "--data", "configs/data/video_folder.yaml", "--data.init_args.root", str(root), *CLIP,
        "--data.init_args.val_clips", "2", "--vae", "identity", "--out", str(out), "--batch-size", "2",
        "--dtype", "float32", *extra,
    ]  # fmt: skip


def test_interrupted_build_resumes_and_mismatched_caches_are_refused(
    repo_root, videos, tmp_path, monkeypatch
):
    os.chdir(repo_root)
    out = tmp_path / "cache_identity"
    calls = []

    def encode(self, x):
        calls.append(len(x))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while encoding the second chunk
        return x

    with monkeypatch.context() as m:
        m.setattr(IdentityVAE, "encode_latents", encode)
        with pytest.raises(KeyboardInterrupt):
            main(cache_args(videos, out))
    assert json.loads((out / "meta.json").read_text())["written"] == {"train": 2, "val": 0}
    with pytest.raises(ValueError, match=r"unfinished \(\{'train': '2/6', 'val': '0/2'\}"):
        LatentDataModule(str(out))
    with pytest.raises(ValueError, match="differs in clip_shape"):
        main(cache_args(videos, out, "--data.init_args.frames", "6"))

    def count(self, x):
        calls.append(len(x))
        return x

    calls.clear()
    with monkeypatch.context() as m:
        m.setattr(IdentityVAE, "encode_latents", count)
        assert main(cache_args(videos, out)) == 0
    assert calls == [2, 2, 2]  # the two remaining train chunks and the val chunk only
    meta = json.loads((out / "meta.json").read_text())
    setup = meta["setup"]
    assert meta["written"] == {"train": 6, "val": 2} and setup["vae_sha256"] == "identity"
    assert setup["clip_shape"] == [3, 4, 16, 16] and setup["latent_shape"] == [3, 4, 16, 16]
    assert setup["frame_interval"] == 1 and setup["latent_scale"] == 1.0
    assert (
        setup["data"]["init_args"]["random_start"] is False and "batch_size" not in setup["data"]["init_args"]
    )

    videos_dm = VideoFolderDataModule(
        str(videos), frames=4, height=16, width=16, val_clips=2, random_start=False
    )
    videos_dm.setup("fit")
    latent_dm = LatentDataModule(str(out), num_clips=4, frames=4, height=16, width=16, frame_interval=1)
    latent_dm.setup("fit")
    assert latent_dm.clip_shape == (3, 4, 16, 16) and latent_dm.num_classes == 2 and latent_dm.train_size == 4
    for i in range(4):  # the cache holds the clips the video DataModule decodes, in its order
        item = latent_dm.train_set[i]
        torch.testing.assert_close(item["latent"], videos_dm.train_set[i]["video"])
        assert item["label"] == videos_dm.train_set[i]["label"]
    with pytest.raises(ValueError, match="frames: cache 4, requested 8"):
        LatentDataModule(str(out), frames=8)
    with pytest.raises(ValueError, match="vae: cache identity, requested"):
        LatentDataModule(str(out), vae=vae_checkpoint(tmp_path / "vae.ckpt", 0))
    with pytest.raises(FileNotFoundError, match="not a latent cache"):
        LatentDataModule(str(tmp_path))


def test_cache_from_a_vae_checkpoint_records_its_hash_and_refuses_other_vaes(tmp_path):
    ckpt = vae_checkpoint(tmp_path / "vae.ckpt", 0)
    data = SyntheticDataModule(num_clips=5, val_clips=2, frames=3, height=8, width=8, num_classes=4)
    config = {"class_path": "lit_vdit.data.SyntheticDataModule", "init_args": {"num_clips": 5}}
    vae = load_frozen_vae(ckpt)
    meta = build_cache(data, vae, sha256_file(ckpt), tmp_path / "c", config, batch_size=2)
    assert meta["setup"]["vae_sha256"] == sha256_file(ckpt) and meta["setup"]["latent_scale"] == 0.5
    latents = np.load(tmp_path / "c" / "train_latents.npy")
    assert latents.shape == (5, 4, 3, 4, 4) and latents.dtype == np.float16
    expected = vae.encode_latents(data.train_set[3]["video"][None])[0]
    torch.testing.assert_close(torch.from_numpy(latents[3]).float(), expected, atol=2e-3, rtol=2e-3)

    dm = LatentDataModule(str(tmp_path / "c"), vae=ckpt)
    dm.check_vae(load_frozen_vae(ckpt))  # the same weights, loaded again
    for other in (IdentityVAE(), load_frozen_vae(vae_checkpoint(tmp_path / "other.ckpt", 1))):
        with pytest.raises(ValueError, match="encoded by another VAE"):
            dm.check_vae(other)
    unbounded = SyntheticDataModule(num_clips=None, frames=3, height=8, width=8)
    with pytest.raises(ValueError, match="unbounded"):
        build_cache(unbounded, vae, "x", tmp_path / "u", config)


def fit(out, data_args):
    cli_main(
        [
            "fit", "--model", "configs/model/dit_demo.yaml", "--trainer", "configs/trainer/cpu.yaml",
            "--model.init_args.denoiser.init_args.preset", "T0", "--trainer.max_steps", "2",
            "--trainer.default_root_dir", str(out), "--trainer.enable_progress_bar", "false",
            "--seed_everything", "3", *data_args,
        ]
    )  # fmt: skip
    return pd.read_csv(out / "metrics.csv")


def test_fit_from_latent_cache_equals_fit_from_videos_and_other_vae_is_refused(repo_root, videos, tmp_path):
    os.chdir(repo_root)
    main(cache_args(videos, tmp_path / "latents"))
    common = ["--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0"]
    from_videos = fit(
        tmp_path / "a",
        ["--data", "configs/data/video_folder.yaml", "--data.init_args.root", str(videos), *CLIP, *common,
         "--data.init_args.val_clips", "2", "--data.init_args.random_start", "false"],
    )  # fmt: skip
    latent_data = [
        "--data", "configs/data/latent_cache.yaml", "--data.init_args.cache_dir", str(tmp_path / "latents"),
        *CLIP, "--data.init_args.frame_interval", "1", *common,
    ]  # fmt: skip
    from_cache = fit(tmp_path / "b", latent_data)
    assert list(from_cache["step"]) == [1, 2]
    for column in ("train_loss", "val_loss_raw", "val_loss_ema", "tokens_seen"):
        np.testing.assert_allclose(from_cache[column], from_videos[column], rtol=1e-5)
    other_vae = '{"class_path": "lit_vdit.models.vae.CausalVideoVAE", "init_args": {"latent_channels": 3, "spatial_compression": 1, "temporal_compression": 1, "base_channels": 8, "channel_mult": [1]}}'  # noqa: E501
    with pytest.raises(ValueError, match="encoded by another VAE"):
        fit(tmp_path / "c", [*latent_data, "--model.init_args.vae", other_vae])


def test_fid_of_a_latent_cache_run_compares_with_the_source_videos(repo_root, videos, tmp_path):
    """A run trained from a latent cache is scored against the videos the cache was encoded from
    (recorded in meta.json), never against latents or VAE reconstructions; when they moved, one
    error names the path and the fix (source_root)."""
    os.chdir(repo_root)
    main(cache_args(videos, tmp_path / "latents"))
    latent_data = [
        "--data", "configs/data/latent_cache.yaml", "--data.init_args.cache_dir", str(tmp_path / "latents"),
        *CLIP, "--data.init_args.frame_interval", "1", "--data.init_args.batch_size", "2",
        "--data.init_args.num_workers", "0",
    ]  # fmt: skip
    fit(tmp_path / "run", latent_data)

    def evaluate(out, *extra):
        cli_main(
            ["eval", "--ckpt", str(tmp_path / "run" / "checkpoints" / "last.ckpt"),
             "--model", "configs/model/dit_demo.yaml", "--model.init_args.denoiser.init_args.preset", "T0",
             "--model.init_args.sampler.init_args.steps", "2", *latent_data, "--metrics", "fid",
             "--num-videos", "2", "--batch-size", "2", "--cache-dir", str(tmp_path / "features"),
             "--out", str(out), *extra]
        )  # fmt: skip
        return json.loads(out.read_text())["fid"]

    fid = evaluate(tmp_path / "eval.json")
    source = VideoFolderDataModule(str(videos), frames=4, height=16, width=16, val_clips=2)
    assert fid["protocol"]["dataset"] == "VideoFolderDataModule" and fid["protocol"]["num_real"] == 2
    assert fid["protocol"]["dataset_id"] == fingerprint(source.identity("val"))
    moved = videos.rename(tmp_path / "moved")
    with pytest.raises(SourceVideosUnavailableError, match=rf"root '{videos}'.*--data.init_args.source_root"):
        evaluate(tmp_path / "eval_missing.json")
    again = evaluate(tmp_path / "eval_moved.json", "--data.init_args.source_root", str(moved))
    assert again["protocol"]["dataset_id"] != fid["protocol"]["dataset_id"]  # another folder: features anew
    assert again["value"] == pytest.approx(fid["value"], rel=1e-5)  # from the same videos
