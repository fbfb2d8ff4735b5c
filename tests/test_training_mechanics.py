"""DiffusionModule mechanics under the Trainer: activation checkpointing under every strategy and a
float32 EMA under bf16-true."""

from functools import partial
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy

from lit_vdit.callbacks import ModelCheckpoint
from lit_vdit.data import SyntheticDataModule
from lit_vdit.models.dit import VideoDiT
from lit_vdit.modules import DiffusionModule


def saved_activation_bytes(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes autograd keeps for backward during one forward (the activation memory), then backward."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(x, t, y)
    out.square().mean().backward()
    return total


@pytest.mark.parametrize(("strategy", "devices"), [("auto", 1), ("ddp", 2)])
def test_activation_checkpointing_recomputes_blocks_under_every_strategy(strategy, devices):
    x, t, y = torch.randn(2, 3, 4, 16, 16), torch.tensor([10.0, 500.0]), torch.tensor([1, 2])
    measured = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        module = DiffusionModule(
            partial(VideoDiT, preset="T3", patch_size=(1, 2, 2)),
            clip_shape=(3, 4, 16, 16),
            num_classes=4,
            activation_checkpointing=checkpointing,
        )
        trained = [p for p in module.denoiser.parameters() if p.requires_grad]
        for p in trained:  # leave adaLN-Zero so that every block is active
            torch.nn.init.normal_(p, std=0.05)
        module.trainer = L.Trainer(accelerator="cpu", strategy=strategy, devices=devices, logger=False)
        module.configure_model()  # what fit does, for this strategy: the one place parallelism is applied
        memory = saved_activation_bytes(module.denoiser, x, t, y)
        measured[checkpointing] = memory, [p.grad.clone() for p in trained]
    (plain, plain_grads), (recomputed, grads) = measured[False], measured[True]
    assert recomputed < 0.25 * plain, (recomputed, plain)
    for a, b in zip(grads, plain_grads, strict=True):  # recomputation changes nothing but memory
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_activation_checkpointing_under_fsdp1_points_to_its_policy():
    module = DiffusionModule(
        partial(VideoDiT, preset="T0", patch_size=(1, 4, 4)),
        clip_shape=(3, 4, 16, 16),
        num_classes=4,
        activation_checkpointing=True,
    )
    # FSDPStrategy needs CUDA to run, not to be configured
    module._trainer = SimpleNamespace(datamodule=None, strategy=FSDPStrategy(), world_size=1)
    with pytest.raises(ValueError, match="activation_checkpointing_policy"):
        module.configure_model()


class RawWeights(L.Callback):
    """The raw weights (as float32) at the start and after every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[list[torch.Tensor]] = []

    def weights(self, pl_module) -> list[torch.Tensor]:
        return [p.detach().float().clone() for p in pl_module.denoiser.parameters()]

    def on_train_start(self, trainer, pl_module) -> None:
        self.steps = [self.weights(pl_module)]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append(self.weights(pl_module))


def bf16_run(out, max_steps: int, ckpt_path: str | None = None) -> tuple[DiffusionModule, RawWeights]:
    L.seed_everything(0)
    module = DiffusionModule(
        partial(VideoDiT, preset="T0", patch_size=(1, 4, 4)), lr=3e-3, ema_decay=0.999, val_timesteps=2
    )
    data = SyntheticDataModule(num_clips=16, val_clips=4, frames=4, height=16, width=16, batch_size=4)
    raw = RawWeights()
    trainer = L.Trainer(
        accelerator="cpu",
        precision="bf16-true",
        max_steps=max_steps,
        callbacks=[raw, ModelCheckpoint(dirpath=out, save_last=True, every_n_train_steps=3)],
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, raw


def test_bf16_true_keeps_and_updates_the_ema_in_float32(tmp_path):
    module, raw = bf16_run(tmp_path / "a", 6)
    assert {p.dtype for p in module.denoiser.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in module.ema.parameters()} == {torch.float32}
    # The EMA is the float32 recurrence over the bf16 raw weights of every step.
    expected = raw.steps[0]
    for weights in raw.steps[1:]:
        expected = [e + 0.001 * (w - e) for e, w in zip(expected, weights, strict=True)]
    ema = list(module.ema.parameters())
    for e, want in zip(ema, expected, strict=True):
        assert torch.allclose(e, want, rtol=1e-5, atol=1e-7)
    assert any(not torch.equal(e, start) for e, start in zip(ema, raw.steps[0], strict=True))
    saved = torch.load(tmp_path / "a" / "last.ckpt", weights_only=True)["state_dict"]
    assert {v.dtype for k, v in saved.items() if k.startswith("ema.")} == {torch.float32}
    # A run resumed at step 3 (its float32 EMA loaded before Lightning casts the module) ends equal.
    bf16_run(tmp_path / "b", 3)
    resumed, _ = bf16_run(tmp_path / "b", 6, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    for a, b in zip(resumed.ema.parameters(), ema, strict=True):
        assert a.dtype == torch.float32 and torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def compiled_run(compile, buckets=None, steps: int = 4) -> tuple[DiffusionModule, list[float]]:
    L.seed_everything(0)
    module = DiffusionModule(
        partial(VideoDiT, preset="T0", patch_size=(1, 4, 4)),
        lr=3e-3,
        ema_decay=0.9,
        val_timesteps=2,
        activation_checkpointing=True,
        compile=compile,
    )
    data = SyntheticDataModule(
        num_clips=16, val_clips=4, frames=4, height=16, width=16, batch_size=4, buckets=buckets
    )
    losses = []

    class Losses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, callbacks=[Losses()], logger=False, limit_val_batches=0,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(module, data)
    return module, losses


@pytest.mark.parametrize("backend", ["aot_eager", True])  # True: inductor, C++ code compiled for the CPU
def test_compiled_blocks_train_as_eager_with_checkpointing_and_ema(backend):
    eager, eager_losses = compiled_run(False)
    compiled, losses = compiled_run(backend)
    assert all(block._compiled_call_impl is not None for block in compiled.denoiser.blocks)
    assert all(block._compiled_call_impl is None for block in compiled.ema.module.blocks)  # evaluated eager
    assert losses == pytest.approx(eager_losses, rel=1e-5)
    for a, b in zip(compiled.ema.parameters(), eager.ema.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_compiled_blocks_recompile_a_bounded_number_of_times_over_buckets():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    shapes = [{"frames": f, "height": 16, "width": 16, "batch_size": 2} for f in (1, 2, 3, 4)]
    compiled_run("aot_eager", buckets=shapes, steps=12)
    # one graph for the first shape, one shape-generic graph after the first recompile: not one per shape
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
