"""VAEModule: trains a CausalVideoVAE (reconstruction + KL, optional PatchGAN) and its latent scale."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Any

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from lit_vdit.models.vae import CausalVideoVAE


def video_from_batch(batch: torch.Tensor | dict[str, Any]) -> torch.Tensor:
    """Clips (B, C, T, H, W) in [-1, 1] from a batch that is either that tensor or a dict with "video"."""
    return batch["video"] if isinstance(batch, dict) else batch


@torch.no_grad()
def compute_scale_factor(vae: CausalVideoVAE, batches: Iterable[Any], num_batches: int) -> float:
    """Set ``vae.scale_factor`` to 1 / std of the posterior means over ``num_batches`` batches; return it."""
    param = next(vae.parameters())
    total = total_sq = torch.zeros((), dtype=torch.float64, device=param.device)
    count = 0
    for batch in itertools.islice(batches, num_batches):
        z = vae.encode(video_from_batch(batch).to(param)).mode().double()
        total, total_sq, count = total + z.sum(), total_sq + z.square().sum(), count + z.numel()
    if count == 0:
        raise ValueError("compute_scale_factor got no batches; pass a non-empty dataloader")
    mean = total / count
    std = math.sqrt(max((total_sq / count - mean**2).item(), 1e-12))
    vae.scale_factor.fill_(1.0 / std)
    return 1.0 / std


class PatchDiscriminator3D(nn.Module):
    """Small 3D PatchGAN: one real/fake logit per space-time patch; any T >= 1 and H, W >= 1."""

    def __init__(self, in_channels: int = 3, channels: int = 32, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv3d(in_channels, channels, 3, stride=(1, 2, 2), padding=1),
            nn.LeakyReLU(0.2),
        ]
        ch = channels
        for i in range(1, num_layers):
            out = channels * min(2**i, 8)
            layers += [
                nn.Conv3d(ch, out, 3, stride=2, padding=1),
                nn.GroupNorm(math.gcd(32, out), out),
                nn.LeakyReLU(0.2),
            ]
            ch = out
        layers.append(nn.Conv3d(ch, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)
        # pix2pix initialisation: conv weights N(0, 0.02), biases zero; norms start as identity.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _frames01(video: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) in [-1, 1] -> frames (B*T, C, H, W) in [0, 1] for per-frame image metrics."""
    return ((video.clamp(-1, 1) + 1) / 2).transpose(1, 2).flatten(0, 1)


class VAEModule(L.LightningModule):
    """Trains a CausalVideoVAE: ``l1_weight * L1 + mse_weight * MSE + kl_weight * KL`` (all means over
    elements), plus ``disc_weight`` times a hinge GAN loss from a 3D PatchGAN once ``disc_start``
    batches have been seen (the discriminator itself trains from the start).

    Manual optimisation: the VAE and discriminator optimisers step in turn, so with the GAN on,
    Lightning's global_step and ``max_steps`` count two optimizer steps per batch. Gradient clipping
    is ``grad_clip`` here (Trainer's gradient_clip_val is unavailable with manual optimisation).
    Latent scale: the first ``scale_batches`` training batches of the run are kept (on the CPU), and
    whenever a checkpoint is saved (and when training ends) ``scale_factor`` is recomputed as 1 / std
    of their latents under the current weights, so every checkpoint carries the scale of its own
    weights whatever the Trainer's validation and checkpoint schedule. ``on_save_checkpoint`` also
    stores the VAE hyper-parameters (``vae_config``) that ``load_frozen_vae`` rebuilds the VAE from.
    """

    def __init__(
        self,
        vae: CausalVideoVAE,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        l1_weight: float = 1.0,
        mse_weight: float = 0.0,
        kl_weight: float = 1e-6,
        disc_weight: float = 0.0,
        disc_start: int = 0,
        disc_channels: int = 32,
        disc_layers: int = 3,
        grad_clip: float | None = 1.0,
        scale_batches: int = 8,
        num_log_clips: int = 2,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["vae"])
        self.automatic_optimization = False
        self.vae = vae
        self.disc = (
            PatchDiscriminator3D(vae.in_channels, disc_channels, disc_layers) if disc_weight > 0 else None
        )
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.scale_clips: list[torch.Tensor] = []  # training batches the latent scale is measured on

    def configure_optimizers(self) -> Any:
        make = lambda params: torch.optim.Adam(params, lr=self.hparams.lr, betas=tuple(self.hparams.betas))
        if self.disc is None:
            return make(self.vae.parameters())
        return [make(self.vae.parameters()), make(self.disc.parameters())]

    def _reconstruction_loss(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        diff = recon - x
        return self.hparams.l1_weight * diff.abs().mean() + self.hparams.mse_weight * diff.square().mean()

    def _step(self, optimizer: Any, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.hparams.grad_clip:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm"
            )
        optimizer.step()

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x = video_from_batch(batch)
        if len(self.scale_clips) < self.hparams.scale_batches:
            self.scale_clips.append(x.detach().cpu())
        optimizers = self.optimizers()
        opt_vae, opt_disc = (optimizers, None) if self.disc is None else optimizers
        batches_seen = self.global_step // (1 if self.disc is None else 2)
        with self.toggled_optimizer(opt_vae):
            recon, posterior = self.vae(x)
            rec = self._reconstruction_loss(recon, x)
            kl = posterior.kl().mean()
            loss = rec + self.hparams.kl_weight * kl
            logs = {"train/rec_loss": rec, "train/kl": kl}
            if self.disc is not None and batches_seen >= self.hparams.disc_start:
                g_loss = -self.disc(recon).mean()
                loss = loss + self.hparams.disc_weight * g_loss
                logs["train/g_loss"] = g_loss
            self._step(opt_vae, loss)
        logs["train/loss"] = loss
        if self.disc is not None:
            with self.toggled_optimizer(opt_disc):
                recon = recon.detach()
                d_loss = F.relu(1 - self.disc(x)).mean() + F.relu(1 + self.disc(recon)).mean()
                self._step(opt_disc, d_loss)
            logs["train/d_loss"] = d_loss
        self.log_dict({k: v.detach() for k, v in logs.items()}, prog_bar=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x = video_from_batch(batch)
        recon = self.vae.decode(self.vae.encode(x).mode())
        self.val_psnr(_frames01(recon), _frames01(x))
        self.val_ssim(_frames01(recon), _frames01(x))
        self.log("val/rec_loss", self._reconstruction_loss(recon, x), sync_dist=True)
        self.log_dict({"val/psnr": self.val_psnr, "val/ssim": self.val_ssim}, prog_bar=True)
        if batch_idx == 0:
            self._log_reconstructions(x, recon)

    def _log_reconstructions(self, x: torch.Tensor, recon: torch.Tensor) -> None:
        """One image per clip in TensorBoard: frames left to right, original above reconstruction."""
        tb = next((lg for lg in self.loggers if isinstance(lg, TensorBoardLogger)), None)
        if tb is None or self.trainer.sanity_checking:
            return
        n = self.hparams.num_log_clips
        pairs = torch.cat([x[:n], recon[:n]], dim=3)  # (n, C, T, 2H, W)
        images = pairs.permute(0, 1, 3, 2, 4).flatten(3)  # (n, C, 2H, T*W)
        tb.experiment.add_images("val/reconstructions", (images.clamp(-1, 1) + 1) / 2, self.global_step)

    def _update_scale_factor(self) -> None:
        if self.scale_clips:
            compute_scale_factor(self.vae, self.scale_clips, len(self.scale_clips))

    def on_train_end(self) -> None:
        self._update_scale_factor()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._update_scale_factor()
        checkpoint["state_dict"]["vae.scale_factor"] = self.vae.scale_factor.detach().clone()
        checkpoint["vae_config"] = self.vae.config
