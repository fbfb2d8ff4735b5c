"""The evaluation protocol: everything that changes a metric's value, stored with every value.

FVD and FID numbers are only comparable when they were computed the same way (network and weights,
number of clips, clip length and frame stride, resolution, resize, real split, sampler, steps,
guidance). A :class:`Protocol` records all of it; ``to_dict`` gives flat columns for ``metrics.csv`` and
``result.json``; ``id`` is a short stable hash of those columns; :func:`check_same_protocol` refuses to
compare or aggregate values whose protocols differ. Torch-free, so tables can be checked anywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from lit_vdit.io import fingerprint

_KID_FIELDS = ("kid_subset_size", "kid_subsets")
_REAL_FIELDS = (
    "dataset",
    "dataset_id",
    "real_split",
    "num_real",
    "frames",
    "stride",
    "resolution",
    "network",
    "weights_sha256",
    "resize",
)


_TYPES = {"str": str, "int": int, "float": float}


class ProtocolMismatchError(ValueError):
    """Metric values computed under different protocols were about to be compared."""


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How a metric value was computed. Fields left at defaults are part of the protocol too.

    ``dataset``: the source's name; ``dataset_id``: a hash of its identity (root, split files, clip
    list: :meth:`lit_vdit.data.VideoDataModule.identity`), so two datasets with equal settings never
    share a protocol id or cached real features.
    ``frames`` and ``stride``: clip length fed to the metric and the frame stride the clips were sampled
    with; ``resolution``: clip height x width before the network's own resize ("64x64").
    ``prompts``: a hash of the prompts a text-conditional model's samples were generated from ("" for
    class labels in turn; then left out of :meth:`to_dict`, so class-conditional protocols keep the ids
    they had before text conditioning existed).
    ``metric``, ``network``, ``weights_sha256`` and ``resize`` are filled in per metric by
    :func:`lit_vdit.metrics.compute_video_metrics`.
    """

    dataset: str
    dataset_id: str = ""
    real_split: str = "train"
    num_real: int = 2048
    num_fake: int = 2048
    frames: int = 16
    stride: int = 1
    resolution: str = "64x64"
    sampler: str = ""
    steps: int = 0
    guidance: float = 1.0
    prompts: str = ""
    kid_subset_size: int = 1000
    kid_subsets: int = 100
    is_splits: int = 10
    metric: str = ""
    network: str = ""
    weights_sha256: str = ""
    resize: str = ""

    def __post_init__(self):
        res = self.resolution
        if isinstance(res, int):
            res = f"{res}x{res}"
        elif not isinstance(res, str):
            res = "x".join(str(int(s)) for s in res)
        object.__setattr__(self, "resolution", res)
        for f in dataclasses.fields(self):  # canonical types, so that ids survive CSV and JSON round trips
            object.__setattr__(self, f.name, _TYPES[f.type](getattr(self, f.name)))
        for name in ("num_fake", "frames", "stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"Protocol.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_real < 0:
            raise ValueError(f"Protocol.num_real must be >= 0, got {self.num_real}")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) from ``resolution``."""
        h, w = self.resolution.split("x")
        return int(h), int(w)

    def to_dict(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        if not fields["prompts"]:
            del fields["prompts"]
        return fields

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Protocol:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def id(self) -> str:
        """12-hex-digit hash of every field: equal ids <=> same protocol."""
        return fingerprint(self.to_dict(), 12)

    def for_metric(self, metric: str, network: str, weights_sha256: str, resize: str) -> Protocol:
        """This protocol specialised to one metric; options of other metrics are blanked."""
        blank = {} if metric in ("kid", "kvd") else {f: 0 for f in _KID_FIELDS}
        if metric == "is":  # IS looks at generated samples only
            blank["num_real"] = 0
        else:
            blank["is_splits"] = 0
        return dataclasses.replace(
            self, metric=metric, network=network, weights_sha256=weights_sha256, resize=resize, **blank
        )

    def real_fields(self) -> dict[str, Any]:
        """The fields that determine the real-data features."""
        return {k: getattr(self, k) for k in _REAL_FIELDS}

    def real_key(self) -> str:
        """Hash of :meth:`real_fields`: the cache key of real-data features."""
        return fingerprint(self.real_fields(), 12)


def check_same_protocol(protocols: Iterable[Protocol | Mapping[str, Any]]) -> Protocol:
    """Return the common protocol, or raise :class:`ProtocolMismatchError` naming the fields that differ."""
    ps = [p if isinstance(p, Protocol) else Protocol.from_dict(p) for p in protocols]
    if not ps:
        raise ValueError("no protocols given")
    first = ps[0].to_dict()
    for p in ps[1:]:
        other = p.to_dict()
        diff = {k: (other.get(k), first.get(k)) for k in {**first, **other} if other.get(k) != first.get(k)}
        if diff:
            fields = ", ".join(f"{k}: {b!r} vs {a!r}" for k, (a, b) in diff.items())
            raise ProtocolMismatchError(
                f"metric values come from different protocols ({fields}); refusing to mix them"
            )
    return ps[0]
