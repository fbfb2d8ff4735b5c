import pytest
import torch

from lit_vdit.diffusion import GaussianDiffusion, RectifiedFlow
from lit_vdit.flops import count_flops, denoiser_costs
from lit_vdit.models.dit import VideoDiT

# DiT paper, Table 4: forward Gflops (multiply-adds) of the ImageNet-256 models.
DIT_GFLOPS = {"S/2": 6.06, "B/2": 23.01, "L/2": 80.71, "XL/2": 118.64}


@pytest.mark.parametrize("preset", sorted(DIT_GFLOPS))
def test_forward_flops_match_dit_paper(preset):
    costs = denoiser_costs(
        lambda: VideoDiT((4, 1, 32, 32), 1000, preset, learn_sigma=True),
        GaussianDiffusion(learn_sigma=True),
        (4, 1, 32, 32),
        1000,
    )
    macs = costs["flops_forward"] / 2
    assert macs == pytest.approx(DIT_GFLOPS[preset] * 1e9, rel=0.01)
    assert costs["flops_train_step"] == pytest.approx(3 * costs["flops_forward"], rel=0.01)


def test_cpu_attention_kernel_is_counted():
    q = torch.randn(2, 4, 64, 32, requires_grad=True)
    fwd = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert fwd == 2 * (2 * 2 * 4 * 64 * 64 * 32)  # QK^T and AV, multiply-add = 2


def test_meta_count_equals_count_on_a_real_cpu_run():
    def build():
        return VideoDiT((3, 4, 16, 16), 4, "T2", patch_size=(1, 2, 2))

    objective = RectifiedFlow()
    meta = denoiser_costs(build, objective, (3, 4, 16, 16), 4)
    model = build()
    x, y = torch.randn(1, 3, 4, 16, 16), torch.tensor([1])
    real = count_flops(lambda: model(x, torch.tensor([300.0]), y))
    assert real == meta["flops_forward"]
