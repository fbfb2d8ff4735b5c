"""``compute_video_metrics``: FVD/KVD and frame FID/KID/IS of generated clips against real clips."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lit_vdit.metrics.cache import cache_path, load_features, save_features
from lit_vdit.metrics.fid import FrameFeatures
from lit_vdit.metrics.frechet import frechet_distance_from_features, inception_score, kernel_distance
from lit_vdit.metrics.fvd import I3DFeatures
from lit_vdit.metrics.protocol import Protocol
from lit_vdit.metrics.weights import I3D_NETWORK, INCEPTION_NETWORK, check_weights_available

# metric -> (network, feature name); IS is the only metric that does not look at real data.
METRIC_FEATURE = {
    "fvd": (I3D_NETWORK, "logits"),
    "kvd": (I3D_NETWORK, "logits"),
    "fid": (INCEPTION_NETWORK, "2048"),
    "kid": (INCEPTION_NETWORK, "2048"),
    "is": (INCEPTION_NETWORK, "logits_unbiased"),
}
_EXTRACTORS = {I3D_NETWORK: I3DFeatures, INCEPTION_NETWORK: FrameFeatures}
I3D_MIN_FRAMES = 9  # the I3D's final (2, 7, 7) pool needs 2 time steps after three stride-2 stages


def process_block(total: int, rank: int, world: int) -> range:
    """Process ``rank``'s contiguous block of ``total`` items split into ``world`` equal blocks: every
    process gets ``ceil(total / world)`` positions, and those >= ``total`` are padding. How the
    evaluation's clips (:class:`Shard`) and the validation loss's batches are dealt to processes."""
    per = -(-total // world)
    return range(rank * per, (rank + 1) * per)


@dataclasses.dataclass(frozen=True)
class Shard:
    """One process's part of an evaluation on ``world`` processes.

    Each process takes a contiguous block of each clip set (:meth:`indices`), extracts its
    features, and :meth:`gather` puts the blocks back together in order on every process, so the
    value equals a single process's and N processes generate ~1/N of the videos each. Blocks are
    equal (a collective sharded forward needs the same number of batches everywhere): the last
    ones may run past the set, and those padding clips are dropped after the gather.

    Args:
        rank, world: this process and the number of processes.
        all_gather: ``(n, ...) -> (world, n, ...)`` across processes (e.g. a Lightning strategy's
            ``all_gather``); unused on one process.
    """

    rank: int = 0
    world: int = 1
    all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self):
        if not 0 <= self.rank < self.world:
            raise ValueError(f"Shard: rank {self.rank} outside a world of {self.world} processes")
        if self.world > 1 and self.all_gather is None:
            raise ValueError("Shard: several processes need an all_gather")

    def indices(self, total: int) -> range:
        """This process's block of a set of ``total`` clips (indices >= total are padding)."""
        return process_block(total, self.rank, self.world)

    def gather(self, features: np.ndarray, total: int) -> np.ndarray:
        """Every process's block of features, in order, without the padding: (total, ...)."""
        if self.world == 1:
            return features[:total]
        stacked = self.all_gather(torch.from_numpy(np.ascontiguousarray(features)))
        return stacked.cpu().numpy().reshape(-1, *features.shape[1:])[:total]


@contextlib.contextmanager
def _exact_fp32(device: torch.device):
    """True float32 features: no autocast from an enclosing mixed-precision context, no TF32."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.autocast(device.type, enabled=False), torch.inference_mode():
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def _check_clips(clips: torch.Tensor, protocol: Protocol) -> None:
    want = (3, protocol.frames, *protocol.size)
    if not torch.is_tensor(clips) or clips.ndim != 5 or tuple(clips.shape[1:]) != want:
        got = tuple(clips.shape) if torch.is_tensor(clips) else type(clips).__name__
        raise ValueError(
            f"clips must be float (B, {', '.join(map(str, want))}) in [-1, 1] by the protocol; got {got}"
        )


def check_protocol_feasible(metrics: Sequence[str], protocol: Protocol) -> None:
    """Raise before any sampling if ``protocol`` gives too few clips, frames or samples for ``metrics``."""
    for m in metrics:
        if m not in METRIC_FEATURE:
            raise ValueError(f"unknown metric {m!r}; known: {sorted(METRIC_FEATURE)}")
        video = METRIC_FEATURE[m][0] == I3D_NETWORK  # one sample per clip, else one per frame
        if video and protocol.frames < I3D_MIN_FRAMES:
            raise ValueError(
                f"{m} needs clips of {I3D_MIN_FRAMES}+ frames; protocol.frames={protocol.frames}"
            )
        clips = protocol.num_fake if m == "is" else min(protocol.num_real, protocol.num_fake)
        samples = clips if video else clips * protocol.frames
        kid = protocol.kid_subset_size
        need = {"is": protocol.is_splits, "kid": kid, "kvd": kid}.get(m, 2)  # a covariance needs 2
        if samples < need:
            raise ValueError(
                f"{m} needs at least {need} samples per set but the protocol gives {samples} "
                f"(num_real={protocol.num_real}, num_fake={protocol.num_fake}, frames={protocol.frames}, "
                f"kid_subset_size={protocol.kid_subset_size}, is_splits={protocol.is_splits})"
            )


def _needed_features(metrics: Sequence[str], real_side: bool) -> dict[str, set[str]]:
    """{network: feature names} the metrics need from real (``real_side``) or generated clips."""
    keys: dict[str, set[str]] = {}
    for m in metrics:
        if not (real_side and m == "is"):
            net, key = METRIC_FEATURE[m]
            keys.setdefault(net, set()).add(key)
    return keys


def extract_features(
    clips: Iterable[torch.Tensor],
    num: int,
    nets: dict[str, nn.Module],
    keys: dict[str, set[str]],
    protocol: Protocol,
    device: torch.device,
    batch_size: int,
) -> dict[str, dict[str, np.ndarray]]:
    """Features of the first ``num`` clips, {network: {feature: (num[*frames], D)}}; reads no clip more."""
    out: dict[str, dict[str, list[torch.Tensor]]] = {net: {k: [] for k in keys[net]} for net in nets}
    seen = 0
    for batch in clips:
        batch = batch[: num - seen]
        _check_clips(batch, protocol)
        for chunk in batch.split(batch_size):
            with _exact_fp32(device):
                chunk = chunk.to(device)
                for net, module in nets.items():
                    feats = module(chunk)
                    for k in keys[net]:
                        out[net][k].append(feats[k].cpu())
        seen += len(batch)
        if seen == num:
            break
    if seen < num:
        raise ValueError(f"only {seen} clips were given; the protocol needs {num}")
    return {net: {k: torch.cat(v).numpy() for k, v in d.items()} for net, d in out.items()}


def compute_video_metrics(
    real_clips: Iterable[torch.Tensor] | None,
    fake_clips: Iterable[torch.Tensor],
    protocol: Protocol,
    metrics: Sequence[str] = ("fvd", "fid", "kid"),
    cache_dir: str | Path | None = None,
    i3d_path: str | Path | None = None,
    inception_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    shard: Shard | None = None,
) -> dict[str, dict[str, Any]]:
    """Compute ``metrics`` of ``fake_clips`` against ``real_clips`` under ``protocol``.

    Clips are float tensors (B, 3, protocol.frames, H, W) in [-1, 1], with (H, W) = protocol.resolution;
    exactly ``protocol.num_real`` / ``num_fake`` clips are read from each iterable (it may be a lazy
    generator: it is not advanced past that). Real features are cached in ``cache_dir`` per dataset +
    protocol + network; with a cache hit ``real_clips`` is not touched and may be ``None``.
    On several processes (``shard``) each iterable holds only this process's block of clips
    (``shard.indices(protocol.num_real)`` / ``num_fake``); every process returns the same values, and
    the first process writes the cache.
    Returns {metric: {"value": float[, "std": float], "protocol": flat dict}}.
    """
    shard = shard or Shard()
    metrics = tuple(dict.fromkeys(metrics))
    weights = check_weights_available(metrics, i3d_path, inception_path)  # fails before any sampling
    check_protocol_feasible(metrics, protocol)
    device = torch.device(device)
    nets = {net: _EXTRACTORS[net](w).to(device) for net, w in weights.items()}
    protocols = {}
    for m in metrics:
        net = nets[METRIC_FEATURE[m][0]]
        protocols[m] = protocol.for_metric(m, net.network, net.sha256, net.resize)

    real_keys = _needed_features(metrics, real_side=True)
    real_protocol = {METRIC_FEATURE[m][0]: protocols[m] for m in metrics if m != "is"}  # same real_fields()
    real: dict[str, dict[str, np.ndarray]] = {}
    missing: dict[str, Protocol] = {}
    for net, p in real_protocol.items():
        cached = load_features(cache_path(cache_dir, p)) if cache_dir else None
        if cached is not None and real_keys[net] <= cached.keys():
            real[net] = cached
        else:
            missing[net] = p
    if missing:
        if real_clips is None:
            raise ValueError(
                f"real_clips is None and no cached real features for {sorted(missing)} in {cache_dir}"
            )
        todo = {net: nets[net] for net in missing}
        local = len(shard.indices(protocol.num_real))
        own = extract_features(real_clips, local, todo, real_keys, protocol, device, batch_size)
        real |= _gathered(own, shard, protocol.num_real)
        if cache_dir and shard.rank == 0:
            for net, p in missing.items():
                save_features(cache_path(cache_dir, p), real[net], p)

    fake_keys = _needed_features(metrics, real_side=False)
    local = len(shard.indices(protocol.num_fake))
    own = extract_features(fake_clips, local, nets, fake_keys, protocol, device, batch_size)
    fake = _gathered(own, shard, protocol.num_fake)

    results: dict[str, dict[str, Any]] = {}
    for m in metrics:
        net, key = METRIC_FEATURE[m]
        p = protocols[m]
        if m in ("fvd", "fid"):
            res = {"value": frechet_distance_from_features(real[net][key], fake[net][key])}
        elif m in ("kvd", "kid"):
            mean, std = kernel_distance(real[net][key], fake[net][key], p.kid_subset_size, p.kid_subsets)
            res = {"value": mean, "std": std}
        else:
            mean, std = inception_score(fake[net][key], p.is_splits)
            res = {"value": mean, "std": std}
        results[m] = res | {"protocol": p.to_dict()}
    return results


def _gathered(
    features: dict[str, dict[str, np.ndarray]], shard: Shard, total: int
) -> dict[str, dict[str, np.ndarray]]:
    return {net: {k: shard.gather(v, total) for k, v in d.items()} for net, d in features.items()}


def metrics_row(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Flat columns for metrics.csv: ``<m>``, ``<m>_std`` where defined, ``<m>_protocol`` (protocol id)."""
    row: dict[str, Any] = {}
    for m, res in results.items():
        row[m] = res["value"]
        if "std" in res:
            row[f"{m}_std"] = res["std"]
        row[f"{m}_protocol"] = Protocol.from_dict(res["protocol"]).id
    return row
