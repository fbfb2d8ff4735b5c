import torch

from lit_vdit.data import SyntheticDataModule, SyntheticVideoDataset


def test_clips_are_deterministic_in_range_and_of_any_size():
    a = SyntheticVideoDataset(10, frames=5, height=12, width=20, seed=3)
    b = SyntheticVideoDataset(10, frames=5, height=12, width=20, seed=3)
    for i in (0, 7):
        assert torch.equal(a[i]["video"], b[i]["video"]) and a[i]["label"] == b[i]["label"]
    clip = a[0]["video"]
    assert clip.shape == (3, 5, 12, 20) and clip.min() >= -1 and clip.max() <= 1
    assert not torch.equal(a[0]["video"][:, 0], a[0]["video"][:, -1])  # things move
    assert not torch.equal(
        SyntheticVideoDataset(10, seed=4)[0]["video"], SyntheticVideoDataset(10, seed=3)[0]["video"]
    )


def test_labels_cover_the_classes():
    data = SyntheticVideoDataset(200, frames=2, height=8, width=8, num_classes=6)
    assert {data[i]["label"] for i in range(200)} == set(range(6))


def test_train_and_val_never_overlap_and_budget_is_unique_clips():
    dm = SyntheticDataModule(num_clips=32, val_clips=16, frames=2, height=8, width=8, batch_size=4)
    dm.setup("fit")
    train = {dm.train_set[i]["video"].numpy().tobytes() for i in range(32)}
    val = {dm.val_set[i]["video"].numpy().tobytes() for i in range(16)}
    assert len(train) == 32 and len(val) == 16 and not train & val
    assert dm.train_size == 32 and dm.clip_shape == (3, 2, 8, 8) and dm.num_classes == 16
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (4, 3, 2, 8, 8) and batch["label"].shape == (4,)


def test_unbounded_stream_samples_with_replacement():
    dm = SyntheticDataModule(num_clips=None, frames=2, height=8, width=8, batch_size=4)
    dm.setup("fit")
    assert len(dm.train_dataloader()) == 1000


def test_rendered_clips_are_kept_up_to_the_memory_bound(monkeypatch):
    import lit_vdit.data.synthetic as synthetic

    clip_bytes = 3 * 2 * 8 * 8 * 4
    monkeypatch.setattr(synthetic, "MEMO_BYTES", 3 * clip_bytes)  # room for 3 clips
    data = SyntheticVideoDataset(10, frames=2, height=8, width=8)
    first = [data[i] for i in range(10)]
    assert sorted(data._memo) == [0, 1, 2]
    for i in range(10):  # read back (or rendered again past the bound) equal to the first reading
        again = data[i]
        assert torch.equal(again["video"], first[i]["video"]) and again["label"] == first[i]["label"]
        assert torch.equal(again["video"], data.render(i)["video"])
