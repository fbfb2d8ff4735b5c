import numpy as np
import pytest
import torch

from lit_vdit.models.dit import LADDER_SIZES, VideoDiT
from lit_vdit.models.layers import sincos_3d

REFERENCE_PARAMS = {"S/2": 32_963_360, "B/2": 130_512_416, "L/2": 458_102_816, "XL/2": 675_129_632}


@pytest.mark.parametrize("preset", sorted(REFERENCE_PARAMS))
def test_dit_image_presets_have_reference_parameter_counts(preset):
    with torch.device("meta"):
        model = VideoDiT((4, 1, 32, 32), num_classes=1000, preset=preset, learn_sigma=True)
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMS[preset]


def test_ladder_spans_10k_to_20m_parameters_in_x2_to_x3_steps():
    counts = []
    for name in LADDER_SIZES:
        with torch.device("meta"):
            model = VideoDiT((3, 8, 32, 32), preset=name, patch_size=(2, 4, 4))
        counts.append(sum(p.numel() for p in model.parameters()) - model.embedding_parameters())
    assert 1e4 <= counts[0] <= 2e4 and 1.5e7 <= counts[-1] <= 3e7
    ratios = [b / a for a, b in zip(counts, counts[1:], strict=False)]
    assert all(1.8 <= r <= 3.0 for r in ratios), ratios


@pytest.mark.parametrize("attention", ["full", "interleaved"])
@pytest.mark.parametrize("position", ["sincos", "rope"])
def test_forward_shapes_and_learned_sigma(attention, position):
    model = VideoDiT(
        (3, 4, 8, 8),
        num_classes=5,
        preset="T1",
        patch_size=(2, 2, 2),
        learn_sigma=True,
        attention=attention,
        position=position,
        qk_norm=True,
    )
    x = torch.randn(2, 3, 4, 8, 8)
    out = model(x, torch.tensor([3.0, 500.0]), torch.tensor([0, 4]))
    assert out.shape == (2, 6, 4, 8, 8)


def test_adaln_zero_output_is_zero_at_init_and_unconditional_mode():
    model = VideoDiT((3, 2, 8, 8), num_classes=0, preset="T0")
    out = model(torch.randn(1, 3, 2, 8, 8), torch.tensor([10.0]))
    assert torch.count_nonzero(out) == 0
    assert model.null_class is None


def test_label_dropout_uses_null_class_row():
    model = VideoDiT((3, 2, 8, 8), num_classes=7, preset="T0", class_dropout_prob=1.0).train()
    emb = model.y_embedder(torch.tensor([1, 2, 3]), train=True)
    null = model.y_embedder.embedding_table.weight[model.null_class]
    assert torch.equal(emb, null.expand(3, -1))


def test_interleaved_spatial_block_does_not_mix_frames():
    torch.manual_seed(0)
    model = VideoDiT((3, 4, 8, 8), preset="T1", patch_size=(1, 2, 2), attention="interleaved", depth=1).eval()
    for p in model.parameters():  # undo adaLN-Zero so the block is active
        torch.nn.init.normal_(p, std=0.05) if p.requires_grad else None
    x = torch.randn(1, 3, 4, 8, 8)
    y = x.clone()
    y[:, :, 3] += 1.0  # change the last frame only
    a, b = model(x, torch.tensor([5.0])), model(y, torch.tensor([5.0]))
    assert torch.allclose(a[:, :, :3], b[:, :, :3], atol=1e-6)
    assert not torch.allclose(a[:, :, 3], b[:, :, 3])


def dit_2d_sincos(dim: int, grid_size: int) -> np.ndarray:
    """facebookresearch/DiT's get_2d_sincos_pos_embed, written out here in numpy."""
    grid = np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32))
    grid = np.stack(grid, axis=0).reshape(2, 1, grid_size, grid_size)

    def one_axis(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one_axis(dim // 2, grid[0]), one_axis(dim // 2, grid[1])], axis=1)


@pytest.mark.parametrize("dim, size", [(384, 16), (64, 4), (1152, 8)])
def test_sincos_3d_of_one_frame_is_dits_2d_table(dim, size):
    expected = torch.from_numpy(dit_2d_sincos(dim, size)).float()  # DiT stores it as float32
    assert torch.equal(sincos_3d(dim, (1, size, size)), expected)


def test_sincos_3d_keeps_the_2d_table_in_every_frame_plus_a_temporal_table():
    dim, (t, h, w) = 64, (5, 4, 3)
    emb = sincos_3d(dim, (t, h, w)).reshape(t, h * w, dim)
    spatial = emb[0]
    assert torch.equal(spatial, sincos_3d(dim, (1, h, w)))
    temporal = emb - spatial  # the same offset for every token of a frame, distinct across frames
    assert torch.allclose(temporal, temporal[:, :1].expand_as(temporal), atol=1e-6)
    assert torch.cdist(temporal[:, 0], temporal[:, 0]).add(torch.eye(t)).min() > 0.5
    # non-square grids: first half of the channels varies along w only, second half along h only
    grid = sincos_3d(dim, (1, h, w)).reshape(h, w, dim)
    assert torch.equal(grid[:, :, : dim // 2], grid[:1, :, : dim // 2].expand(h, w, dim // 2))
    assert torch.equal(grid[:, :, dim // 2 :], grid[:, :1, dim // 2 :].expand(h, w, dim // 2))


def test_bad_shapes_name_the_setting():
    with pytest.raises(ValueError, match="patch size .* does not divide the input height"):
        VideoDiT((3, 4, 30, 32), preset="T1", patch_size=(1, 4, 4))
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        VideoDiT((3, 4, 32, 32), preset="T1", num_heads=5)
    with pytest.raises(ValueError, match="unknown DiT preset"):
        VideoDiT((3, 4, 32, 32), preset="XXL/2")


def test_the_denoisers_implement_the_interface_and_others_are_refused_by_name():
    from torch import nn

    from lit_vdit.models import Denoiser
    from lit_vdit.models.unet import VideoUNet
    from lit_vdit.modules import DiffusionModule

    assert isinstance(VideoDiT((3, 2, 8, 8), preset="T0"), Denoiser)
    assert isinstance(VideoUNet((3, 2, 8, 8), num_classes=4, preset="U0"), Denoiser)

    class Plain(nn.Module):
        learn_sigma = False

        def forward(self, x, t, y=None):
            return x

    missing = r"Plain does not implement .*Denoiser \(missing \['num_tokens', 'null_class'"
    with pytest.raises(TypeError, match=missing):
        DiffusionModule(lambda shape, classes: Plain(), clip_shape=(3, 2, 8, 8), num_classes=0)
