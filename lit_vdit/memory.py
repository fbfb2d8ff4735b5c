"""Training memory you can plan with: activations measured on the meta device, the rest counted.

The activations a training step keeps for backward are the tensors autograd saves; a
``saved_tensors_hooks`` pass over the loss's forward on the meta device (no compute, no memory) sums
their storages once each (views share one) and leaves out the parameters. Attributing them to the
denoiser's blocks (``fsdp_units``) gives the activation-checkpointed figure as well: each block keeps
only its inputs, and recomputes its own activations one block at a time in backward. The states are
counted: fp32 weights, gradients, AdamW's two moments and the EMA copy, divided by the shards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

aten = torch.ops.aten

GIB = 2**30


class _FusedAttention(TorchFunctionMode):
    """SDPA as the fused kernels run it, which keep q, k, v, the output and the log-sum-exp for
    backward, not the N x N probabilities: on the meta device SDPA decomposes into its math form,
    whose saved probabilities would count memory no GPU or CPU kernel holds."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        query, key, value = args[:3]
        mask = kwargs.get("attn_mask")
        if mask is not None and mask.dtype == torch.bool:  # the kernel takes an additive mask
            mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(
                ~mask, -torch.inf
            )
        return aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, attn_mask=mask, scale=kwargs.get("scale")
        )[0]


class _Saved:
    """Storages autograd saves, by the block (unit index, or -1 outside) that saved them."""

    def __init__(self, model: nn.Module, units: list[nn.Module]) -> None:
        self.params = {p.untyped_storage()._cdata for p in model.parameters()}
        self.seen: dict[int, torch.UntypedStorage] = {}  # kept alive: their ids are not reused
        self.by_unit: dict[int, int] = {}
        self.unit_inputs = 0
        self.current = -1
        self.handles = []
        for i, unit in enumerate(units):
            self.handles.append(unit.register_forward_pre_hook(self._enter(i), with_kwargs=True))
            self.handles.append(unit.register_forward_hook(self._leave))

    def _enter(self, index: int) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            self.current = index
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            self.unit_inputs += sum(t.untyped_storage().nbytes() for t in tensors if t.requires_grad)

        return hook

    def _leave(self, *_: Any) -> None:
        self.current = -1

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in self.params and key not in self.seen:
            self.seen[key] = storage
            self.by_unit[self.current] = self.by_unit.get(self.current, 0) + storage.nbytes()
        return t


def activation_bytes(
    model: nn.Module, units: list[nn.Module], step: Callable[[], torch.Tensor]
) -> dict[str, int]:
    """Bytes saved for backward by ``step()`` (a loss on ``model``, run on the meta device): all of
    them, and what activation checkpointing of ``units`` keeps (the rest, the units' inputs, and the
    largest unit's own while it is recomputed)."""
    saved = _Saved(model, units)
    try:
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t), _FusedAttention():
            step()
    finally:
        for handle in saved.handles:
            handle.remove()
    inside = [b for unit, b in saved.by_unit.items() if unit >= 0]
    total = sum(saved.by_unit.values())
    outside = saved.by_unit.get(-1, 0)
    return {
        "activation_bytes": total,
        "activation_bytes_checkpointed": outside + saved.unit_inputs + max(inside, default=0),
    }


def step_bytes(
    costs: dict[str, Any],
    batch_per_device: int,
    *,
    shards: int = 1,
    precision: str = "32-true",
    activation_checkpointing: bool = False,
    sequence_parallel: int = 1,
) -> int:
    """What a training step holds above the weights and optimizer states: its activations (half under
    16-bit precisions) and the gradients (sharded like the weights). Eager, backward frees activations
    as it allocates gradients, so the step peaks at the larger of the two; checkpointed, the gradients
    accumulate while each block is recomputed, so both count (an upper bound). Sequence parallelism over
    ``sequence_parallel`` processes splits every activation by tokens, or by heads around attention.
    Measured on CPU by benchmarks/bench_memory.py."""
    per_sample = costs["activation_bytes_checkpointed" if activation_checkpointing else "activation_bytes"]
    activations = per_sample * batch_per_device * (0.5 if "16" in str(precision) else 1.0) / sequence_parallel
    gradients = 4 * _trained(costs) / max(shards, 1)
    return int(activations + gradients if activation_checkpointing else max(activations, gradients))


def peak_training_bytes(
    costs: dict[str, Any],
    batch_per_device: int,
    *,
    shards: int = 1,
    precision: str = "32-true",
    ema: bool = True,
    activation_checkpointing: bool = False,
    sequence_parallel: int = 1,
) -> int:
    """Estimated peak memory of one training process: the trained parameters' fp32 weights and AdamW
    moments (and the EMA copy) over ``shards``, the frozen VAE and text encoder, and the step
    (:func:`step_bytes`). Leaves out the framework's and the allocator's own (a few hundred MiB on a GPU)."""
    states = _trained(costs) * (4 + 8 + (4 if ema else 0)) // max(shards, 1)
    text = costs.get("text_encoder_params", 0)
    frozen = 4 * (costs.get("vae_params", 0) + (0 if _text_trained(costs) else text))
    step = step_bytes(costs, batch_per_device, shards=shards, precision=precision,
                      activation_checkpointing=activation_checkpointing,
                      sequence_parallel=sequence_parallel)  # fmt: skip
    return int(states + frozen + step)


def _text_trained(costs: dict[str, Any]) -> bool:
    return costs.get("text_encoder_flops_train", 0) > 0


def _trained(costs: dict[str, Any]) -> int:
    return costs["params_trainable"] + (costs.get("text_encoder_params", 0) if _text_trained(costs) else 0)


def measure_step_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Bytes ``step()`` (a training step) holds at its peak above what is resident before it, measured:
    one warm-up step (optimizer states allocated), then ``torch.cuda.max_memory_allocated`` on a GPU or,
    on Linux CPUs, the peak resident set (reset through /proc/self/clear_refs). Run the CPU
    measurement in a process started with ``MALLOC_MMAP_THRESHOLD_=65536``, so freed tensors leave the
    resident set at once."""
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        return torch.cuda.max_memory_allocated(device) - before
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set (VmHWM)
    step()
    return _status("VmHWM") - before


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))
