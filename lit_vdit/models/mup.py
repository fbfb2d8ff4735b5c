"""muP, the maximal-update parametrisation (Yang et al. 2022, "Tensor Programs V"), for the video DiT:
a learning rate tuned at a small width transfers to wider models.

Each parameter is classified by comparing its shape with the same parameter of a base model (the
same model built at the base width): a dimension is "infinite" if it differs from the base's.
Matrix-like parameters (2 infinite dimensions: the hidden weights) train at lr / m, m = width / base
width; vector-like (1: input and output weights, biases) and scalar-like (0) at lr. Every weight is
initialised with variance proportional to 1 / fan_in, anchored at its base-width init (hidden weights
keep Xavier's, input weights their base-width scale); the output is multiplied by 1 / m (mup's
``MuReadout``) and attention scores by sqrt(base head dim) / head dim instead of 1 / sqrt(head dim).
At the base width every rule is the identity: the model is the standard-parametrisation one.

We classify by name here rather than depend on the ``mup`` package: it attaches ``infshape``
attributes to the Parameter objects, which FSDP2's DTensor parameters and the EMA copies drop, and
needs its own readout module; the optimiser needs only a multiplier per parameter name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class LearningRateScales(Protocol):
    """A model whose parameters train at their own multiples of the learning rate (muP's Adam rule).

    Attributes:
        mup_base_width: the width its parametrisation is anchored at (None: standard parametrisation).
    """

    mup_base_width: int | None

    def learning_rate_scales(self) -> dict[str, float]:
        """Parameter name -> multiplier of the learning rate, for the multipliers other than 1."""


def mup_base_width(model: object) -> int | None:
    """The base width of a muP model; None for a standard-parametrised one (or one without the option)."""
    return model.mup_base_width if isinstance(model, LearningRateScales) else None


@dataclass(frozen=True)
class MuP:
    """The width multipliers of a model of ``width`` and ``head_dim`` anchored at a base model."""

    width: int
    base_width: int
    head_dim: int
    base_head_dim: int

    @classmethod
    def at(cls, width: int, num_heads: int, base_width: int, base_heads: int | None = None) -> MuP:
        """Anchor a model of ``width`` and ``num_heads`` at ``base_width``. The base has ``base_heads``
        heads; None keeps the head dim (heads grow with width, as DiT's S/B/L presets), which needs the
        head dim to divide ``base_width``. A family grown at a fixed head count gives ``num_heads``."""
        head_dim = width // num_heads
        if base_width <= 0:
            raise ValueError(f"mup_base_width must be positive, got {base_width}")
        if base_heads is None:
            if base_width % head_dim:
                raise ValueError(
                    f"muP base width {base_width} is not a multiple of the head dim {head_dim} (width "
                    f"{width}, {num_heads} heads): give mup_base_heads, the base model's heads (e.g. "
                    f"{num_heads} for models grown at a fixed head count)"
                )
            base_heads = base_width // head_dim
        if base_width % base_heads:
            raise ValueError(f"muP base width {base_width} is not divisible by mup_base_heads {base_heads}")
        return cls(width, base_width, head_dim, base_width // base_heads)

    def base_settings(self) -> dict[str, int | None]:
        """What the base model changes of the model's arguments: width and heads, and no muP."""
        return {
            "hidden_size": self.base_width,
            "num_heads": self.base_width // self.base_head_dim,
            "mup_base_width": None,
        }

    @property
    def output_multiplier(self) -> float | None:
        """1 / m on the final layer's output; None at the base width."""
        return None if self.width == self.base_width else self.base_width / self.width

    @property
    def attention_scale(self) -> float | None:
        """sqrt(base head dim) / head dim, 1 / sqrt(head dim) at the base's head dim: None there, which
        is SDPA's default (so a fixed head dim keeps the standard attention)."""
        if self.head_dim == self.base_head_dim:
            return None
        return math.sqrt(self.base_head_dim) / self.head_dim


def fan_in(shape: torch.Size) -> int:
    """Inputs per output of a Linear / Conv weight (out, in, *kernel)."""
    return math.prod(shape[1:])


def shapes_and_base(model: nn.Module, base: nn.Module) -> dict[str, tuple[torch.Size, torch.Size]]:
    """Parameter name -> (its shape, its shape in the base model)."""
    base_shapes = {name: p.shape for name, p in base.named_parameters()}
    shapes = {name: p.shape for name, p in model.named_parameters()}
    if shapes.keys() != base_shapes.keys():
        raise ValueError(f"the muP base model differs in {sorted(shapes.keys() ^ base_shapes.keys())}")
    return {name: (shape, base_shapes[name]) for name, shape in shapes.items()}


def infinite_dims(shape: torch.Size, base_shape: torch.Size) -> int:
    """How many dimensions grow with width: 2 matrix-like, 1 vector-like, 0 scalar-like."""
    return sum(a != b for a, b in zip(shape, base_shape, strict=True))


@torch.no_grad()
def widen_init_(
    model: nn.Module, shapes: dict[str, tuple[torch.Size, torch.Size]], fixed_std: Iterable[str] = ()
) -> None:
    """Rescale ``model``'s standard init (Xavier, or the constant std of the weights named in
    ``fixed_std``) so that every Linear / Conv weight's std is its std in the base model x sqrt(base
    fan_in / fan_in): matrix-like weights keep Xavier's scale, input weights their base-width scale
    (Xavier would shrink them with width), output weights shrink by sqrt(1 / m). Zeros stay zero;
    embedding tables (fan-in: the one-hot class) keep theirs."""
    fixed = set(fixed_std)
    for module_name, module in model.named_modules():
        if not isinstance(module, nn.Linear | nn.Conv3d):
            continue
        name = f"{module_name}.weight"
        shape, base_shape = shapes[name]
        fi, fo, base_fi, base_fo = fan_in(shape), shape[0], fan_in(base_shape), base_shape[0]
        variance_ratio = Fraction(base_fi, fi)  # exact: 1 where Xavier's variance already is 1 / fan_in
        if name not in fixed:  # Xavier: variance 2 / (fan_in + fan_out) at each width
            variance_ratio *= Fraction(fi + fo, base_fi + base_fo)
        if variance_ratio != 1:
            module.weight.mul_(math.sqrt(variance_ratio))


def learning_rate_scales(shapes: dict[str, tuple[torch.Size, torch.Size]]) -> dict[str, float]:
    """Adam's muP rule: matrix-like weights train at lr x base fan_in / fan_in (1 / m); the others at lr."""
    return {
        name: fan_in(base_shape) / fan_in(shape)
        for name, (shape, base_shape) in shapes.items()
        if infinite_dims(shape, base_shape) >= 2
    }


def parameter_groups(
    named: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float, scales: dict[str, float]
) -> list[dict[str, Any]]:
    """AdamW groups: weights (2+ dims) decayed, vectors not, split further by their learning-rate
    multipliers ``scales`` (name -> multiplier; 1 for the names absent). The first two groups are the
    multiplier-1 ones, [decayed, not decayed]: all there is without multipliers. A group's weight decay
    is divided by its multiplier, so the decay per step, lr x weight_decay, is the same in every group
    (mup's ``MuAdamW`` with torch's AdamW)."""
    named = list(named)
    unknown = set(scales) - {name for name, _ in named}
    if unknown:
        raise ValueError(f"learning-rate multipliers of parameters the model lacks: {sorted(unknown)}")
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {(1.0, True): [], (1.0, False): []}
    for name, p in named:
        if p.requires_grad:
            groups.setdefault((scales.get(name, 1.0), p.ndim >= 2), []).append(p)
    return [
        {"params": params, "lr": lr * scale, "weight_decay": weight_decay / scale if decay else 0.0}
        for (scale, decay), params in groups.items()
        if params or scale == 1.0
    ]
