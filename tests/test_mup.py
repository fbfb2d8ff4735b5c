"""muP option of the video DiT (lit_vdit.models.mup): the standard model at the base width, a flat
coordinate check, per-group learning rates, and the DiT's features under it."""

from functools import partial

import lightning as L
import pytest
import torch

from lit_vdit.diffusion import RectifiedFlow, denoiser_fn
from lit_vdit.models.dit import VideoDiT
from lit_vdit.models.layers import Attention
from lit_vdit.models.mup import MuP, parameter_groups
from lit_vdit.models.text import SmallTextEncoder, TextEmbedding
from lit_vdit.modules import DiffusionModule

SHAPE = (3, 4, 16, 16)
SMALL = {"input_shape": SHAPE, "num_classes": 4, "depth": 2, "patch_size": (1, 4, 4)}


def randomise_(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Every parameter drawn afresh (adaLN-Zero makes an initialised DiT's output zero); eval mode (no
    label dropout)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=generator))
    return model.eval()


def inputs(text_dim: int | None = None) -> tuple:
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(2, *SHAPE, generator=g), torch.tensor([10.0, 700.0]), torch.tensor([1, 3])
    if text_dim is None:
        return x, t, y
    mask = torch.tensor([[True] * 5 + [False] * 3, [True] * 8])
    return x, t, None, TextEmbedding(torch.randn(2, 8, text_dim, generator=g), mask)


@pytest.mark.parametrize("features", [{}, {"attention": "interleaved", "position": "rope", "qk_norm": True}])
def test_mup_at_the_base_width_is_the_standard_model(features):
    kwargs = {**SMALL, "hidden_size": 32, "num_heads": 2, **features}
    torch.manual_seed(0)
    standard = VideoDiT(**kwargs)
    torch.manual_seed(0)
    mup = VideoDiT(**kwargs, mup_base_width=32)
    for (name, p), q in zip(standard.state_dict().items(), mup.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert mup.learning_rate_scales() == {} == standard.learning_rate_scales()
    x, t, y = inputs()
    assert torch.equal(randomise_(standard)(x, t, y), randomise_(mup)(x, t, y))


def test_mup_rescales_the_init_from_the_base_width():
    torch.manual_seed(0)
    model = VideoDiT(**SMALL, hidden_size=256, num_heads=16, mup_base_width=32)
    torch.manual_seed(0)
    standard = VideoDiT(**SMALL, hidden_size=256, num_heads=16)
    patch = 3 * 4 * 4  # input weight: Xavier at the base width, not at 256
    assert model.x_embedder.proj.weight.std().item() == pytest.approx((2 / (patch + 32)) ** 0.5, rel=0.05)
    assert torch.equal(model.blocks[0].attn.qkv.weight, standard.blocks[0].attn.qkv.weight)  # hidden: Xavier
    assert model.t_embedder.mlp[2].weight.std().item() == pytest.approx(0.02 / 8**0.5, rel=0.05)  # 0.02 at 32
    assert torch.equal(model.t_embedder.mlp[0].weight, standard.t_embedder.mlp[0].weight)  # input, std 0.02
    assert torch.count_nonzero(model.final_layer.linear.weight) == 0  # zeros stay zero
    assert model.final_layer.output_multiplier == 1 / 8


def coordinate_change(width: int, mup: bool, steps: int = 4, lr: float = 1e-2) -> tuple[float, float]:
    """Mean |change| of the output and of the last block's tokens after ``steps`` AdamW steps of the
    rectified-flow loss on fixed data, for a depth-2 DiT of ``width`` (head dim 16)."""
    torch.manual_seed(0)
    model = VideoDiT(**SMALL, hidden_size=width, num_heads=width // 16, mup_base_width=32 if mup else None)
    g = torch.Generator().manual_seed(123)
    x0, noise = torch.randn(8, *SHAPE, generator=g), torch.randn(8, *SHAPE, generator=g)
    t, y, objective, hidden = torch.rand(8, generator=g), torch.arange(8) % 4, RectifiedFlow(), {}
    model.blocks[-1].register_forward_hook(lambda module, args, out: hidden.update(h=out[0].detach()))

    def probe() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return model(objective.add_noise(x0, noise, t), objective.model_time(t), y), hidden["h"]

    out0, h0 = probe()
    groups = parameter_groups(model.named_parameters(), lr, 0.0, model.learning_rate_scales())
    optimizer = torch.optim.AdamW(groups, lr=lr, fused=True)
    for _ in range(steps):
        optimizer.zero_grad()
        objective.loss(denoiser_fn(model, y), x0, noise, t).mean().backward()
        optimizer.step()
    out, h = probe()
    return (out - out0).abs().mean().item(), (h - h0).abs().mean().item()


def test_coordinate_check_grows_with_width_under_sp_and_stays_flat_under_mup():
    widths = (32, 64, 128, 256)
    ratios = {}
    for mup in (False, True):
        changes = [coordinate_change(w, mup) for w in widths]
        ratios[mup] = [changes[-1][i] / changes[0][i] for i in range(2)]  # widest / narrowest
    # Measured: SP output x5.3, last block x16; muP x0.82, x0.95.
    assert ratios[False][0] > 2.5 and ratios[False][1] > 5, ratios
    assert all(0.6 < r < 1.4 for r in ratios[True]), ratios


def attached(module: DiffusionModule) -> DiffusionModule:
    module.trainer = L.Trainer(max_steps=10, logger=False, enable_checkpointing=False)
    return module


def test_configure_optimizers_trains_hidden_weights_at_lr_over_m_and_the_rest_at_lr():
    encoder = SmallTextEncoder(dim=16, depth=1, max_length=8)
    dit = partial(VideoDiT, hidden_size=64, depth=2, num_heads=4, patch_size=(1, 4, 4), mup_base_width=32)
    module = attached(DiffusionModule(dit, text_encoder=encoder, clip_shape=SHAPE, num_classes=4, lr=1e-3,
                                      weight_decay=0.1, lr_schedule="cosine", warmup_steps=4))  # fmt: skip
    config = module.configure_optimizers()
    optimizer = config["optimizer"]
    groups = optimizer.param_groups  # the schedule's initial_lr: each group's rate before warm-up
    lr_of = {id(p): (g["initial_lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    denoiser = module.denoiser
    assert lr_of[id(denoiser.blocks[0].attn.qkv.weight)] == (5e-4, 0.2)  # lr / m, lr x decay kept
    assert lr_of[id(denoiser.blocks[1].adaLN_modulation[1].weight)] == (5e-4, 0.2)
    assert lr_of[id(denoiser.x_embedder.proj.weight)] == (1e-3, 0.1)  # input weight
    assert lr_of[id(denoiser.final_layer.linear.weight)] == (1e-3, 0.1)  # output weight (x 1/m in forward)
    assert lr_of[id(denoiser.blocks[0].attn.qkv.bias)] == (1e-3, 0.0)
    assert all(lr_of[id(p)][0] == 1e-3 for p in encoder.parameters())  # the text encoder: not widened
    assert len(lr_of) == sum(p.requires_grad for p in [*denoiser.parameters(), *encoder.parameters()])
    assert [g["lr"] for g in groups] == pytest.approx([0.25 * g["initial_lr"] for g in groups])
    optimizer.step()  # (no gradients: nothing moves)
    config["lr_scheduler"]["scheduler"].step()  # warm-up: the schedule multiplies each group's own rate
    assert [g["lr"] for g in groups] == pytest.approx([0.5 * g["initial_lr"] for g in groups])
    assert [g["initial_lr"] for g in groups] == [1e-3, 1e-3, 5e-4] and all(g["params"] for g in groups)


def test_standard_parametrisation_keeps_the_two_groups_of_before():
    module = attached(DiffusionModule(partial(VideoDiT, preset="T0", patch_size=(1, 4, 4)), clip_shape=SHAPE,
                                      num_classes=4, lr=2e-3, weight_decay=0.05))  # fmt: skip
    groups = module.configure_optimizers()["optimizer"].param_groups
    params = [p for p in module.denoiser.parameters() if p.requires_grad]
    assert len(groups) == 2
    assert groups[0]["params"] == [p for p in params if p.ndim >= 2] and groups[0]["weight_decay"] == 0.05
    assert groups[1]["params"] == [p for p in params if p.ndim < 2] and groups[1]["weight_decay"] == 0.0
    assert groups[0]["lr"] == groups[1]["lr"] == 2e-3


def test_parameter_groups_refuse_multipliers_of_unknown_parameters():
    with pytest.raises(ValueError, match="lacks"):
        parameter_groups(VideoDiT(**SMALL, preset="T0").named_parameters(), 1e-3, 0.0, {"nope.weight": 0.5})


def test_base_heads_keep_the_head_dim_or_are_given():
    assert MuP.at(128, 8, 32).base_settings()["num_heads"] == 2 and MuP.at(128, 8, 32).attention_scale is None
    fixed_heads = MuP.at(128, 4, 32, base_heads=4)  # head dim 32, base's 8: attention 1 / d anchored at 8
    assert fixed_heads.attention_scale == pytest.approx(8**0.5 / 32)
    with pytest.raises(ValueError, match="mup_base_heads"):
        MuP.at(96, 2, 32)  # head dim 48 does not divide 32


def test_attention_scale_multiplies_the_scores():
    torch.manual_seed(0)
    attention, x = Attention(32, 2, scale=0.05), torch.randn(2, 6, 32)
    q, k, v = attention.qkv(x).reshape(2, 6, 3, 2, 16).permute(2, 0, 3, 1, 4)
    manual = torch.softmax(q @ k.transpose(-1, -2) * 0.05, -1) @ v
    assert torch.allclose(attention(x), attention.proj(manual.transpose(1, 2).reshape(2, 6, 32)), atol=1e-6)


@pytest.mark.parametrize(
    "features",
    [
        {"attention": "interleaved", "position": "rope"},
        {"text_dim": 16, "text_conditioning": "cross", "qk_norm": True},
        {"text_dim": 16, "text_conditioning": "joint", "position": "rope"},
        {"text_dim": 16, "text_conditioning": "pooled"},
        {"num_heads": 2, "mup_base_heads": 2},  # head dim grows: attention scaled 1 / d
    ],
)
def test_mup_runs_with_the_dit_features_and_changes_only_wider_models(features):
    text_dim = features.get("text_dim")
    kwargs = {**SMALL, "hidden_size": 64, "num_heads": 4, "num_classes": 0 if text_dim else 4, **features}
    model = randomise_(VideoDiT(**kwargs, mup_base_width=32))
    standard = randomise_(VideoDiT(**{k: v for k, v in kwargs.items() if k != "mup_base_heads"}))
    out = model(*inputs(text_dim))
    assert out.shape == (2, *SHAPE) and torch.isfinite(out).all()
    # Same weights: muP's forward is the standard one's with the output x 1/m (and attention 1/d).
    expected = standard(*inputs(text_dim)) / 2
    if "mup_base_heads" in features:
        assert not torch.allclose(out, expected, atol=1e-5)
    else:
        assert torch.allclose(out, expected, atol=1e-5)
    assert model.learning_rate_scales() and all(s == 0.5 for s in model.learning_rate_scales().values())
