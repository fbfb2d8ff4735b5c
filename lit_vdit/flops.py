"""FLOP accounting with ``torch.utils.flop_counter`` (a multiply-add counts as 2 FLOPs).

``FlopCounterMode`` counts matmuls, convolutions and the CUDA attention kernels, but not the fused
CPU attention kernel (``aten._scaled_dot_product_flash_attention_for_cpu``): without the formulas
registered below every attention product on a CPU run would be silently missing from C.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import flop_counter

from lit_vdit.diffusion import Objective
from lit_vdit.memory import activation_bytes
from lit_vdit.models.denoiser import Denoiser, check_denoiser
from lit_vdit.models.text import TextEmbedding, TextEncoder, is_frozen

aten = torch.ops.aten


def _register_cpu_attention() -> None:
    forward_op = aten._scaled_dot_product_flash_attention_for_cpu
    backward_op = aten._scaled_dot_product_flash_attention_for_cpu_backward
    if forward_op in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(forward_op)
    def _forward(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    @flop_counter.register_flop_formula(backward_op)
    def _backward(
        grad_out_shape, query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any
    ) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_register_cpu_attention()


def count_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs executed by ``fn()``."""
    return count_flops_and_attention(fn)[0]


def count_flops_and_attention(fn: Callable[[], Any]) -> tuple[int, int]:
    """Total FLOPs executed by ``fn()`` and those of its attention products: the SDPA kernels, which
    on the meta device run as their math decomposition, two batched matmuls (``bmm``: the denoisers
    have no other; their linear layers are ``addmm`` / ``mm``)."""
    with flop_counter.FlopCounterMode(display=False) as counter:
        fn()
    ops = counter.get_flop_counts().get("Global", {})
    attention = sum(n for op, n in ops.items() if "scaled_dot_product" in str(op) or "aten.bmm" in str(op))
    return int(counter.get_total_flops()), int(attention)


def six_nd(params: int, tokens: float) -> float:
    """Kaplan et al.'s estimate of training FLOPs: 6 x parameters x tokens."""
    return 6.0 * params * tokens


def denoiser_costs(
    build: Callable[[], Denoiser],
    objective: Objective,
    input_shape: tuple[int, int, int, int],
    num_classes: int,
    text_shape: tuple[int, int] | None = None,
) -> dict[str, int]:
    """Parameters and per-sample FLOPs of a denoiser, measured on a meta-device copy (no compute).

    ``flops_forward`` is one forward pass (``flops_attention_forward`` of it in the attention products
    softmax(QK^T)V, quadratic in a clip's tokens); ``flops_train_step`` is the forward and backward of the
    objective's training loss. Both are per sample (batch of 1), as are the activations the training
    step saves for backward (:func:`lit_vdit.memory.activation_bytes`), with ``text_shape`` = (caption
    tokens, width) of a text-conditional denoiser's captions at their full length (padding is
    computed too: attention masks it, but SDPA still multiplies it).
    """
    with torch.device("meta"):
        model = build()
    params_total = sum(p.numel() for p in model.parameters())
    params_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    check_denoiser(model)
    embedding = model.embedding_parameters()
    x = torch.zeros(1, *input_shape, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta") if num_classes else None
    t = objective.at_size(x[0, 0].numel()).sample_timesteps(1, torch.device("cpu")).to("meta")
    text = None
    if text_shape is not None:
        tokens = torch.zeros(1, *text_shape, device="meta")
        text = TextEmbedding(tokens, torch.ones(1, text_shape[0], dtype=torch.bool, device="meta"))

    def model_fn(x_t: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return model(x_t, time, y) if text is None else model(x_t, time, y, text)

    flops_forward, flops_attention = count_flops_and_attention(lambda: model_fn(x, objective.model_time(t)))
    train_step = lambda: objective.loss(model_fn, x, torch.zeros_like(x), t).sum().backward()  # noqa: E731
    flops_train = count_flops(train_step)
    memory = activation_bytes(model, model.fsdp_units(), train_step)
    return {
        "params_total": params_total,
        "params_trainable": params_trainable,
        "params_non_embedding": params_total - embedding,
        "flops_forward": flops_forward,
        "flops_attention_forward": flops_attention,
        "flops_train_step": flops_train,
        "tokens_per_sample": int(model.num_tokens),
        **memory,
    }


def text_encoder_costs(encoder: TextEncoder) -> dict[str, int]:
    """Parameters of a text encoder and its per-caption FLOPs at full length, counted with meta
    tensors in place of its weights (no copy: a T5-XXL's are gigabytes): the forward (what a frozen
    encoder costs per caption) and, for a trainable one, forward + backward (per training sample).
    Kept apart from the denoiser's costs, as the VAE's."""
    tensors = [*encoder.named_parameters(), *encoder.named_buffers()]
    meta = {n: torch.empty_like(t, device="meta").requires_grad_(t.requires_grad) for n, t in tensors}
    ids = torch.zeros(1, encoder.max_length, dtype=torch.long, device="meta")
    # No mask (every token real): a mask would make Hugging Face encoders test its values, which the
    # meta device does not have.
    call = lambda: torch.func.functional_call(encoder, meta, (ids, None))
    with torch.no_grad():
        forward = count_flops(call)
    train = 0 if is_frozen(encoder) else count_flops(lambda: call().sum().backward())
    return {
        "text_encoder_params": sum(p.numel() for p in encoder.parameters()),
        "text_encoder_flops": forward,
        "text_encoder_flops_train": train,
        "text_tokens": int(encoder.max_length),
    }


def vae_costs(vae: torch.nn.Module, clip_shape: tuple[int, int, int, int]) -> dict[str, int]:
    """Parameters of a frozen VAE and its per-clip encode / decode FLOPs, counted on a meta copy.

    Kept apart from the denoiser's costs: the VAE is not trained with it, and a latent cache pays
    the encoding once instead of at every step.
    """
    meta = copy.deepcopy(vae).to("meta")
    x = torch.zeros(1, *clip_shape, device="meta")
    z = torch.zeros(1, *vae.latent_shape(*clip_shape[1:]), device="meta")
    with torch.no_grad():
        return {
            "vae_params": sum(p.numel() for p in vae.parameters()),
            "vae_encode_flops": count_flops(lambda: meta.encode_latents(x)),
            "vae_decode_flops": count_flops(lambda: meta.decode_latents(z)),
        }


def matmul_flops_per_second(
    size: int = 1024,
    seconds: float = 0.5,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> float:
    """This process's dense matmul throughput on ``device``: the yardstick for MFU-style ratios."""
    import time

    device = torch.device(device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    reps = 10 if cuda else 1  # a GPU matmul is launched asynchronously: time batches of them
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b  # warm-up
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(reps):
            a @ b
        sync()
        count += reps
    return 2 * size**3 * count / (time.perf_counter() - start)
