"""DiffusionModule: trains a video denoiser (DiT or U-Net) with any objective, in pixel or VAE latent space.

The module owns the science: objective, optimiser, EMA, the low-variance validation loss and the
accounting of samples, tokens and FLOPs. The model is built in ``configure_model`` from the
DataModule's clip shape and classes (or from ``clip_shape`` / ``num_classes`` given here), which is
also where parallelism is applied (:mod:`lit_vdit.parallel`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from lit_vdit.data.datamodule import VideoDataModule, process_share
from lit_vdit.diffusion import Objective, RectifiedFlow, Sampler, default_sampler, denoiser_fn
from lit_vdit.flops import denoiser_costs, vae_costs
from lit_vdit.models.denoiser import Denoiser, check_denoiser
from lit_vdit.models.layers import LabelEmbedder
from lit_vdit.models.mup import LearningRateScales, parameter_groups
from lit_vdit.models.text import CaptionEmbedder, TextEmbedding, TextEncoder
from lit_vdit.models.vae import IdentityVAE, VideoAutoencoder, load_frozen_vae, vae_fingerprint
from lit_vdit.modules.accounting import Accounting
from lit_vdit.modules.ema import EMA
from lit_vdit.modules.lr_schedules import check_schedule, lambda_schedule, resume_schedules
from lit_vdit.modules.packing import pack_totals, packed_losses, sample_draws
from lit_vdit.modules.posthoc_ema import PowerEMA
from lit_vdit.modules.text_conditioning import TextConditioning, restore_text_state, text_checkpoint_state
from lit_vdit.parallel import SequenceParallelStrategy, check_strategy, parallelize

# An nn.Module class in configs (jsonargparse resolves class_paths by subclass); the Denoiser protocol
# it must implement is checked when the model is built (check_denoiser). A text-conditional model is
# built with ``text_dim=`` the text encoder's width as well.
DenoiserFactory = Callable[[tuple[int, int, int, int], int], nn.Module]


class DiffusionModule(L.LightningModule):
    """Denoiser + objective + frozen VAE.

    Args:
        denoiser: ``(latent_shape, num_classes) -> nn.Module``; in a config, a class_path such as
            ``lit_vdit.models.dit.VideoDiT`` with its other init_args.
        objective: ``GaussianDiffusion`` (epsilon / v, learned sigma) or ``RectifiedFlow``.
        vae: frozen autoencoder; None trains in pixel space (:class:`IdentityVAE`).
        vae_checkpoint: a trained VAEModule checkpoint to use frozen instead (``vae`` must then be
            None). Its weights travel in this module's checkpoints, which record the VAE's
            fingerprint: resuming or loading with another VAE is refused.
        text_encoder: a :class:`~lit_vdit.models.text.TextEncoder` makes the model text-conditional
            (captions instead of class labels): a frozen Hugging Face encoder
            (:class:`~lit_vdit.models.hf_text.PretrainedTextEncoder`, kept out of the checkpoints,
            which record its fingerprint) or a :class:`~lit_vdit.models.text.SmallTextEncoder`,
            trained with the denoiser (and averaged with it when ``ema_decay > 0``).
        clip_shape, num_classes: video clip (C, T, H, W) and classes; None takes them from the DataModule.
        lr, weight_decay, betas: AdamW settings; ``warmup_steps`` of linear warm-up, then
            ``lr_schedule`` "constant", "cosine" (to ``min_lr_ratio * lr`` at ``trainer.max_steps``) or
            "wsd" (warmup-stable-decay: constant, then a cooldown of the last ``decay_fraction`` of the
            steps to ``min_lr_ratio * lr``, shaped ``decay_shape``: "linear", "1-sqrt" or "cosine");
            see :mod:`lit_vdit.modules.lr_schedules`.
        ema_decay: decay of the exponential moving average of the weights (0 disables EMA); the EMA
            is kept and evaluated in float32 under any precision (:class:`~lit_vdit.modules.ema.EMA`).
        posthoc_ema: relative lengths (sigma_rel, e.g. ``[0.05, 0.1]``) of power-function EMAs kept
            for post-hoc EMA (EDM2, :mod:`lit_vdit.modules.posthoc_ema`); their weights are stored
            every ``ema_snapshot_every`` steps under ``<default_root_dir>/ema_snapshots``, from which
            ``lit-vdit posthoc-ema`` reconstructs and evaluates an EMA of any length.
        val_timesteps: fixed timesteps per validation clip for the low-variance validation loss.
        val_seed: seed of the fixed validation noise.
        sampler: sampler for ``predict``; None picks DDIM-50 or Euler-50 for the objective.
        guidance_scale: classifier-free guidance scale for ``predict``.
        activation_checkpointing: recompute each block's activations in backward instead of storing
            them, under one device, DDP and FSDP2 alike (:func:`lit_vdit.parallel.parallelize`);
            ``FSDPStrategy`` refuses it: use its ``activation_checkpointing_policy``.
        compile: ``torch.compile`` each block of the denoiser (True: inductor, or a backend name such as
            "aot_eager"), after activation checkpointing and before FSDP2
            (:func:`~lit_vdit.parallel.parallelize`).
    """

    def __init__(
        self,
        denoiser: DenoiserFactory,
        objective: Objective | None = None,
        vae: nn.Module | None = None,
        vae_checkpoint: str | None = None,
        text_encoder: nn.Module | None = None,
        clip_shape: tuple[int, int, int, int] | None = None,
        num_classes: int | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        lr_schedule: str = "constant",
        min_lr_ratio: float = 0.1,
        decay_fraction: float = 0.2,
        decay_shape: str = "1-sqrt",
        ema_decay: float = 0.9999,
        posthoc_ema: list[float] | None = None,
        ema_snapshot_every: int = 0,
        val_timesteps: int = 8,
        val_seed: int = 1234,
        sampler: Sampler | None = None,
        guidance_scale: float = 1.0,
        activation_checkpointing: bool = False,
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        check_schedule(lr_schedule, warmup_steps, None, decay_fraction, decay_shape)  # max_steps: later
        if posthoc_ema and ema_snapshot_every <= 0:
            raise ValueError(
                "posthoc_ema keeps power-function EMAs for snapshots: set ema_snapshot_every > 0 (e.g. a "
                "tenth of the run's steps), or drop posthoc_ema"
            )
        self.save_hyperparameters(ignore=["denoiser", "objective", "vae", "sampler", "text_encoder"])
        self.denoiser_factory = denoiser
        self.objective = objective or RectifiedFlow()
        if vae is not None and vae_checkpoint is not None:
            raise ValueError("give either vae or vae_checkpoint, not both")
        if vae_checkpoint is not None:
            vae = load_frozen_vae(vae_checkpoint)
        self.vae: VideoAutoencoder = (vae or IdentityVAE()).eval().requires_grad_(False)
        self.vae_fingerprint = vae_fingerprint(self.vae)  # of the weights as loaded, before any casting
        self.text = TextConditioning(text_encoder) if text_encoder is not None else None
        self.caption_dropout: float = 0.0  # drawn per sample in training_noise, as the label dropout
        self.sampler = sampler or default_sampler(self.objective)
        self.denoiser: Denoiser | None = None
        self.ema: EMA | None = None
        self.power_ema: PowerEMA | None = None
        self.label_dropout: tuple[float, int] | None = None  # (probability, null class) drawn per sample
        self.costs: dict[str, int] = {}
        self.seen = Accounting()
        self._shape_costs: dict[tuple[int, ...], dict[str, Any]] = {}  # describe() of other clip shapes
        self._noise_seed = 0
        self._parallelized = False  # parallelize() applied to this denoiser
        if clip_shape is not None and num_classes is not None:
            self.build(tuple(clip_shape), num_classes)

    # -- model construction --------------------------------------------------------------------
    @property
    def encoder(self) -> TextEncoder | None:
        """The text encoder (frozen or trainable), or None for a class-conditional / unconditional model."""
        return self.text.encoder if self.text is not None else None

    def conditioning_classes(self, num_classes: int) -> int:
        """Classes the denoiser is built with: none when it is conditioned on captions instead."""
        return 0 if self.encoder is not None else num_classes

    def make_denoiser(self, latent_shape: tuple[int, int, int, int], num_classes: int) -> nn.Module:
        """The configured denoiser for these latents and classes (and the text encoder's width)."""
        classes = self.conditioning_classes(num_classes)
        if self.encoder is None:
            return self.denoiser_factory(latent_shape, classes)
        return self.denoiser_factory(latent_shape, classes, text_dim=self.encoder.dim)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        _, frames, height, width = self.hparams.clip_shape
        return self.vae.latent_shape(frames, height, width)

    def describe(self, clip_shape: tuple[int, int, int, int], num_classes: int) -> dict[str, Any]:
        """Parameters and per-sample FLOPs of the denoiser for these clips, and separately those of
        the frozen VAE (encode, decode), measured on the meta device."""
        channels, frames, height, width = clip_shape
        if self.vae.in_channels != channels:
            raise ValueError(
                f"the VAE takes {self.vae.in_channels}-channel video but the clips have {channels} channels: "
                f"use a VAE trained on {channels}-channel clips (or IdentityVAE(channels={channels}))"
            )
        latent_shape = self.vae.latent_shape(frames, height, width)
        encoder = self.encoder
        costs = denoiser_costs(
            lambda: self.make_denoiser(latent_shape, num_classes),
            self.objective,
            latent_shape,
            self.conditioning_classes(num_classes),
            (encoder.max_length, encoder.dim) if encoder is not None else None,
        )
        text = self.text.costs() if self.text is not None else {}
        return {
            "clip_shape": list(clip_shape),
            "latent_shape": list(latent_shape),
            "num_classes": num_classes,
            **costs,
            **vae_costs(self.vae, clip_shape),
            **text,
        }

    def build(self, clip_shape: tuple[int, int, int, int], num_classes: int) -> None:
        """Create the denoiser (and its EMA) for clips of ``clip_shape`` and measure its costs."""
        self.hparams.clip_shape, self.hparams.num_classes = (
            tuple(int(s) for s in clip_shape),
            int(num_classes),
        )
        # Initial weights depend on the run's seed only, not on what else drew random numbers before
        # (Lightning's multi-process strategies re-seed every process just before configure_model).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch.initial_seed())
            self.denoiser = self.make_denoiser(self.latent_shape, num_classes)
        self._parallelized = False
        check_denoiser(self.denoiser)
        if self.objective.learn_sigma != self.denoiser.learn_sigma:
            raise ValueError(
                f"objective learn_sigma={self.objective.learn_sigma} but denoiser learn_sigma="
                f"{self.denoiser.learn_sigma}: set the same learn_sigma on both"
            )
        self.label_dropout = None
        for embedder in self.denoiser.modules():
            if isinstance(embedder, LabelEmbedder) and embedder.dropout_prob > 0:
                embedder.random_drop = False  # drawn per sample in training_noise instead
                self.label_dropout = (embedder.dropout_prob, embedder.null_class)
            if isinstance(embedder, CaptionEmbedder):
                self.caption_dropout = embedder.dropout_prob
        if self.encoder is not None and self.denoiser.conditioning.split("-")[0] != "text":
            raise ValueError(
                f"a text encoder is configured but {type(self.denoiser).__name__} was built without text "
                f"conditioning (conditioning {self.denoiser.conditioning!r}): it must take text_dim"
            )
        if self.hparams.ema_decay > 0:
            self.ema = EMA(self.denoiser)
            if self.text is not None:
                self.text.keep_average()
        if self.hparams.posthoc_ema:
            if self.text is not None and self.text.trained is not None:
                raise ValueError(
                    "posthoc_ema averages the denoiser only, and this run also trains its text encoder: "
                    "use a frozen text encoder (PretrainedTextEncoder), or ema_decay instead of posthoc_ema"
                )
            self.power_ema = PowerEMA(self.denoiser, self.hparams.posthoc_ema)
        self.costs = self.describe(self.hparams.clip_shape, num_classes)

    def configure_model(self) -> None:
        trainer = self._trainer  # None under load_from_checkpoint, which builds from the saved clip_shape
        datamodule = trainer.datamodule if trainer is not None else None
        if isinstance(datamodule, VideoDataModule):
            datamodule.check_vae(self.vae)  # a latent cache must come from this model's VAE
            datamodule.check_text_encoder(self.encoder)  # and a caption cache from its text encoder
        if self.denoiser is None:
            if not isinstance(datamodule, VideoDataModule):
                raise ValueError(
                    "DiffusionModule needs clip_shape and num_classes: give them as model arguments or use a "
                    "lit_vdit VideoDataModule, which provides them"
                )
            self.build(datamodule.clip_shape, datamodule.num_classes)
        strategy = trainer.strategy if trainer is not None else None
        world_size = trainer.world_size if trainer is not None else 1
        check_strategy(
            strategy, world_size, self.vae, self.hparams.activation_checkpointing, self.hparams.compile
        )
        if self._parallelized:
            return  # configure_model runs again in every fit/validate/predict of the same module
        self._parallelized = True
        # FSDP2 shards the denoiser and its EMA alike: the EMA's shards sit beside the parameter
        # shards, are updated locally and saved in the distributed checkpoint with them. The EMA
        # never runs backward, so it gets no activation checkpointing.
        mesh = strategy.device_mesh if isinstance(strategy, ModelParallelStrategy) else None
        precision = str(trainer.precision) if mesh is not None else "32-true"  # FSDP2's mixed precision
        sp = isinstance(strategy, SequenceParallelStrategy)  # the EMAs split their tokens alike
        if sp and self.text is not None and self.text.trained_modules():
            raise ValueError(
                "a trained text encoder under sequence parallelism is not supported (its gradients would be "
                "each process's token share): use a frozen encoder (configs/text/t5_local.yaml), or DDP"
            )
        h = self.hparams
        parallelize(
            self.denoiser, mesh, precision, h.activation_checkpointing, h.compile, sequence_parallel=sp
        )
        averages = [self.ema.module] if self.ema is not None else []
        averages += [p.module for p in self.power_ema.profiles] if self.power_ema is not None else []
        for average in averages if mesh is not None else []:
            parallelize(average, mesh, precision, sequence_parallel=sp)
        if self.text is not None and mesh is not None:  # a trained encoder: sharded like the denoiser
            for module in self.text.trained_modules():
                parallelize(module, mesh, precision)

    # -- training ---------------------------------------------------------------------------------
    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if "latent" in batch:  # precomputed by `lit-vdit cache-latents` (LatentDataModule)
            x0 = batch["latent"]
        elif isinstance(batch["video"], list):  # a pack: clips of several shapes
            with torch.no_grad():
                x0 = [self.vae.encode_latents(v[None])[0] for v in batch["video"]]
        else:
            with torch.no_grad():
                x0 = self.vae.encode_latents(batch["video"])
        y = batch["label"].long() if self.conditioning_classes(self.hparams.num_classes) else None
        return x0, y

    def caption_embedding(self, batch: dict[str, Any], averaged: bool = False) -> TextEmbedding | None:
        """The batch's captions as the denoiser takes them (None for a model without text); see
        :meth:`TextConditioning.embed`."""
        return self.text.embed(batch, self.device, averaged) if self.text is not None else None

    def on_fit_start(self) -> None:
        self._noise_seed = torch.initial_seed()  # the run's seed (seed_everything), equal on every process

    def on_train_start(self) -> None:
        resume_schedules(self.trainer.lr_scheduler_configs)

    def global_positions(self, batch_index: int, batch_size: int, n: int) -> list[int]:
        """Where this process's ``n`` samples of batch ``batch_index`` sit in the global sample order.

        Sample i of a process is sample ``i * replicas + rank`` of the global batch: the order in which
        Lightning's DistributedSampler deals a shuffled epoch, which a single process reads in turn.
        """
        replicas, rank = process_share(self.trainer.strategy)
        return [(batch_index * batch_size + i) * replicas + rank for i in range(n)]

    def batch_positions(self, batch: dict[str, Any], batch_index: int, n: int) -> list[int]:
        """The global positions of a training batch's ``n`` samples: given by a bucketed loader
        (``position``), else those of batch ``batch_index`` of a fixed batch size."""
        if "position" in batch:
            return [int(p) for p in batch["position"]]
        return self.global_positions(batch_index, n, n)

    def training_noise(
        self, x0: torch.Tensor | list[torch.Tensor], positions: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor | list[torch.Tensor], torch.Tensor]:
        """Timesteps, noise and dropout draws of each sample from (seed, its run position) only
        (:func:`~lit_vdit.modules.packing.sample_draws`)."""
        return sample_draws(self.objective, self._noise_seed, x0, positions)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """The batch's mean loss (``loss``, which Lightning scales by 1/accumulate_grad_batches for
        backward) and its per-sample losses (``sample_losses``, unscaled: what ScalingRecorder averages)."""
        x0, y = self.encode(batch)
        packed = isinstance(x0, list)  # a pack of clips of several shapes (the data's pack_positions)
        replicas = process_share(self.trainer.strategy)[0]  # data-parallel processes
        clips = self.count_pack(batch["video"]) if packed else x0.shape[0] * replicas
        text = self.caption_embedding(batch)
        if text is not None and "text_tokens" not in batch:  # encoded now, not once in a caption cache
            self.text.captions_encoded += clips
        accumulate = self.trainer.accumulate_grad_batches
        batch_index = self.global_step * accumulate + batch_idx % accumulate
        t, noise, uniform = self.training_noise(x0, self.batch_positions(batch, batch_index, len(x0)))
        if self.label_dropout is not None and y is not None:
            probability, null_class = self.label_dropout
            y = torch.where(uniform < probability, torch.full_like(y, null_class), y)
        if text is not None and self.caption_dropout > 0:
            text.drop = uniform < self.caption_dropout
        if packed:  # each process's mean weighted by its clips: the global mean, as one process's
            sample_losses = packed_losses(self.objective, self.denoiser, x0, noise, t, y, text)
            loss = sample_losses.sum() * replicas / clips
        else:
            sample_losses = self.objective.loss(denoiser_fn(self.denoiser, y, text=text), x0, noise, t)
            loss = sample_losses.mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step}: lower the learning rate "
                f"(lr={self.hparams.lr}), add warm-up, or train in 32-bit / bf16-mixed instead of fp16"
            )
        if not packed:  # a global batch is of one clip shape (one bucket) on every process
            clip_shape = tuple(batch["video"].shape[1:]) if "video" in batch else self.hparams.clip_shape
            self.seen.add(clips, self.costs_at(clip_shape), "latent" not in batch)
        n = len(x0)  # given: a batch of captions holds lists, whose size Lightning would guess at
        self.log("train/loss", loss, prog_bar=True, sync_dist=True, batch_size=n)  # the global batch loss
        self.log_dict(self.accounting(), reduce_fx="max", batch_size=n)
        return {"loss": loss, "sample_losses": sample_losses.detach()}

    def count_pack(self, videos: list[torch.Tensor]) -> int:
        """Add a pack's clips (of every data-parallel process: packs differ; a sequence-parallel group
        shares one) to the accounting; their number."""
        share = process_share(self.trainer.strategy)[0] / self.trainer.world_size  # 1 / sequence degree
        local = pack_totals([self.costs_at(tuple(v.shape)) for v in videos]).to(self.device) * share
        samples, tokens, flops, vae_flops = (
            round(v) for v in self.trainer.strategy.reduce(local, reduce_op="sum").tolist()
        )
        self.seen.add_totals(samples, tokens, flops, vae_flops, samples)  # a pack is always encoded now
        return samples

    def costs_at(self, clip_shape: tuple[int, ...]) -> dict[str, Any]:
        """:meth:`describe` of clips of ``clip_shape`` (the built shape's is :attr:`costs`), measured
        once per shape."""
        clip_shape = tuple(int(s) for s in clip_shape)
        if clip_shape == tuple(self.hparams.clip_shape):
            return self.costs
        if clip_shape not in self._shape_costs:
            self._shape_costs[clip_shape] = self.describe(clip_shape, self.hparams.num_classes)
        return self._shape_costs[clip_shape]

    @property
    def flops_per_batch(self) -> float | None:
        """This process's FLOPs in the latest training batch (what Lightning's ``ThroughputMonitor``
        reads): the global batch's, split over the processes; None outside training."""
        return self.seen.last_flops / self.trainer.world_size if self.trainer.training else None

    def accounting(self) -> dict[str, float]:
        """Cumulative samples, tokens and training FLOPs of all processes (:class:`Accounting`)."""
        return self.seen.values(self.costs, self.text.captions_encoded if self.text is not None else 0)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimiser step, then the EMA updates (and post-hoc EMA snapshots): callbacks
        (ScalingRecorder, ModelCheckpoint) see them all."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.update_ema()
            if self.text is not None:
                self.text.update_average(self.hparams.ema_decay)
        if self.power_ema is not None:
            step = self.trainer.global_step + 1  # Lightning counts this step once the hook returns
            self.power_ema.update(self.denoiser, step)
            if step % self.hparams.ema_snapshot_every == 0 or step == self.trainer.max_steps:
                self.power_ema.save_snapshot(self.trainer.default_root_dir, step, self.trainer.is_global_zero)

    def update_ema(self) -> None:
        """ema <- decay * ema + (1 - decay) * params, in float32, on each process's own shards."""
        self.ema.update(self.denoiser, self.hparams.ema_decay)

    def configure_optimizers(self) -> dict[str, Any]:
        named = [*self.denoiser.named_parameters()]  # and a trained encoder's, at lr:
        named += [(f"text.{n}", p) for n, p in self.text.named_parameters()] if self.text is not None else []
        scales = self.denoiser.learning_rate_scales() if isinstance(self.denoiser, LearningRateScales) else {}
        groups = parameter_groups(named, self.hparams.lr, self.hparams.weight_decay, scales)  # muP: lr / m
        # The fused kernel (CPU and CUDA): one pass over all tensors instead of a Python loop over
        # them, which on CPU is most of a small model's step (U0: 11.7 ms per step looped, 1.3 fused).
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, betas=tuple(self.hparams.betas), fused=True)
        total = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else None
        h = self.hparams
        scheduler = lambda_schedule(
            optimizer, h.lr_schedule, h.warmup_steps, total, h.min_lr_ratio, h.decay_fraction, h.decay_shape
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- validation: the scaling metric -------------------------------------------------------------
    @torch.no_grad()
    def validation_losses(
        self, batch: dict[str, torch.Tensor], clip_ids: list[int]
    ) -> dict[str, torch.Tensor]:
        """Per-clip loss averaged over fixed timesteps with fixed noise, for raw and EMA weights.

        The noise of a clip depends only on (val_seed, its index ``clip_ids[i]`` in the validation
        set), so every evaluation of a run, and every run whatever its batch size or number of
        processes, sees exactly the same inputs.
        """
        x0, y = self.encode(batch)
        text = self.caption_embedding(batch)
        k = self.hparams.val_timesteps
        generators = [torch.Generator().manual_seed(self.hparams.val_seed * 100_003 + c) for c in clip_ids]
        noise = torch.stack([torch.randn((k, *x0.shape[1:]), generator=g) for g in generators], dim=1)
        noise = noise.to(x0.device, x0.dtype)
        objective = self.objective.at_size(x0[0, 0].numel())
        timesteps = objective.validation_timesteps(k).to(x0.device)
        losses = {}
        models = {"raw": self.denoiser, "ema": self.ema} if self.ema is not None else {"raw": self.denoiser}
        for name, model in models.items():
            if name == "ema" and self.text is not None and self.text.ema is not None:
                text = self.caption_embedding(batch, averaged=True)  # the trained encoder's average
            fn = denoiser_fn(model, y, text=text)
            per_t = [objective.loss(fn, x0, noise[i], timesteps[i].expand(x0.shape[0])) for i in range(k)]
            losses[name] = torch.stack(per_t).mean(0)
        return losses

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if "position" in batch:  # a bucketed loader: each clip's index in the validation set
            clip_ids = [int(p) for p in batch["position"]]
        else:
            loader = self.trainer.test_dataloaders if self.trainer.testing else self.trainer.val_dataloaders
            # Under DDP Lightning re-creates the loader around a batch sampler (its batch_size is None).
            batch_size = loader.batch_size or loader.batch_sampler.batch_size
            clip_ids = self.global_positions(batch_idx, batch_size, len(batch["label"]))
        for name, loss in self.validation_losses(batch, clip_ids).items():
            self.log(f"val/loss_{name}", loss.mean(), batch_size=loss.numel(), sync_dist=True)

    test_step = validation_step

    # -- generation -----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        labels: torch.Tensor | None,
        seeds: list[int],
        use_ema: bool = True,
        captions: list[str] | None = None,
    ) -> torch.Tensor:
        """Sample videos (B, C, T, H, W) in [-1, 1], one per seed, for class ``labels`` or ``captions``
        (a text-conditional model), with classifier-free guidance at ``guidance_scale``."""
        use_ema = use_ema and self.ema is not None
        model = self.ema if use_ema else self.denoiser
        noise = torch.stack(
            [torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
        )
        noise = noise.to(self.device)
        classes = self.conditioning_classes(self.hparams.num_classes)
        y = labels.to(self.device).long() if classes and labels is not None else None
        text = None
        if self.encoder is not None:
            if captions is None or len(captions) != len(seeds):
                raise ValueError(
                    "a text-conditional model samples from prompts: give one caption per seed (for predict, "
                    "--data.init_args.prompts, a list or a file of one prompt per line)"
                )
            text = self.caption_embedding({"caption": captions}, averaged=use_ema)
        fn = denoiser_fn(
            model,
            y,
            self.hparams.guidance_scale,
            model.null_class,
            text=text,
            null_caption=model.null_caption,
        )
        objective = self.objective.at_size(noise[0, 0].numel())
        latents = self.sampler.sample(objective, fn, noise, torch.Generator().manual_seed(seeds[0]))
        return self.vae.decode_latents(latents).clamp(-1, 1)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """One video per item: its class label or its prompt (``caption``), with its noise seed."""
        captions = list(batch["caption"]) if "caption" in batch else None
        videos = self.generate(batch["label"], [int(s) for s in batch["seed"]], captions=captions)
        out = {"video": videos, "label": batch["label"], "index": batch["index"]}
        return {**out, "caption": captions} if captions is not None else out

    # -- checkpoint -----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lit_vdit"] = {
            **self.seen.state_dict(),
            "costs": self.costs,
            "vae_fingerprint": self.vae_fingerprint,
            **text_checkpoint_state(self.text),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("lit_vdit", {})
        saved_vae = state.get("vae_fingerprint", self.vae_fingerprint)
        if saved_vae != self.vae_fingerprint:
            trained = state.get("costs", {}).get("latent_shape", "?")
            raise ValueError(
                f"this checkpoint was trained in the latent space of another VAE (latents {trained}) "
                f"than the one configured ({type(self.vae).__name__}, latents "
                f"{list(self.latent_shape) if self.hparams.clip_shape else '?'}); configure the VAE the run "
                f"was trained with (model.init_args.vae_checkpoint: {self.hparams.vae_checkpoint!r} now)"
            )
        restore_text_state(self.text, state)
        self.seen.load_state_dict(
            state, state.get("costs", self.costs), int(checkpoint.get("global_step", 0))
        )
