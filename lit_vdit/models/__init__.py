"""Denoisers (video DiT, video U-Net), the video VAE and their shared layers: plain torch modules."""

from lit_vdit.models.denoiser import Denoiser, check_denoiser

__all__ = ["Denoiser", "check_denoiser"]
