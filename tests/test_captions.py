"""Captions in every data source: synthetic clips described by their own attributes, manifests (CSV,
JSON lines) and class-name templates for video and frame folders, strict and lenient handling."""

import json
import logging

import pytest
import torch
from test_video_data import CLASSES, frame_tree, ucf101_tree, write_video

from lit_vdit.data import (
    FrameFolderDataModule,
    SyntheticDataModule,
    SyntheticVideoDataset,
    VideoFolderDataModule,
)
from lit_vdit.data.captions import CaptionError, readable_class
from lit_vdit.data.synthetic import PALETTE, dominant_colour


def test_synthetic_captions_say_what_the_clip_shows():
    data = SyntheticVideoDataset(300, frames=6, height=24, width=24, distractors=2)
    items = [data[i] for i in range(300)]
    for item in items[:50]:
        words = item["caption"].split()
        assert (
            words[0] == "a" and words[1] in PALETTE and words[2] in ("circle", "square", "triangle", "ring")
        )
        assert words[2] == ("circle", "square", "triangle", "ring")[item["label"] % 4]
    # The named colour is the clip's: the probe reads it back from the pixels (the main object may
    # leave the frame, so a few clips show no colour).
    read = [dominant_colour(item["video"]) for item in items]
    agree = sum(r == item["caption"].split()[1] for r, item in zip(read, items, strict=True))
    assert agree >= 0.95 * len(items)
    assert len({item["caption"] for item in items}) > 100  # many distinct captions
    assert {int(item["caption"].count("other shape") > 0) for item in items} == {0, 1}
    again = SyntheticVideoDataset(300, frames=6, height=24, width=24, distractors=2)
    assert again[7]["caption"] == items[7]["caption"] and torch.equal(again[7]["video"], items[7]["video"])


def test_synthetic_batches_carry_captions():
    dm = SyntheticDataModule(num_clips=8, val_clips=4, frames=2, height=8, width=8, batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["caption"]) == 4 and all(isinstance(c, str) for c in batch["caption"])
    assert dm.split_captions("val") == [dm.val_set[i]["caption"] for i in range(4)]


def _folder(tmp_path, count: int = 6):
    for v in range(count):
        write_video(tmp_path / "videos" / CLASSES[v % 2] / f"clip_{v}.mp4", 8)
    return tmp_path / "videos"


def _module(root, tmp_path, **kwargs):
    return VideoFolderDataModule(
        str(root), frames=4, height=16, width=16, val_clips=2, index_dir=str(tmp_path / "index"), **kwargs
    )


@pytest.mark.parametrize("layout", ["csv", "jsonl"])
def test_a_manifest_gives_each_clip_its_caption(tmp_path, layout):
    root = _folder(tmp_path)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*.mp4"))
    captions = {name: f"caption of {name}" for name in names}
    manifest = tmp_path / f"captions.{layout}"
    if layout == "csv":  # Open-Sora's layout: path,text (+ other columns), a path may be absolute
        rows = [f"{root / n if i == 0 else n},{t},8" for i, (n, t) in enumerate(captions.items())]
        manifest.write_text("path,text,num_frames\n" + "\n".join(rows) + "\n")
    else:
        manifest.write_text("\n".join(json.dumps({"path": n, "text": t}) for n, t in captions.items()))
    dm = _module(root, tmp_path, captions=str(manifest))
    dm.setup("fit")
    for dataset in (dm.train_set, dm.val_set):
        for i in range(len(dataset)):
            assert dataset[i]["caption"] == captions[dataset.clips[i].video]
    assert dm.split_captions("train") == [captions[c.video] for c in dm.train_set.clips]
    assert dm.identity("train") != _module(root, tmp_path).identity("train")  # the text is part of the data


def test_missing_captions_and_absent_videos_are_strict_errors_or_counted_skips(tmp_path, caplog):
    root = _folder(tmp_path)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*.mp4"))
    manifest = tmp_path / "captions.csv"
    rows = [f"{n},text {i}" for i, n in enumerate(names[:-1])] + ["Basketball/gone.mp4,a missing video"]
    manifest.write_text("path,text\n" + "\n".join(rows) + "\n")
    with pytest.raises(CaptionError, match=r"1 rows name videos that are missing.*1 videos have no caption"):
        _module(root, tmp_path, captions=str(manifest), strict=True).setup("fit")
    with caplog.at_level(logging.WARNING):
        dm = _module(root, tmp_path, captions=str(manifest))
        dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == len(names) - 1  # the uncaptioned video is skipped
    assert "1 of 6 videos have no caption" in caplog.text and "1 rows name missing" in caplog.text


def test_an_unusable_manifest_is_an_error_naming_it(tmp_path):
    root = _folder(tmp_path)
    for content, match in [("file,caption\nx,y\n", "lacking \\['path', 'text'\\]"), (None, "does not exist")]:
        manifest = tmp_path / "bad.csv"
        manifest.unlink(missing_ok=True)
        if content is not None:
            manifest.write_text(content)
        with pytest.raises(CaptionError, match=match):
            _module(root, tmp_path, captions=str(manifest)).setup("fit")
    (tmp_path / "bad.jsonl").write_text('{"path": "a"\n')
    with pytest.raises(CaptionError, match="cannot read caption manifest"):
        _module(root, tmp_path, captions=str(tmp_path / "bad.jsonl")).setup("fit")


def test_ucf101_captions_from_its_class_names(tmp_path):
    ucf101_tree(tmp_path)
    dm = VideoFolderDataModule(
        str(tmp_path / "UCF-101"),
        frames=4,
        height=16,
        width=16,
        split_dir=str(tmp_path / "ucfTrainTestlist"),
        index_dir=str(tmp_path / "index"),
        caption_template="a video of a person doing {label}",
    )
    dm.setup("fit")
    item = dm.train_set[0]
    assert item["caption"] == f"a video of a person doing {readable_class(CLASSES[item['label']])}"
    assert readable_class("ApplyEyeMakeup") == "apply eye makeup" == readable_class("apply_eye_makeup")
    with pytest.raises(ValueError, match="contain \\{label\\}"):
        VideoFolderDataModule(str(tmp_path), caption_template="a video")
    with pytest.raises(CaptionError, match="no classes"):
        _module(_folder(tmp_path / "flat"), tmp_path, class_folders=False, caption_template="{label}").setup(
            "fit"
        )


def test_frame_folders_read_captions_naming_their_folders(tmp_path):
    root = frame_tree(tmp_path / "sky_train", videos=4)
    (tmp_path / "captions.jsonl").write_text(
        "\n".join(
            json.dumps({"path": f"vid{v}/vid{v}_1", "text": f"a sky at dusk, clip {v}"}) for v in range(4)
        )
    )
    common = dict(
        frames=4, frame_interval=2, height=16, width=16, val_clips=1, index_dir=str(tmp_path / "index")
    )
    dm = FrameFolderDataModule(str(root), captions=str(tmp_path / "captions.jsonl"), **common)
    dm.setup("fit")
    clips = [*dm.train_set.clips, *dm.val_set.clips]  # vid0 holds an empty frame: skipped, its row too
    assert {c.video.split("/")[0] for c in clips} == {"vid1", "vid2", "vid3"}
    assert all(c.caption == f"a sky at dusk, clip {c.video[3]}" for c in clips)
    assert dm.val_set[0]["caption"] == dm.val_set.clips[0].caption
