"""LightningModules: the science of a run (objective, optimisation, EMA, accounting)."""

from lit_vdit.modules.diffusion_module import DiffusionModule

__all__ = ["DiffusionModule"]
