"""Evaluation metrics of generated videos under one locked, recorded protocol.

Metrics (network; features):
- ``fvd``, ``kvd``: Frechet / kernel distance of I3D features (the TF-Hub Kinetics-400 I3D of the
  original FVD; 400-d logits before the softmax, clips resized to 224 with TF1 bilinear, in [-1, 1]).
- ``fid``, ``kid``: Frechet / kernel distance of InceptionV3 pool features (2048-d) of every frame.
- ``is``: Inception Score of the generated frames (needs torch-fidelity's Inception weights file).

Weights never download: see :mod:`lit_vdit.metrics.weights` for where each file comes from, the
config keys ``i3d_path`` / ``inception_path`` and the environment variables ``LIT_VDIT_I3D_PATH`` /
``LIT_VDIT_INCEPTION_PATH``.

Usage (an evaluation callback or ``lit-vdit eval``)::

    protocol = Protocol(dataset="ucf101", num_real=2048, num_fake=2048, frames=16, stride=1,
                        resolution=64, sampler="ddim", steps=50, guidance=1.0)
    check_weights_available(["fvd", "fid"], i3d_path=cfg.i3d_path)        # before sampling
    check_protocol_feasible(["fvd", "fid"], protocol)
    results = compute_video_metrics(real_loader_clips, sample_clips(), protocol, ["fvd", "fid"],
                                    cache_dir="~/.cache/lit_vdit/metrics", device="cuda")
    results["fvd"]["value"], results["fvd"]["protocol"]   # float, flat dict for result.json
    metrics_row(results)   # {"fvd": ..., "fvd_protocol": "<id>", "fid": ...} for metrics.csv

Values are only comparable when their protocols are equal: :func:`check_same_protocol` raises
:class:`ProtocolMismatchError` otherwise, and ``<metric>_protocol`` ids let tables group by protocol.
"""

from lit_vdit.metrics.evaluate import Shard, check_protocol_feasible, compute_video_metrics, metrics_row
from lit_vdit.metrics.frechet import (
    feature_stats,
    frechet_distance,
    frechet_distance_from_features,
    inception_score,
    kernel_distance,
)
from lit_vdit.metrics.protocol import Protocol, ProtocolMismatchError, check_same_protocol
from lit_vdit.metrics.weights import I3D_ENV, INCEPTION_ENV, WeightsNotFoundError, check_weights_available

__all__ = [
    "I3D_ENV",
    "INCEPTION_ENV",
    "Protocol",
    "ProtocolMismatchError",
    "Shard",
    "WeightsNotFoundError",
    "check_protocol_feasible",
    "check_same_protocol",
    "check_weights_available",
    "compute_video_metrics",
    "feature_stats",
    "frechet_distance",
    "frechet_distance_from_features",
    "inception_score",
    "kernel_distance",
    "metrics_row",
]
