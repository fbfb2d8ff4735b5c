"""Shared test settings: small thread counts keep the suite predictable on 2-core CI machines."""

import os

# Threads sleep instead of spinning while waiting: on a shared 2-core machine spinning OpenMP threads
# made training steps ~50x slower; on an idle machine this changes nothing.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo_root() -> str:
    return REPO


def vae_checkpoint(path, seed: int, latent_channels: int = 4, temporal_compression: int = 1) -> str:
    """A tiny random VAEModule-style checkpoint (vae_config + vae.* state dict), 2x spatial compression."""
    from lit_vdit.models.vae import CausalVideoVAE

    torch.manual_seed(seed)
    vae = CausalVideoVAE(
        latent_channels=latent_channels,
        spatial_compression=2,
        temporal_compression=temporal_compression,
        base_channels=8,
        channel_mult=[1, 1],
    )
    vae.scale_factor.fill_(0.5)
    torch.save(
        {"vae_config": vae.config, "state_dict": {f"vae.{k}": v for k, v in vae.state_dict().items()}}, path
    )
    return str(path)
