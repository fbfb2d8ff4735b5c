"""How a run is built from its configs: the one path every caller takes.

``lit-vdit fit | validate | test | predict`` and ``eval`` run :func:`lightning_cli` (LightningCLI with
lit_vdit's defaults, :class:`VDiTCLI`); callers that only need a run's parts and costs without training
(``info``, grid planning, benchmarks, the demo) call :func:`build_run`, which resolves the same
config files and dotted overrides with the same parser, builds the module and the DataModule and
reads the trainer settings without building a Trainer (so a GPU config resolves on a machine
without GPUs, a SLURM login node).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import warnings
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lit_vdit.checkpoint_io import AtomicCheckpointIO
from lit_vdit.data import VideoDataModule
from lit_vdit.parallel import sequence_degree


class _NoTips(logging.Filter):
    """Drops Lightning's advertising tips ("💡 Tip: ... try installing litlogger / litmodels"), logged at
    INFO on every Trainer; its other messages pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoTips())
# Lightning 2.6's pytree helper uses torch.utils._pytree.LeafSpec, deprecated in torch 2.14: a notice
# about Lightning's code, not about the run.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's INFO lines ("Seed set to", "GPU available", "Loaded model weights") off while
    building a run or reading a finished one in-process (eval, samples); its warnings still show, but
    for the request to pass the training run's callbacks with ``ckpt_path``, whose state a run read
    for evaluation or sampling does not need."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def given_model_keys(args: list[str]) -> set[str]:
    """Top-level model settings named on a command line: ``--model.init_args.lr 1e-3`` -> ``lr``."""
    keys = set()
    for arg in args:
        name = arg.split("=", 1)[0]
        if name.startswith("--model."):
            path = name.removeprefix("--model.").removeprefix("init_args.")
            keys.add(path.split(".", 1)[0])
    return keys


class VDiTCLI(LightningCLI):
    """LightningCLI with lit_vdit's defaults: any LightningModule / VideoDataModule by class_path.

    A run writes everything under ``trainer.default_root_dir``: unless the config names its own
    loggers and checkpoint folder, TensorBoard logs go to ``tensorboard/``, Lightning's CSV log to
    ``csv/`` and checkpoints to ``checkpoints/``, written atomically. The progress bar is Rich's
    unless disabled.

    With ``--ckpt_path``, LightningCLI puts the model settings saved in the checkpoint in place of
    the configured ones (a resumed run needs no model config). Here a model setting given explicitly
    on the command line (``--model.init_args.KEY``) still wins: a cooldown branch resumes a
    constant-rate trunk's state with its own WSD schedule (:mod:`experiments.cooldown`).
    """

    def _parse_ckpt_path(self) -> None:
        # Lightning 2.6's LightningCLI._parse_ckpt_path, less the explicitly given keys.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
        hparams.pop("_instantiator", None)
        for key in given_model_keys(sys.argv[1:]):  # _cli makes sys.argv the parsed arguments
            hparams.pop(key, None)
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        if hparams:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> L.Trainer:
        root = Path(config.get("default_root_dir") or ".")
        if config.get("logger") in (None, True):
            config["logger"] = [
                TensorBoardLogger(root, name="tensorboard", version=""),
                CSVLogger(root, name="csv", version=""),
            ]
        if not config.get("plugins"):
            config["plugins"] = [AtomicCheckpointIO()]
        configured = list(config.get("callbacks") or []) + list(callbacks)
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in configured
        ):
            callbacks = [*callbacks, RichProgressBar()]
        trainer = super()._instantiate_trainer(config, callbacks)
        for callback in trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(root / "checkpoints")
        return trainer


def _cli(cli_class: type[VDiTCLI], args: list[str], argv: list[str], **kwargs: Any) -> VDiTCLI:
    """``cli_class`` (VDiTCLI or a subclass) on ``args`` with lit_vdit's parser settings, while
    ``sys.argv`` is ``argv``."""
    kwargs.setdefault("datamodule_class", VideoDataModule)
    saved, sys.argv = sys.argv, argv
    try:
        with warnings.catch_warnings():
            # The DiffusionModule keeps its frozen VAE in eval mode by design; Lightning's notice of
            # modules in eval mode at the start of fit is about such modules only.
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
            return cli_class(
                L.LightningModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                # When sys.argv already holds the arguments, LightningCLI parses them from there: given
                # both, it warns with every argument repeated twice.
                args=None if argv[1:] == list(args) else args,
                parser_kwargs={"parser_mode": "omegaconf"},
                **kwargs,
            )
    finally:
        sys.argv = saved


def lightning_cli(args: list[str], run: bool = True, save_config: bool = True) -> VDiTCLI:
    """LightningCLI on ``args`` (a subcommand and its options when ``run``); ``save_config`` writes
    the resolved config.yaml into the run directory (off for commands that only read a run)."""
    # While it runs, sys.argv says the same as ``args``: Lightning's launcher starts the other
    # processes of a multi-device run by re-running sys.argv.
    return _cli(
        VDiTCLI,
        args,
        [sys.argv[0], *args],
        run=run,
        save_config_callback=SaveConfigCallback if save_config else None,
        save_config_kwargs={"overwrite": True},
    )


class _BuildingCLI(VDiTCLI):
    """Builds the model and the DataModule of a run's config, not its Trainer."""

    def instantiate_trainer(self, **kwargs: Any) -> None:
        return None


@dataclasses.dataclass
class RunBuild:
    """A run's parts as its configs define them.

    Attributes:
        module: the LightningModule (a DiffusionModule, a VAEModule...).
        datamodule: the VideoDataModule, or None when the config names none.
        config: the resolved config; ``config.trainer`` holds the trainer settings.
    """

    module: L.LightningModule
    datamodule: VideoDataModule | None
    config: Namespace

    @property
    def trainer(self) -> Namespace:
        return self.config.trainer

    @cached_property
    def costs(self) -> dict[str, Any]:
        """Parameters and per-sample FLOPs (:meth:`DiffusionModule.describe`) for the module's own
        clip shape and classes if it has them, else the DataModule's."""
        hparams = self.module.hparams
        if hparams.get("clip_shape") is not None and hparams.get("num_classes") is not None:
            return self.module.describe(tuple(hparams.clip_shape), int(hparams.num_classes))
        if self.datamodule is None:
            raise ValueError(
                "the run's costs need a clip shape and classes: give a data config (--data) or the model's "
                "clip_shape and num_classes"
            )
        return self.module.describe(self.datamodule.clip_shape, self.datamodule.num_classes)

    @property
    def shape(self) -> tuple[int, int, str]:
        """(nodes, devices per node, accelerator): :func:`trainer_shape` of the trainer settings."""
        return trainer_shape(self.trainer)

    @property
    def world_size(self) -> int:
        nodes, devices, _ = self.shape
        return nodes * devices

    @property
    def global_batch(self) -> int:
        """Clips per optimizer step over all processes and accumulated micro-batches."""
        degree = sequence_degree(self.trainer.strategy)
        if self.world_size % degree:
            raise ValueError(
                f"sequence_parallel_size {degree} does not divide the {self.world_size} processes: choose a "
                "degree that divides devices x nodes"
            )
        replicas = self.world_size // degree  # a sequence group reads one batch
        return self.datamodule.global_batch(replicas, int(self.trainer.accumulate_grad_batches or 1))


def build_run(args: list[str], with_data: bool = True) -> RunBuild:
    """A run's ``fit`` arguments (config files + dotted overrides) built into a :class:`RunBuild`;
    ``with_data=False`` for a model config alone (its clip shape and classes among its arguments)."""
    with quiet_lightning():
        cli = _cli(
            _BuildingCLI,
            args,
            sys.argv[:1],  # the arguments come from ``args`` alone
            datamodule_class=VideoDataModule if with_data else None,
            seed_everything_default=False,  # builds and measures, trains nothing: seeds only if asked
            run=False,
        )
    return RunBuild(cli.model, cli.datamodule if with_data else None, cli.config)


def trainer_shape(trainer: Any) -> tuple[int, int, str]:
    """(nodes, devices per node, accelerator) of a resolved trainer config (``resolve_run().config.trainer``).

    ``devices`` may be a count, a list or comma-separated string of device ids, or ``auto`` / -1,
    which counts this machine's GPUs (one process on CPU): give a number when planning GPU jobs
    on a machine without GPUs.
    """
    accelerator = str(trainer.accelerator)
    devices = trainer.devices
    if isinstance(devices, str) and "," in devices:
        devices = [d for d in devices.split(",") if d.strip()]
    if isinstance(devices, list | tuple):
        count = len(devices)
    elif str(devices).lstrip("-").isdigit() and int(devices) != -1:
        count = int(devices)
    elif accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        count = 1
    elif torch.cuda.is_available():
        count = torch.cuda.device_count()
    else:
        raise ValueError(
            f"trainer.devices is {devices!r} with accelerator {accelerator!r} and this machine has no GPU to "
            f"count: give the number of devices per node (--trainer.devices 8, or a `devices` grid axis)"
        )
    if count < 1:
        raise ValueError(f"trainer.devices must name at least one device, got {trainer.devices!r}")
    return int(trainer.num_nodes), count, accelerator
