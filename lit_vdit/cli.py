"""The ``lit-vdit`` command.

``fit | validate | test | predict`` go through LightningCLI with the YAMLs in ``configs/``
(``--config``, ``--model``, ``--data``, ``--trainer``, ``--print_config``, class_path/init_args).
The other subcommands are registered as entry points (pyproject.toml, group ``lit_vdit.commands``):
``info`` prints a model's parameters and FLOPs without training, ``eval`` computes FVD / FID of a
checkpoint and ``cache-latents`` encodes a dataset once with a frozen VAE (this package); ``grid``,
``demo`` and ``bench`` come from ``experiments`` and ``analyze`` from ``analysis``, which sit above
or beside this package and are never imported by it.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lit_vdit.checkpoint_io import AtomicCheckpointIO
from lit_vdit.data import VideoDataModule

COMMANDS = "lit_vdit.commands"  # entry-point group of the subcommands beside LightningCLI's


class VDiTCLI(LightningCLI):
    """LightningCLI with lit_vdit's defaults: any LightningModule / VideoDataModule by class_path.

    A run writes everything under ``trainer.default_root_dir``: unless the config names its own
    loggers and checkpoint folder, TensorBoard logs go to ``tensorboard/``, Lightning's CSV log to
    ``csv/`` and checkpoints to ``checkpoints/``, written atomically. The progress bar is Rich's
    unless disabled.
    """

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


def lightning_cli(args: list[str], run: bool = True, save_config: bool = True) -> VDiTCLI:
    """LightningCLI on ``args`` (a subcommand and its options when ``run``); ``save_config`` writes
    the resolved config.yaml into the run directory (off for commands that only read a run)."""
    # While it runs, sys.argv says the same as ``args``: Lightning's launcher starts the other
    # processes of a multi-device run by re-running sys.argv.
    saved, sys.argv = sys.argv, [sys.argv[0], *args]
    try:
        return VDiTCLI(
            L.LightningModule,
            VideoDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            run=run,
            save_config_callback=SaveConfigCallback if save_config else None,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"parser_mode": "omegaconf"},
        )
    finally:
        sys.argv = saved


class _ResolvingCLI(VDiTCLI):
    """Builds the model and the DataModule of a run's config, not its Trainer."""

    def instantiate_trainer(self, **kwargs: Any) -> None:
        return None


def resolve_run(args: list[str]) -> VDiTCLI:
    """A run's ``fit`` arguments (config files + overrides) resolved: ``.config`` (with ``.config.trainer``),
    ``.model`` and ``.datamodule``. The Trainer is not built, so a GPU run's config resolves on a machine
    without GPUs (a SLURM login node)."""
    saved, sys.argv = sys.argv, sys.argv[:1]  # the arguments come from ``args`` alone
    try:
        return _ResolvingCLI(
            L.LightningModule,
            VideoDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            run=False,
            parser_kwargs={"parser_mode": "omegaconf"},
        )
    finally:
        sys.argv = saved


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


def load_model_config(path: str) -> dict[str, Any]:
    """A model YAML: ``class_path`` + ``init_args`` (or the same under a top-level ``model`` key)."""
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"lit-vdit info: model config {path!r} not found (try configs/model/*.yaml)")
    config = yaml.safe_load(file.read_text())
    config = config.get("model", config) if isinstance(config, dict) else config
    if not isinstance(config, dict) or "class_path" not in config:
        raise SystemExit(f"lit-vdit info: {path} is not a model config with class_path/init_args")
    return config


def model_info(
    config: dict[str, Any], clip_shape: list[int] | None, num_classes: int | None
) -> dict[str, Any]:
    """Parameters and per-sample FLOPs of a DiffusionModule config, measured without training."""
    init_args = dict(config.get("init_args", {}))
    clip_shape = clip_shape or init_args.pop("clip_shape", None)
    num_classes = num_classes if num_classes is not None else init_args.pop("num_classes", None)
    init_args.pop("clip_shape", None), init_args.pop("num_classes", None)
    if clip_shape is None or num_classes is None:
        raise SystemExit(
            "lit-vdit info: give the input with --clip-shape C T H W and --num-classes N (or in the config)"
        )
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningModule, "model")
    cfg = parser.parse_object({"model": {"class_path": config["class_path"], "init_args": init_args}})
    module = parser.instantiate_classes(cfg).model
    return module.describe(tuple(clip_shape), int(num_classes))


def info_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lit-vdit info", description=model_info.__doc__)
    parser.add_argument(
        "--model", required=True, help="model YAML (class_path/init_args of a DiffusionModule)"
    )
    parser.add_argument(
        "--clip-shape", type=int, nargs=4, metavar=("C", "T", "H", "W"), help="video clip shape"
    )
    parser.add_argument("--num-classes", type=int, help="number of classes (0: unconditional)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    info = model_info(load_model_config(args.model), args.clip_shape, args.num_classes)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:24s} {value:,}" if isinstance(value, int) else f"{key:24s} {value}")
    return 0


def registered_commands() -> dict[str, EntryPoint]:
    """The subcommands installed packages register (entry points of the group ``lit_vdit.commands``):
    lit_vdit's own (info, eval, cache-latents) and those of the layers above it (grid, demo, bench,
    analyze), which this dispatcher loads by name only, never imports."""
    return {ep.name: ep for ep in entry_points(group=COMMANDS)}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else ""
    commands = registered_commands()
    if command in commands:
        return commands[command].load()(args[1:])
    if command in ("", "-h", "--help"):
        print(f"lit-vdit {{fit,validate,test,predict}} (LightningCLI) or {{{','.join(sorted(commands))}}}")
    lightning_cli(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
