"""Does text condition the video? A caption-conditioned DiT against the same DiT without captions.

Trains the demo's T3 (configs/model/dit_text_demo.yaml: a word-level encoder trained with it) on the
synthetic clips' captions for ``--steps`` steps, once per text mechanism (cross / joint / pooled),
once with every caption withheld (caption dropout 1: the same network, unconditioned) and once
class-conditioned (configs/model/dit_demo.yaml, 16 classes = shape x motion) for reference: same
seed, data (4x16x16 clips, patch 1x4x4, batch 32), steps and schedule (lr 1e-2, 50 warm-up steps,
cosine). Prints each run's final validation loss (64 fixed clips, noise and timesteps; raw and EMA
weights). Then samples one video per prompt for 32 prompts (8 colours x 4 shape / motion /
background phrases) with guidance 1 and ``--guidance`` and counts the videos whose colour, read by a
pixel probe (lit_vdit.data.synthetic.dominant_colour), is the prompt's (chance: about 1 in 8).

    python benchmarks/bench_text_guidance.py [--out runs/bench_text] [--steps 2000] [--guidance 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lit_vdit.cli import main as cli_main
from lit_vdit.data.synthetic import PALETTE, dominant_colour
from lit_vdit.posthoc import load_run

PHRASES = (  # a shape, its motion, and a background
    "circle moving right, slow, on a navy background",
    "square bouncing, fast, on a grey background",
    "ring circling clockwise, slow, on a forest background",
    "triangle moving up, fast, on a maroon background",
)
COMMON = [
    "--data", "configs/data/synthetic.yaml", "--trainer", "configs/trainer/cpu.yaml",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    "--seed_everything", "0", "--data.init_args.val_clips", "64", "--data.init_args.frames", "4",
    "--data.init_args.height", "16", "--data.init_args.width", "16", "--data.init_args.batch_size", "32",
    "--model.init_args.denoiser.init_args.patch_size", "[1, 4, 4]", "--model.init_args.lr", "1e-2",
    "--model.init_args.lr_schedule", "cosine", "--model.init_args.warmup_steps", "50",
]  # fmt: skip


def train(out: Path, name: str, steps: int, model: str, extra: list[str]) -> Path:
    run = out / name
    result = run / "result.json"
    if not (result.is_file() and json.loads(result.read_text()).get("finished")):  # rerun: resume
        last = run / "checkpoints" / "last.ckpt"
        resume = ["--ckpt_path", str(last)] if last.is_file() else []
        cli_main(["fit", "--model", model, *COMMON, *extra, "--trainer.default_root_dir", str(run),
                  "--trainer.max_steps", str(steps), *resume])  # fmt: skip
    return run


def colour_agreement(run: Path, prompts: list[str], guidance: float) -> int:
    cli = load_run(run)
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    cli.model.load_state_dict(state)
    cli.model.hparams.guidance_scale = guidance
    videos = cli.model.generate(None, list(range(len(prompts))), use_ema=True, captions=prompts)
    return sum(dominant_colour(v) == p.split()[1] for v, p in zip(videos, prompts, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_text")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--mechanisms", nargs="+", default=["cross", "joint", "pooled"])
    args = parser.parse_args(argv)
    out = Path(args.out)
    text = "configs/model/dit_text_demo.yaml"
    mechanism = "--model.init_args.denoiser.init_args.text_conditioning"
    runs = {f"text-{m}": train(out, f"text_{m}", args.steps, text, [mechanism, m]) for m in args.mechanisms}
    withheld = ["--model.init_args.denoiser.init_args.caption_dropout_prob", "1.0"]
    runs["captions withheld"] = train(out, "no_text", args.steps, text, withheld)
    runs["class (16)"] = train(out, "class", args.steps, "configs/model/dit_demo.yaml", [])
    print(f"T3, {args.steps} steps, batch 32, 4x16x16 clips: final validation loss (raw / EMA)")
    for name, run in runs.items():
        final = json.loads((run / "result.json").read_text())["final"]
        print(f"  {name:18s} {final['val_loss_raw']:.4f} / {final['val_loss_ema']:.4f}")
    prompts = [f"a {colour} {phrase}" for colour in PALETTE for phrase in PHRASES]
    print(f"colour of the video = colour of the prompt ({len(prompts)} prompts, EMA weights, pixel probe):")
    for name, run in runs.items():
        if name.startswith("text") or name == "captions withheld":
            counts = [colour_agreement(run, prompts, g) for g in (1.0, args.guidance)]
            n = len(prompts)
            print(f"  {name:18s} guidance 1: {counts[0]}/{n}, guidance {args.guidance:g}: {counts[1]}/{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
