"""Protocols are recorded flat, hashed stably, and values from different protocols are never mixed."""

import pytest

from lit_vdit.metrics import Protocol, ProtocolMismatchError, check_protocol_feasible, check_same_protocol


def test_flat_dict_round_trip_and_stable_id():
    p = Protocol(dataset="ucf101", resolution=(64, 48), sampler="ddim", steps=50, guidance=2.0)
    d = p.to_dict()
    assert d["resolution"] == "64x48" and p.size == (64, 48)
    assert all(isinstance(v, str | int | float) for v in d.values())  # one CSV cell each
    assert Protocol.from_dict(d | {"unrelated_column": 1}) == p
    assert Protocol.from_dict(d).id == p.id == Protocol(**d).id
    assert Protocol(dataset="ucf101", resolution=64).resolution == "64x64"
    from_csv = Protocol.from_dict({k: str(v) for k, v in d.items()})  # every cell read back as text
    assert from_csv == p and from_csv.id == p.id
    assert Protocol(dataset="ucf101", guidance=1).id == Protocol(dataset="ucf101", guidance=1.0).id


def test_mismatch_is_refused_and_names_the_fields():
    a = Protocol(dataset="ucf101", steps=50)
    assert check_same_protocol([a, a.to_dict()]) == a
    with pytest.raises(ProtocolMismatchError, match=r"steps: 50 vs 250.*refusing"):
        check_same_protocol([a, Protocol(dataset="ucf101", steps=250)])
    b = a.for_metric("fvd", "i3d-kinetics-400", "ab" * 32, "tf1-bilinear-224")
    with pytest.raises(ProtocolMismatchError, match="weights_sha256"):
        check_same_protocol([b, a.for_metric("fvd", "i3d-kinetics-400", "cd" * 32, "tf1-bilinear-224")])
    assert a.id != b.id


def test_for_metric_blanks_other_metrics_options_and_real_key_ignores_sampling():
    p = Protocol(dataset="sky", kid_subset_size=100)
    fvd = p.for_metric("fvd", "i3d", "00", "r")
    assert fvd.kid_subset_size == 0 and fvd.is_splits == 0 and fvd.metric == "fvd"
    assert p.for_metric("kid", "inc", "00", "r").kid_subset_size == 100
    assert p.for_metric("is", "inc", "00", "r").num_real == 0
    other_sampler = Protocol(dataset="sky", sampler="ddpm", steps=1000).for_metric("fvd", "i3d", "00", "r")
    assert fvd.real_key() == other_sampler.real_key() and fvd.id != other_sampler.id
    assert (
        fvd.real_key() != Protocol(dataset="sky", num_real=10).for_metric("fvd", "i3d", "00", "r").real_key()
    )


def test_infeasible_protocols_fail_before_sampling():
    with pytest.raises(ValueError, match=r"clips of 9\+ frames"):
        check_protocol_feasible(["fvd"], Protocol(dataset="d", frames=8))
    with pytest.raises(
        ValueError, match="kvd needs at least 1000 samples per set but the protocol gives 256"
    ):
        check_protocol_feasible(["kvd"], Protocol(dataset="d", num_real=256, num_fake=256))
    check_protocol_feasible(
        ["kid"], Protocol(dataset="d", num_real=256, num_fake=256)
    )  # 256 clips x 16 frames
    with pytest.raises(ValueError, match="unknown metric"):
        check_protocol_feasible(["psnr"], Protocol(dataset="d"))
