"""lit_vdit: scaling studies of video diffusion models with PyTorch Lightning."""

__version__ = "0.1.0"
