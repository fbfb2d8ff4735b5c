"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models", EDM2): choose the EMA length after training.

During training, power-function EMAs of the weights are kept for a few relative lengths
``sigma_rel`` (the standard deviation of the averaging profile relative to the training time) and
snapshots of them are stored at an interval. A power-function EMA at step t averages the weights
with the profile p(tau) ~ tau^gamma on [0, t]; any other profile (another sigma_rel, or an earlier
step) is approximated by the least-squares combination of the snapshots' profiles, and the same
combination of the snapshots' weights is the reconstructed EMA (:func:`reconstruct`). The profiles
are the exact weights of the discrete updates, so short runs are reconstructed as well as long ones.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lit_vdit.io import atomic_write_bytes
from lit_vdit.modules.ema import EMA

SNAPSHOTS = "ema_snapshots"  # folder of a run's snapshots, beside its checkpoints


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma of the power-function profile whose relative standard deviation is
    ``sigma_rel``: sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)), the largest real root."""
    if not 0 < sigma_rel < 12**-0.5:  # gamma -> 0 gives sigma_rel -> 1/sqrt(12): a uniform average
        raise ValueError(f"sigma_rel must be in (0, {12**-0.5:.4f}), got {sigma_rel}")
    t = sigma_rel**-2
    return float(np.roots([1.0, 7.0, 16.0 - t, 12.0 - t]).real.max())


def ema_beta(step: int, gamma: float) -> float:
    """Decay of a power-function EMA at update ``step`` (1, 2, ...): (1 - 1/step)^(gamma + 1), so
    the first update copies the weights."""
    return (1.0 - 1.0 / step) ** (gamma + 1.0)


# Above this many steps the profiles' continuous-time inner products replace the exact sums (EDM2's
# approximation: its error falls with the step count; the exact sums cost snapshots x steps memory).
EXACT_STEPS = 200_000


def profile_weights(step: int, gamma: float, length: int | None = None) -> np.ndarray:
    """The weight of update k = 1..``step`` in the power-function EMA at ``step``:
    (k^(g+1) - (k-1)^(g+1)) / step^(g+1) (the product of the decays telescopes), zero-padded to
    ``length``; the weights sum to 1."""
    k = np.arange(1, step + 1, dtype=float)
    weights = (k / step) ** (gamma + 1) - ((k - 1) / step) ** (gamma + 1)
    return np.pad(weights, (0, (length or step) - step))


def _continuous_dot(t_a: np.ndarray, g_a: np.ndarray, t_b: np.ndarray, g_b: np.ndarray) -> np.ndarray:
    """Inner products of the continuous profiles (g + 1) tau^g / t^(g + 1) on [0, t]."""
    low = np.minimum(t_a, t_b)
    scale = (g_a + g_b + 1) * t_a ** (g_a + 1) * t_b ** (g_b + 1)
    return (g_a + 1) * (g_b + 1) * low ** (g_a + g_b + 1) / scale


def solve_coefficients(
    steps: Sequence[int], gammas: Sequence[float], target_step: int, target_gamma: float
) -> np.ndarray:
    """Weights x of the snapshots (their steps and exponents) such that sum_i x_i p_i is the
    least-squares approximation of the target profile p: over the exact per-update weights up to
    :data:`EXACT_STEPS` steps, over the continuous profiles beyond."""
    length = max(max(steps), target_step)
    if length <= EXACT_STEPS:
        basis = np.stack([profile_weights(s, g, length) for s, g in zip(steps, gammas, strict=True)], axis=1)
        return np.linalg.lstsq(basis, profile_weights(target_step, target_gamma, length), rcond=None)[0]
    t = np.asarray(steps, dtype=float)[:, None]
    g = np.asarray(gammas, dtype=float)[:, None]
    gram = _continuous_dot(t, g, t.T, g.T)
    rhs = _continuous_dot(t[:, 0], g[:, 0], np.float64(target_step), np.float64(target_gamma))
    return np.linalg.lstsq(gram, rhs, rcond=None)[0]


class PowerEMA(nn.Module):
    """Power-function EMAs of ``model``, one :class:`~lit_vdit.modules.ema.EMA` (float32 under any
    training precision) per ``sigma_rel``, whose decay at update t is :func:`ema_beta`."""

    def __init__(self, model: nn.Module, sigma_rels: Sequence[float]) -> None:
        super().__init__()
        self.sigma_rels = [float(s) for s in sigma_rels]
        self.gammas = [sigma_rel_to_gamma(s) for s in self.sigma_rels]
        self.profiles = nn.ModuleList(EMA(model) for _ in self.sigma_rels)

    def update(self, model: nn.Module, step: int) -> None:
        """The EMAs after update ``step`` (1, 2, ...) of ``model``."""
        for profile, gamma in zip(self.profiles, self.gammas, strict=True):
            profile.update(model, ema_beta(step, gamma))

    def snapshot(self) -> dict[str, dict[str, torch.Tensor]]:
        """Each profile's parameters (full tensors, on the CPU), keyed by its sigma_rel."""
        return {
            repr(s): {n: _full(p).cpu() for n, p in profile.module.named_parameters()}
            for s, profile in zip(self.sigma_rels, self.profiles, strict=True)
        }

    def save_snapshot(self, run_dir: str | Path, step: int, write: bool) -> None:
        """Store the profiles at ``step`` as ``run_dir/ema_snapshots/step=<step>.pt`` (atomically);
        every process gathers (FSDP2 shards), the one with ``write`` writes."""
        profiles = self.snapshot()
        if write:
            buffer = io.BytesIO()
            torch.save({"step": step, "profiles": profiles}, buffer)
            atomic_write_bytes(snapshot_path(run_dir, step), buffer.getvalue())


def snapshot_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"step={step:08d}.pt"


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a parameter (a sharded DTensor under FSDP2 gathers: collective)."""
    full_tensor = getattr(tensor, "full_tensor", None)
    return full_tensor() if full_tensor is not None else tensor.detach()


def reconstruct(
    snapshots: Sequence[tuple[int, Mapping[str, Mapping[str, torch.Tensor]]]],
    sigma_rel: float,
    step: int | None = None,
    profiles: Sequence[float] | None = None,
) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """The EMA of relative length ``sigma_rel`` at ``step`` (default: the last snapshot's) from
    ``(step, {sigma_rel: parameters})`` snapshots taken at or before it, of all their profiles or
    those of ``profiles``; returns the parameters and the coefficients of the snapshots used."""
    step = max(s for s, _ in snapshots) if step is None else step
    keep = None if profiles is None else {float(p) for p in profiles}
    used = [
        (s, float(key), params)
        for s, saved in snapshots
        if s <= step
        for key, params in saved.items()
        if keep is None or float(key) in keep
    ]
    if not used:
        raise ValueError(f"no EMA snapshot at or before step {step}")
    gammas = [sigma_rel_to_gamma(key) for _, key, _ in used]
    coefficients = solve_coefficients([s for s, _, _ in used], gammas, step, sigma_rel_to_gamma(sigma_rel))
    combined = {
        name: sum(
            float(c) * params[name].double() for c, (_, _, params) in zip(coefficients, used, strict=True)
        )
        for name in used[0][2]
    }
    return {name: value.float() for name, value in combined.items()}, coefficients
