"""Parallelism in one place, torchtitan style: sequence parallelism, activation checkpointing,
compilation, FSDP2 sharding and mixed precision.

``DiffusionModule.configure_model`` calls :func:`parallelize` on the denoiser under every strategy
(activation checkpointing and compilation on one device or under DDP, sharding too under
``ModelParallelStrategy``, token splitting under :class:`SequenceParallelStrategy`), and on its EMA
copy under FSDP2. Both get the same sharding, so every EMA shard sits on the process that owns the
matching parameter shard and the EMA update is a local ``_foreach_lerp_`` on DTensors (no
communication). The models know only what their interfaces declare (``fsdp_units``, and
``shard_sequence`` for a model whose tokens can be split).
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy, Strategy
from torch import nn
from torch.distributed._composable import checkpoint
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from lit_vdit.models.denoiser import Denoiser


@runtime_checkable
class SequenceSharded(Protocol):
    """A denoiser whose tokens can be split over a process group (the video DiT)."""

    def shard_sequence(self, group: dist.ProcessGroup) -> None: ...


class SequenceParallelStrategy(ModelParallelStrategy):
    """FSDP2 over every process plus Ulysses sequence parallelism within groups of
    ``sequence_parallel_size`` processes, which hold the same clips and split their tokens
    (:mod:`lit_vdit.models.sequence_parallel`).

    The 2-D mesh is Lightning's (data_parallel, tensor_parallel), its second dimension holding the
    sequence groups (consecutive ranks: one node's GPUs): data are dealt over the first, the weights
    sharded over both, flattened. Configs: configs/trainer/sp_cpu.yaml, sp_gpu.yaml.
    """

    def __init__(self, sequence_parallel_size: int = 2, **kwargs: Any) -> None:
        if sequence_parallel_size < 1:
            raise ValueError(f"sequence_parallel_size must be at least 1, got {sequence_parallel_size}")
        super().__init__(data_parallel_size="auto", tensor_parallel_size=sequence_parallel_size, **kwargs)
        self.sequence_parallel_size = sequence_parallel_size

    def setup_environment(self) -> None:
        if self.world_size % self.sequence_parallel_size:
            raise ValueError(
                f"sequence_parallel_size {self.sequence_parallel_size} does not divide the {self.world_size} "
                "processes: choose a degree that divides devices x nodes"
            )
        self._data_parallel_size = self.world_size // self.sequence_parallel_size
        super().setup_environment()


def strategy_config(strategy: Any) -> tuple[str, dict[str, Any]]:
    """(class name, init args) of a trainer config's strategy: a ``class_path`` mapping or namespace, or a
    name such as "ddp"."""

    def field(obj: Any, key: str, default: Any) -> Any:
        return obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)

    path = field(strategy, "class_path", strategy)
    init = field(strategy, "init_args", {})
    init = init if isinstance(init, dict) else vars(init)
    return str(path).rsplit(".", 1)[-1], init


def sequence_degree(strategy: Any) -> int:
    """The sequence-parallel degree of a strategy or of its config (1: none)."""
    if isinstance(strategy, SequenceParallelStrategy):
        return strategy.sequence_parallel_size
    name, init = strategy_config(strategy)
    if name != SequenceParallelStrategy.__name__:
        return 1
    default = inspect.signature(SequenceParallelStrategy).parameters["sequence_parallel_size"].default
    return int(init.get("sequence_parallel_size", default))


def shards_weights(strategy: Any) -> bool:
    """Whether a trainer config's strategy shards the weights (FSDP, FSDP2, sequence parallel)."""
    return strategy_config(strategy)[0] in (
        "FSDPStrategy", "ModelParallelStrategy", SequenceParallelStrategy.__name__, "fsdp",
    )  # fmt: skip


def mixed_precision_policy(precision: str) -> MixedPrecisionPolicy:
    """FSDP2 policy for a Lightning precision flag.

    ``bf16-mixed``: fp32 sharded master weights, all-gathered and computed in bf16, gradients reduced
    in fp32. ``32-true`` and ``bf16-true`` leave dtypes alone (with ``bf16-true`` Lightning has cast
    the whole module, EMA included, to bf16).
    """
    if precision == "bf16-mixed":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if precision in ("32-true", "bf16-true"):
        return MixedPrecisionPolicy()
    raise ValueError(f"FSDP2 supports precision 32-true, bf16-mixed or bf16-true, got {precision!r}")


def data_parallel_mesh(device_mesh: DeviceMesh) -> DeviceMesh:
    """The mesh to shard over: the ``data_parallel`` dimension of Lightning's 2D mesh (no tensor
    parallelism)."""
    if device_mesh.mesh_dim_names and "tensor_parallel" in device_mesh.mesh_dim_names:
        if device_mesh["tensor_parallel"].size() > 1:
            raise ValueError(
                f"lit_vdit shards with FSDP2 only (no tensor parallelism): set ModelParallelStrategy("
                f"data_parallel_size={device_mesh.size()}, tensor_parallel_size=1)"
            )
        return device_mesh["data_parallel"]
    return device_mesh


def parallelize(
    model: Denoiser,
    device_mesh: DeviceMesh | None = None,
    precision: str = "32-true",
    activation_checkpointing: bool = False,
    compile: bool | str = False,
    sequence_parallel: bool = False,
) -> nn.Module:
    """Apply activation checkpointing, ``torch.compile`` and, given a mesh, FSDP2 sharding to ``model``
    in place, in that order (torchtitan's).

    The units are the denoiser's ``fsdp_units()`` (DiT blocks, U-Net stages). With activation
    checkpointing each unit's activations are recomputed in backward instead of stored (PyTorch's
    composable ``checkpoint``, which works alone, under DDP and under FSDP2). With a mesh each unit
    is sharded with ``fully_shard``, then the rest of the model as the root.

    Args:
        model: the denoiser (or its EMA copy: same model, same sharding).
        device_mesh: Lightning's ``ModelParallelStrategy.device_mesh`` (or any 1D data-parallel mesh);
            None: no sharding (one device, DDP).
        precision: the Trainer's precision flag, see :func:`mixed_precision_policy`.
        activation_checkpointing: recompute each unit's activations in backward instead of storing them.
        compile: compile each unit (``nn.Module.compile``: the module object stays, so FSDP2 and the
            checkpoint hooks see it as before); True for inductor or a backend name. Default dynamic
            shapes: a second clip shape (buckets) recompiles once into a shape-generic graph, so the
            compiled graphs stay bounded as shapes vary.
        sequence_parallel: split the tokens over the mesh's second dimension
            (:class:`SequenceParallelStrategy`) and shard the weights over the whole mesh.
    """
    units = model.fsdp_units()
    if sequence_parallel:
        if device_mesh is None or not isinstance(model, SequenceSharded):
            raise ValueError(
                f"sequence parallelism splits a DiT's tokens: {type(model).__name__} has no token sequence "
                "to split (use data parallelism: configs/trainer/fsdp2_*.yaml or ddp_*.yaml)"
            )
        model.shard_sequence(device_mesh["tensor_parallel"].get_group())
    if activation_checkpointing:
        if not units:
            raise ValueError(f"activation_checkpointing: {type(model).__name__}.fsdp_units() names no blocks")
        for unit in units:
            checkpoint(unit)
    if compile:
        for unit in units:
            unit.compile(backend="inductor" if compile is True else compile)
    if device_mesh is None:
        return model
    # Every unit, the root included, reshards after forward: evaluation runs forward only (the EMA
    # never runs backward), and the EMA update needs all parameters sharded.
    mesh = _flat(device_mesh) if sequence_parallel else data_parallel_mesh(device_mesh)
    kwargs = {"mesh": mesh, "mp_policy": mixed_precision_policy(precision)}
    for unit in units:
        fully_shard(unit, reshard_after_forward=True, **kwargs)
    fully_shard(model, reshard_after_forward=True, **kwargs)
    return model


def _flat(device_mesh: DeviceMesh) -> DeviceMesh:
    """The (data, sequence) mesh as one dimension: FSDP2's gradient mean over every process sums the
    sequence shares (each process's gradient is its tokens' share x P)."""
    name = "data_sequence"
    try:
        return device_mesh[name]
    except KeyError:
        return device_mesh["data_parallel", "tensor_parallel"]._flatten(name)


def check_strategy(
    strategy: Strategy | None,
    world_size: int,
    vae: nn.Module,
    activation_checkpointing: bool,
    compile: bool | str = False,
) -> None:
    """Refuse, before any model is wrapped, the combinations the strategy cannot run."""
    if not isinstance(strategy, FSDPStrategy):
        return
    if world_size > 1 and next(vae.parameters(), None) is not None:
        # FSDP1 flattens the VAE into the root unit's shards, and encode/decode run outside the
        # root's forward (evaluation, sampling), where only shard views exist.
        raise ValueError(
            "a VAE with weights under FSDPStrategy on several devices is not supported: use "
            "configs/trainer/fsdp2_gpu.yaml (FSDP2 shards only the denoiser and its EMA; the frozen VAE "
            "stays whole on every device) or DDP"
        )
    if compile:
        raise ValueError(
            "compile under FSDPStrategy (FSDP1 wraps the compiled blocks in flat parameters): use FSDP2 "
            "(configs/trainer/fsdp2_gpu.yaml), DDP or one device, where the module compiles each block"
        )
    if activation_checkpointing:
        raise ValueError(
            "activation_checkpointing under FSDPStrategy: set the strategy's own "
            "activation_checkpointing_policy (e.g. {lit_vdit.models.dit_blocks.DiTBlock}) instead, or use "
            "FSDP2 (configs/trainer/fsdp2_gpu.yaml), DDP or one device, where the module applies it"
        )
