"""The ``lit-vdit`` command.

``fit | validate | test | predict`` go through LightningCLI with the YAMLs in ``configs/``
(``--config``, ``--model``, ``--data``, ``--trainer``, ``--print_config``, class_path/init_args).
The other subcommands are registered as entry points (pyproject.toml, group ``lit_vdit.commands``):
``info`` prints a model's parameters and FLOPs without training, ``eval`` computes FVD / FID of a
checkpoint, ``posthoc-ema`` evaluates EMAs of any length reconstructed from a run's snapshots,
``cache-latents`` encodes a dataset once with a frozen VAE and ``cache-captions`` its captions once with a
frozen text encoder (this package); ``grid``,
``demo`` and ``bench`` come from ``experiments`` and ``analyze`` from ``analysis``, which sit above
or beside this package and are never imported by it.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from lit_vdit.build import build_run, lightning_cli

COMMANDS = "lit_vdit.commands"  # entry-point group of the subcommands beside LightningCLI's


def info_main(argv: list[str]) -> int:
    """``lit-vdit info``: a model's parameters and per-sample FLOPs, measured without training."""
    parser = argparse.ArgumentParser(prog="lit-vdit info", description=info_main.__doc__)
    parser.add_argument(
        "--model", required=True, help="model YAML (class_path/init_args of a DiffusionModule)"
    )
    parser.add_argument("--data", help="data YAML whose clips to measure for (instead of --clip-shape)")
    parser.add_argument(
        "--clip-shape", type=int, nargs=4, metavar=("C", "T", "H", "W"), help="video clip shape"
    )
    parser.add_argument("--num-classes", type=int, help="number of classes (0: unconditional)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args, overrides = parser.parse_known_args(argv)
    if not Path(args.model).is_file():
        raise SystemExit(f"lit-vdit info: model config {args.model!r} not found (try configs/model/*.yaml)")
    given = ["--model", args.model, *(["--data", args.data] if args.data else [])]
    if args.clip_shape is not None:
        given += ["--model.init_args.clip_shape", json.dumps(args.clip_shape)]
    if args.num_classes is not None:
        given += ["--model.init_args.num_classes", str(args.num_classes)]
    run = build_run([*given, *overrides], with_data=args.data is not None)
    try:
        info = run.costs
    except ValueError as error:
        raise SystemExit(f"lit-vdit info: {error} (--clip-shape C T H W --num-classes N)") from error
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:24s} {value:,}" if isinstance(value, int) else f"{key:24s} {value}")
    return 0


def registered_commands() -> dict[str, EntryPoint]:
    """The subcommands installed packages register (entry points of the group ``lit_vdit.commands``):
    lit_vdit's own (info, eval, posthoc-ema, cache-latents, cache-captions) and those of the layers above
    it (grid, demo, bench, analyze), which this dispatcher loads by name only, never imports."""
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
