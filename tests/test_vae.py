"""Causal video VAE: shapes, causality, chunked == one pass, training, VAEModule, frozen loading."""

from __future__ import annotations

import math

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lit_vdit.data.synthetic import SyntheticVideoDataset
from lit_vdit.models.vae import CausalVideoVAE, DiagonalGaussian, IdentityVAE, load_frozen_vae
from lit_vdit.modules.vae_module import VAEModule, compute_scale_factor, video_from_batch

COMPRESSIONS = [(1, 4), (2, 2), (4, 4), (4, 8)]  # (temporal, spatial)


def tiny_vae(tc: int = 4, sc: int = 4, **kw) -> CausalVideoVAE:
    torch.manual_seed(0)
    return CausalVideoVAE(
        latent_channels=4,
        spatial_compression=sc,
        temporal_compression=tc,
        base_channels=8,
        num_res_blocks=1,
        **kw,
    )


def vae_checkpoint(path, seed: int, latent_channels: int = 4, temporal_compression: int = 1) -> str:
    """A tiny random VAEModule-style checkpoint (vae_config + vae.* state dict), 2x spatial compression."""
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


def trainer(tmp_path, max_steps: int, **kw) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kw,
    )


def clips(n: int, frames: int, size: int = 16, split: str = "train") -> DataLoader:
    return DataLoader(SyntheticVideoDataset(n, frames, size, size, seed=0, split=split), batch_size=4)


@pytest.mark.parametrize("tc,sc", COMPRESSIONS)
def test_shapes_every_compression_and_images(tc, sc):
    vae = tiny_vae(tc, sc)
    for frames in (1, 1 + 2 * tc):
        x = torch.randn(2, 3, frames, 16, 16)
        with torch.no_grad():
            z = vae.encode_latents(x)
            assert z.shape == (2, *vae.latent_shape(frames, 16, 16))
            assert z.shape == (2, 4, 1 + (frames - 1) // tc, 16 // sc, 16 // sc)
            assert vae.decode_latents(z).shape == x.shape


def test_bad_shapes_and_settings_raise():
    vae = tiny_vae(4, 4)
    with pytest.raises(ValueError, match="1 \\+ k\\*4"):
        vae.encode(torch.randn(1, 3, 8, 16, 16))
    with pytest.raises(ValueError, match="multiples of 4"):
        vae.latent_shape(5, 18, 16)
    with pytest.raises(ValueError, match="positive multiple"):
        vae.encode(torch.randn(1, 3, 9, 16, 16), chunk_frames=2)
    with pytest.raises(ValueError, match="power of two"):
        CausalVideoVAE(spatial_compression=6)
    with pytest.raises(ValueError, match="temporal_compression"):
        CausalVideoVAE(spatial_compression=2, temporal_compression=4)
    with pytest.raises(ValueError, match="channel_mult"):
        CausalVideoVAE(spatial_compression=8, channel_mult=[1, 2])


def test_identity_vae_interface():
    vae = IdentityVAE()
    x = torch.randn(1, 3, 5, 8, 8)
    assert vae.latent_shape(5, 8, 8) == (3, 5, 8, 8)
    assert torch.equal(vae.decode_latents(vae.encode_latents(x)), x)


@pytest.mark.parametrize("tc,sc", [(1, 4), (4, 4)])
def test_encoder_is_causal(tc, sc):
    """Latent j sees frames <= j * tc: changing frame k leaves latents with j * tc < k untouched."""
    vae = tiny_vae(tc, sc)
    frames = 1 + 3 * tc
    x = torch.randn(1, 3, frames, 16, 16)
    with torch.no_grad():
        z = vae.encode(x).mode()
        assert torch.allclose(vae.encode(x[:, :, :1]).mode(), z[:, :, :1], atol=1e-5)  # frame 0 alone
        for k in range(1, frames):
            y = x.clone()
            y[:, :, k] += 1.0
            z_k = vae.encode(y).mode()
            untouched = math.ceil(k / tc)  # latents 0 .. ceil(k/tc) - 1 end before frame k
            assert torch.allclose(z_k[:, :, :untouched], z[:, :, :untouched], atol=1e-5), k
            assert not torch.allclose(z_k[:, :, untouched], z[:, :, untouched], atol=1e-3), k


def test_decoder_is_causal():
    """Frame t is decoded from latents <= ceil(t / tc): changing latent j leaves frames < (j-1)*tc + 1."""
    tc = 4
    vae = tiny_vae(tc, 4)
    z = torch.randn(1, 4, 4, 4, 4)
    with torch.no_grad():
        video = vae.decode(z)
        for j in range(1, 4):
            w = z.clone()
            w[:, :, j] += 1.0
            untouched = (j - 1) * tc + 1
            changed = vae.decode(w)
            assert torch.allclose(changed[:, :, :untouched], video[:, :, :untouched], atol=1e-5), j
            assert not torch.allclose(changed[:, :, untouched], video[:, :, untouched], atol=1e-3), j


@pytest.mark.parametrize("tc,sc", [(1, 4), (4, 8)])
def test_chunked_encode_decode_equals_one_pass(tc, sc):
    # float64 so that any difference beyond rounding would show; the float32 gap is ~1e-6.
    vae = tiny_vae(tc, sc).double()
    x = torch.randn(1, 3, 1 + 3 * tc, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        z = vae.encode(x).mode()
        for chunk in (tc, 2 * tc):
            torch.testing.assert_close(vae.encode(x, chunk_frames=chunk).mode(), z, atol=1e-10, rtol=0)
        video = vae.decode(z)
        for chunk in (1, 2):
            torch.testing.assert_close(vae.decode(z, chunk_frames=chunk), video, atol=1e-10, rtol=0)


def test_posterior_and_scale_factor():
    moments = torch.cat([torch.zeros(2, 4, 1, 2, 2), torch.zeros(2, 4, 1, 2, 2)], dim=1)
    posterior = DiagonalGaussian(moments)
    assert torch.allclose(posterior.kl(), torch.zeros(2))
    assert posterior.sample().shape == posterior.mode().shape == (2, 4, 1, 2, 2)

    vae = tiny_vae(4, 4)
    assert "scale_factor" in vae.state_dict()
    loader = clips(8, 5)
    scale = compute_scale_factor(vae, loader, num_batches=2)
    assert vae.scale_factor.item() == pytest.approx(scale)
    with torch.no_grad():
        z = torch.cat([vae.encode_latents(video_from_batch(b)) for b in loader])
        assert z.std().item() == pytest.approx(1.0, abs=1e-3)
        x = next(iter(loader))["video"]
        torch.testing.assert_close(
            vae.decode_latents(vae.encode_latents(x)), vae.decode(vae.encode(x).mode())
        )


def frame_psnr(vae: CausalVideoVAE, loader: DataLoader) -> float:
    """Mean per-frame PSNR (dB, on [0, 1]) of the posterior-mode reconstructions."""
    psnrs = []
    with torch.no_grad():
        for batch in loader:
            x = video_from_batch(batch)
            recon = vae.decode(vae.encode(x).mode()).clamp(-1, 1)
            mse = ((recon - x) / 2).square().mean(dim=(1, 3, 4))  # (B, T)
            psnrs.append(-10 * torch.log10(mse).flatten())
    return torch.cat(psnrs).mean().item()


def test_training_improves_reconstruction(tmp_path):
    """300 steps on 16 synthetic 8x16x16 clips: their PSNR rises far above its value at init."""
    data = SyntheticVideoDataset(16, 8, 16, 16, seed=0)
    vae = tiny_vae(1, 4)
    eval_loader = DataLoader(data, batch_size=8)
    before = frame_psnr(vae, eval_loader)
    module = VAEModule(vae, lr=3e-3, l1_weight=0.0, mse_weight=1.0, scale_batches=0)
    train = DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    trainer(tmp_path, 300, logger=False, enable_checkpointing=False, limit_val_batches=0).fit(module, train)
    after = frame_psnr(vae, eval_loader)
    print(f"PSNR before {before:.2f} dB, after {after:.2f} dB")
    assert after > before + 6.0, (before, after)


def test_vae_module_gan_fit_checkpoint_and_frozen_load(tmp_path):
    vae = tiny_vae(4, 4)
    module = VAEModule(vae, disc_weight=0.1, disc_start=1, disc_channels=8, disc_layers=2, scale_batches=1)
    logger = TensorBoardLogger(tmp_path, name="tb")
    fit = trainer(
        tmp_path,
        6,
        logger=logger,
        val_check_interval=3,
        check_val_every_n_epoch=None,
        limit_val_batches=1,
        log_every_n_steps=1,
    )
    fit.fit(module, clips(8, 5), clips(4, 5, split="val"))
    assert fit.global_step == 6  # two optimizers: 3 batches
    metrics = fit.callback_metrics
    for key in ("train/g_loss", "train/d_loss", "val/psnr", "val/ssim"):
        assert torch.isfinite(metrics[key]), key
    assert len(module.scale_clips) == 1 and vae.scale_factor.item() != 1.0

    ckpt = tmp_path / "vae.ckpt"
    fit.save_checkpoint(ckpt)
    frozen = load_frozen_vae(ckpt, latent_channels=4, temporal_compression=4, spatial_compression=4)
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    assert frozen.scale_factor.item() == vae.scale_factor.item()
    with torch.no_grad():  # the scale stored with the weights gives the kept training clips unit std
        assert frozen.encode_latents(module.scale_clips[0]).std().item() == pytest.approx(1.0, abs=1e-3)
    x = torch.randn(1, 3, 5, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(frozen.encode_latents(x), vae.encode_latents(x))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(logger.log_dir).Reload()
    assert "val/reconstructions" in events.Tags()["images"]


def test_load_frozen_vae_clear_errors(tmp_path):
    vae = tiny_vae(4, 4)
    good = tmp_path / "good.ckpt"
    state = {f"vae.{k}": v for k, v in vae.state_dict().items()}
    torch.save({"vae_config": vae.config, "state_dict": state}, good)
    with pytest.warns(UserWarning, match="scale_factor 1.0"):
        load_frozen_vae(good)

    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_frozen_vae(tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match=r"good.ckpt has latent_channels=4 but the model expects 16"):
        load_frozen_vae(good, latent_channels=16)

    wrong = tmp_path / "wrong.ckpt"
    torch.save({"vae_config": {**vae.config, "latent_channels": 8}, "state_dict": state}, wrong)
    with pytest.raises(
        ValueError, match=r"wrong.ckpt does not match.*encoder.conv_out.conv.weight: checkpoint"
    ):
        load_frozen_vae(wrong)

    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": state}, other)
    with pytest.raises(ValueError, match="other.ckpt is not a VAEModule checkpoint"):
        load_frozen_vae(other)
