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


def test_sincos_3d_single_frame_spatial_part_is_2d_embedding():
    emb = sincos_3d(64, (1, 4, 4))
    assert emb.shape == (16, 64)
    dim_t = 64 - 48
    assert torch.allclose(emb[:, : dim_t // 2], torch.zeros(16, dim_t // 2))  # sin(0)
    assert torch.allclose(emb[:, dim_t // 2 : dim_t], torch.ones(16, dim_t // 2))  # cos(0)


def test_bad_shapes_name_the_setting():
    with pytest.raises(ValueError, match="patch size .* does not divide the input height"):
        VideoDiT((3, 4, 30, 32), preset="T1", patch_size=(1, 4, 4))
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        VideoDiT((3, 4, 32, 32), preset="T1", num_heads=5)
    with pytest.raises(ValueError, match="unknown DiT preset"):
        VideoDiT((3, 4, 32, 32), preset="XXL/2")
