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
from typing import Any

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
    parser.add_argument(
        "--sweep-frames",
        type=int,
        nargs="+",
        metavar="T",
        help="cost per clip at these frame counts (of the clip's C, H, W) with the attention share",
    )
    parser.add_argument(
        "--vs",
        metavar="MODEL_YAML",
        help="with --sweep-frames: a second model beside (e.g. a U-Net's); "
        "the dotted overrides apply to --model only",
    )
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
    if args.sweep_frames:
        models = {Path(args.model).stem: run.module}
        if args.vs:
            vs_args = [arg if arg != args.model else args.vs for arg in given]
            models[Path(args.vs).stem] = build_run(vs_args, with_data=args.data is not None).module
        rows = frame_sweep(models, info["clip_shape"], info["num_classes"], args.sweep_frames)
        print(json.dumps(rows, indent=2) if args.json else sweep_table(rows, list(models)))
    elif args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:24s} {value:,}" if isinstance(value, int) else f"{key:24s} {value}")
    return 0


def frame_sweep(
    models: dict[str, Any], clip_shape: list[int], num_classes: int, frames: list[int]
) -> list[dict[str, Any]]:
    """Per-clip tokens, forward FLOPs and attention share of each model at each frame count."""
    channels, _, height, width = clip_shape
    rows = []
    for t in frames:
        row: dict[str, Any] = {"frames": t, "clip": f"{channels}x{t}x{height}x{width}"}
        for name, module in models.items():
            costs = module.describe((channels, t, height, width), num_classes)
            attention = costs["flops_attention_forward"] / costs["flops_forward"]
            row[name] = {
                "tokens": costs["tokens_per_sample"],
                "flops": costs["flops_forward"],
                "attention": attention,
            }
        rows.append(row)
    return rows


def sweep_table(rows: list[dict[str, Any]], names: list[str]) -> str:
    """:func:`frame_sweep` as a text table (FLOPs of one forward pass per clip)."""
    header = f"{'frames':>6} {'clip':>12}" + "".join(
        f" {n + ' tokens':>16} {'GFLOPs':>9} {'attn':>6}" for n in names
    )
    if len(names) == 2:
        header += f" {names[1] + '/' + names[0]:>12}"
    lines = [header]
    for row in rows:
        line = f"{row['frames']:>6} {row['clip']:>12}"
        for n in names:
            line += f" {row[n]['tokens']:>16,} {row[n]['flops'] / 1e9:>9.3f} {row[n]['attention']:>6.1%}"
        if len(names) == 2:
            line += f" {row[names[1]]['flops'] / row[names[0]]['flops']:>12.2f}"
        lines.append(line)
    return "\n".join(lines)


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
