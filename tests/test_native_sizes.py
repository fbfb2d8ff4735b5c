"""One denoiser, any clip shape: position tables per grid, shape rules, and image-DiT initialisation."""

import json
from functools import partial

import pytest
import torch

from lit_vdit.cli import info_main
from lit_vdit.diffusion import RectifiedFlow
from lit_vdit.models.dit import VideoDiT
from lit_vdit.models.image_init import inflate_image_dit
from lit_vdit.models.layers import sincos_3d
from lit_vdit.models.text import TextEmbedding
from lit_vdit.models.unet import VideoUNet
from lit_vdit.modules.diffusion_module import DiffusionModule


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Nonzero weights everywhere (adaLN-Zero starts every branch at 0, which would hide differences)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model.eval()


def portable(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k != "pos_embed"}  # DiT's fixed table, sized to the build


@pytest.mark.parametrize("position", ["sincos", "rope"])
@pytest.mark.parametrize("attention", ["full", "interleaved"])
def test_dit_output_on_a_shape_does_not_depend_on_the_shape_it_was_built_for(position, attention):
    kwargs = dict(num_classes=3, preset="T1", patch_size=(1, 2, 2), position=position, attention=attention)
    small = randomised(VideoDiT((4, 2, 8, 6), **kwargs))
    large = VideoDiT((4, 4, 16, 16), **kwargs).eval()
    large.load_state_dict(portable(small.state_dict()), strict=False)
    x, t, y = torch.randn(2, 4, 2, 8, 6), torch.tensor([3.0, 700.0]), torch.tensor([0, 2])
    with torch.no_grad():
        assert torch.allclose(large(x, t, y), small(x, t, y), atol=1e-6)
        for shape in [(1, 16, 16), (4, 8, 12), (3, 2, 4)]:  # images, other aspect ratios and durations
            clip = torch.randn(2, 4, *shape)
            assert large(clip, t, y).shape == clip.shape


def test_position_table_of_any_grid_is_the_3d_sincos_table_and_the_built_grid_is_dits():
    model = VideoDiT((4, 2, 8, 8), preset="T1", patch_size=(1, 2, 2))
    like = torch.zeros(1)
    assert model.position_table((2, 4, 4), like) is model.pos_embed
    assert torch.equal(model.position_table((3, 2, 5), like)[0], sincos_3d(24, (3, 2, 5)))


def test_shapes_a_model_cannot_take_are_refused_naming_the_rule():
    model = VideoDiT((4, 2, 8, 8), preset="T0", patch_size=(1, 2, 2), max_tokens=64)
    t = torch.zeros(1)
    with pytest.raises(ValueError, match=r"divisible by its patch \(1, 2, 2\).*got \(4, 2, 7, 8\)"):
        model(torch.randn(1, 4, 2, 7, 8), t)
    with pytest.raises(ValueError, match=r"max_tokens=64.*\(80 tokens\)"):
        model(torch.randn(1, 4, 5, 8, 8), t)
    with pytest.raises(ValueError, match="C=4"):
        model(torch.randn(1, 3, 2, 8, 8), t)
    with pytest.raises(ValueError, match="max_tokens=8 is below the 32 tokens"):
        VideoDiT((4, 2, 8, 8), preset="T0", patch_size=(1, 2, 2), max_tokens=8)


def test_unet_takes_any_duration_and_size_its_downsampling_allows():
    kwargs = dict(num_classes=0, preset="U0", text_dim=8)
    small = randomised(VideoUNet((4, 2, 8, 8), **kwargs))
    large = VideoUNet((4, 4, 16, 16), **kwargs).eval()
    large.load_state_dict(small.state_dict())
    text = TextEmbedding(torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool))
    x, t = torch.randn(2, 4, 2, 8, 8), torch.tensor([3.0, 700.0])
    with torch.no_grad():
        assert torch.allclose(large(x, t, text=text), small(x, t, text=text), atol=1e-6)
        assert large(torch.randn(2, 4, 1, 8, 12), t, text=text).shape == (2, 4, 1, 8, 12)
    with pytest.raises(ValueError, match="H and W divisible by 4"):
        large(torch.randn(2, 4, 2, 8, 7), t, text=text)


def image_dit_checkpoint(tmp_path, training_format: bool = False, **overrides):
    """A facebookresearch/DiT-layout state dict (2D patch kernel, pos_embed) from an image-shaped model."""
    kwargs = dict(num_classes=5, preset="T1", patch_size=(1, 2, 2), learn_sigma=True, **overrides)
    image = randomised(VideoDiT((4, 1, 8, 8), **kwargs))
    state = image.state_dict()
    state["x_embedder.proj.weight"] = state["x_embedder.proj.weight"][:, :, 0]  # (D, C, p, p) as timm's
    path = tmp_path / "DiT-image.pt"
    torch.save({"model": state, "ema": state, "args": {}} if training_format else state, path)
    return image, path


@pytest.mark.parametrize("attention,depth,patch", [("full", 3, (2, 2, 2)), ("interleaved", 6, (1, 2, 2))])
def test_a_video_dit_from_an_image_dit_returns_its_frames_on_a_static_clip(tmp_path, attention, depth, patch):
    image, path = image_dit_checkpoint(tmp_path, training_format=attention == "full")
    video = VideoDiT(
        (4, 4, 8, 8),
        num_classes=5,
        preset="T1",
        depth=depth,
        patch_size=patch,
        learn_sigma=True,
        attention=attention,
        init_checkpoint=str(path),
    ).eval()
    frame, t, y = torch.randn(2, 4, 1, 8, 8), torch.tensor([10.0, 600.0]), torch.tensor([1, 4])
    with torch.no_grad():
        expected = image(frame, t, y)
        out = video(frame.expand(-1, -1, 4, -1, -1), t, y)  # four identical frames
        assert (out - expected).abs().max() < 1e-5
        if patch[0] == 1:
            assert torch.equal(video(frame, t, y), expected)  # an image: exactly the image model


def test_image_dit_init_inflates_the_patch_embedding_and_keeps_video_parts_fresh(tmp_path):
    _, path = image_dit_checkpoint(tmp_path)
    video = VideoDiT((4, 4, 8, 8), num_classes=5, preset="T1", patch_size=(2, 2, 2), learn_sigma=True)
    origin = inflate_image_dit(video, path)
    assert {"x_embedder.proj.weight", "final_layer.linear.weight", "final_layer.linear.bias"} <= set(
        origin["inflated"]
    )
    assert "pos_embed" in origin["new"] and "blocks.0.attn.qkv.weight" in origin["copied"]
    text_video = VideoDiT(
        (4, 4, 8, 8),
        preset="T1",
        patch_size=(1, 2, 2),
        learn_sigma=True,
        text_dim=8,
        init_checkpoint=str(path),
    )
    assert torch.count_nonzero(text_video.temporal_gate) == 0
    assert torch.count_nonzero(text_video.blocks[0].cross_attn.proj.weight) == 0  # adaLN-Zero-like start


def test_a_checkpoint_that_does_not_fit_fails_listing_every_mismatched_key(tmp_path):
    _, path = image_dit_checkpoint(tmp_path)
    with pytest.raises(
        ValueError, match=r"(?s)final_layer.linear.weight: checkpoint \(32, 24\), model \(16, 24\)"
    ):
        VideoDiT((4, 4, 8, 8), num_classes=5, preset="T1", patch_size=(1, 2, 2), init_checkpoint=str(path))
    with pytest.raises(ValueError, match=r"(?s)blocks.3.adaLN_modulation.1.weight: in the model, not in"):
        VideoDiT(
            (4, 4, 8, 8),
            num_classes=5,
            preset="T1",
            depth=4,
            patch_size=(1, 2, 2),
            learn_sigma=True,
            init_checkpoint=str(path),
        )
    foreign = tmp_path / "foreign.pt"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(ValueError, match=r"(?s)encoder.weight: in the checkpoint, not in the model"):
        VideoDiT((4, 4, 8, 8), preset="T1", learn_sigma=True, init_checkpoint=str(foreign))
    with pytest.raises(FileNotFoundError, match="local path of a facebookresearch/DiT checkpoint"):
        VideoDiT((4, 4, 8, 8), preset="T1", init_checkpoint=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="position='sincos'"):
        VideoDiT((4, 4, 8, 8), preset="T1", position="rope", init_checkpoint=str(path))


def test_a_module_with_a_size_dependent_timestep_shift_validates_and_samples():
    module = DiffusionModule(
        partial(VideoDiT, preset="T0", patch_size=(1, 2, 2), max_tokens=128),
        objective=RectifiedFlow(shift_base_size=64),  # the 3x2x8x8 clips have 128 positions: s = sqrt(2)
        clip_shape=(3, 2, 8, 8),
        num_classes=2,
        val_timesteps=2,
    )
    batch = {"video": torch.rand(2, 3, 2, 8, 8) * 2 - 1, "label": torch.tensor([0, 1])}
    assert module.validation_losses(batch, [0, 1])["ema"].shape == (2,)
    assert module.generate(torch.tensor([0, 1]), [0, 1]).shape == (2, 3, 2, 8, 8)
    assert module.objective.at_size(128).shift == pytest.approx(2**0.5)


def test_info_sweeps_tokens_per_clip_for_a_dit_and_a_unet_side_by_side(capsys):
    argv = ["--model", "configs/model/dit_demo.yaml", "--vs", "configs/model/unet_demo.yaml", "--clip-shape"]
    argv += ["3", "4", "16", "16", "--num-classes", "4", "--sweep-frames", "1", "8", "--json"]
    info_main([*argv, "--model.init_args.denoiser.init_args.patch_size", "[1, 4, 4]"])
    short, long = json.loads(capsys.readouterr().out)
    assert (short["dit_demo"]["tokens"], long["dit_demo"]["tokens"]) == (16, 128)
    assert long["dit_demo"]["attention"] > 2 * short["dit_demo"]["attention"]  # quadratic in the tokens
    assert (
        long["unet_demo"]["attention"] < 1.5 * short["unet_demo"]["attention"]
    )  # attention at low resolution
    assert long["unet_demo"]["flops"] == pytest.approx(8 * short["unet_demo"]["flops"], rel=0.1)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_classes=3, position="sincos"),
        dict(num_classes=3, position="rope"),
        dict(text_dim=8, text_conditioning="cross"),
        dict(text_dim=8, text_conditioning="pooled", temporal_gate=True),
    ],
    ids=["class-sincos", "class-rope", "text-cross", "text-pooled-gated"],
)
def test_packed_clips_give_the_outputs_and_losses_of_separate_runs(kwargs):
    model = randomised(VideoDiT((4, 4, 16, 16), preset="T1", patch_size=(1, 4, 4), **kwargs))
    if model.temporal_gate is not None:
        torch.nn.init.normal_(model.temporal_gate)
    shapes = [(4, 16, 16), (2, 8, 12), (1, 16, 16), (3, 12, 8)]
    clips = [torch.randn(4, *shape) for shape in shapes]
    targets = [torch.randn_like(clip) for clip in clips]
    t = torch.tensor([5.0, 300.0, 620.0, 990.0])
    y = torch.tensor([0, 2, 1, 2]) if model.y_embedder is not None else None
    lengths = torch.tensor([3, 1, 2, 3])
    tokens = torch.randn(4, 3, 8)
    text = TextEmbedding(tokens, torch.arange(3)[None] < lengths[:, None]) if model.caption_embedder else None
    with torch.no_grad():
        packed = model.forward_packed(clips, t, y, text)
        for i, clip in enumerate(clips):
            one = TextEmbedding(tokens[i : i + 1], text.mask[i : i + 1]) if text is not None else None
            alone = model(clip[None], t[i : i + 1], y[i : i + 1] if y is not None else None, one)[0]
            assert (packed[i] - alone).abs().max() < 1e-5
            loss_packed, loss_alone = (
                ((packed[i] - targets[i]) ** 2).mean(),
                ((alone - targets[i]) ** 2).mean(),
            )
            assert abs(loss_packed - loss_alone) < 1e-5


def test_packing_refuses_what_it_cannot_pack():
    with pytest.raises(ValueError, match="attention='full'"):
        VideoDiT((4, 2, 8, 8), preset="T0", attention="interleaved").forward_packed(
            [torch.randn(4, 2, 8, 8)], torch.ones(1)
        )
