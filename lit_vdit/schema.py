"""The columns of the run table, defined once: ``metrics.csv`` (one row per evaluation point of a
run, written by :class:`~lit_vdit.callbacks.ScalingRecorder`) and ``runs.csv`` (every run's rows
with its settings and costs, written by ``experiments.collect``), with units and meaning. The
README's table of columns is rendered from here (a test checks it), and ``lit-vdit analyze`` takes
its default columns from :data:`ANALYSIS_ROLES`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    unit: str
    meaning: str


# metrics.csv: one row per log-spaced evaluation step, in this order.
METRICS: tuple[Column, ...] = (
    Column("step", "optimizer steps", "training step of the evaluation point"),
    Column("samples_seen", "clips", "training clips seen by all processes (D in samples)"),
    Column("tokens_seen", "tokens", "latent tokens (after patchify) seen: D"),
    Column("flops_measured", "FLOPs", "training FLOPs of the denoiser (measured fwd+bwd x samples): C"),
    Column("flops_6nd", "FLOPs", "6 x non-embedding parameters x tokens seen, beside the measured C"),
    Column("flops_vae_encode", "FLOPs", "VAE encoding of clips during training (0 from a latent cache)"),
    Column(
        "flops_text_encoder",
        "FLOPs",
        "text encoder on the training captions: forward if frozen (0 from a caption cache), fwd+bwd if "
        "trained",
    ),
    Column("train_loss", "loss", "mean per-sample training loss of the steps since the previous point"),
    Column("val_loss_raw", "loss", "low-variance validation loss of the raw weights (fixed clips, noise, t)"),
    Column("val_loss_ema", "loss", "the same for the EMA weights (the scaling metric)"),
    Column("lr", "", "learning rate at the point"),
    Column("wall_time_s", "s", "training wall time so far (evaluation excluded)"),
    Column("samples_per_s", "clips/s", "training throughput over the run so far"),
)

# runs.csv: collect adds these to every metrics.csv row (and the video metrics and grid axes below).
RUN_IDENTITY: tuple[Column, ...] = (
    Column("run_id", "", "hash of the run's resolved config (files + overrides)"),
    Column("name", "", "the run's grid point, e.g. preset=T3-seed=0"),
    Column("preset", "", "model size preset"),
    Column("seed", "", "seed_everything of the run"),
)
RUN_COSTS: tuple[Column, ...] = (
    Column("params_total", "parameters", "all denoiser parameters"),
    Column("params_trainable", "parameters", "trained denoiser parameters"),
    Column("params_non_embedding", "parameters", "denoiser parameters less position/class tables: N"),
    Column("flops_forward", "FLOPs", "one forward pass per sample, measured"),
    Column("flops_attention_forward", "FLOPs", "of flops_forward, the attention products (quadratic)"),
    Column("flops_train_step", "FLOPs", "forward + backward of the training loss per sample, measured"),
    Column("activation_bytes", "bytes", "activations a training step saves for backward, per sample (fp32)"),
    Column("activation_bytes_checkpointed", "bytes", "the same with activation checkpointing of the blocks"),
    Column("vae_params", "parameters", "frozen VAE parameters (0 in pixel space)"),
    Column("vae_encode_flops", "FLOPs", "VAE encoding of one clip"),
    Column("text_encoder_params", "parameters", "text encoder parameters (frozen or trained; not in N)"),
    Column("text_encoder_flops", "FLOPs", "text encoder forward of one caption at full length"),
    Column(
        "text_tokens", "tokens", "caption tokens per sample (the encoder's max length; in the denoiser's C)"
    ),
)
RUN_SETTINGS: tuple[Column, ...] = (
    Column("finished", "", "the run reached its max_steps"),
    Column("strategy", "", "Lightning strategy class"),
    Column("precision", "", "Trainer precision"),
    Column("world_size", "processes", "processes the run trained on"),
    Column(
        "peak_lr",
        "",
        "the learning rate the schedule scales (model lr; muP's hidden layers take lr / width multiplier)",
    ),
    Column(
        "global_batch",
        "clips",
        "clips per optimizer step over all processes (a bucketed run: the nominal batch)",
    ),
    Column("hardware", "", "GPU name or cpu:<processor>"),
    Column("python", "", "Python version"),
    Column("torch", "", "torch version"),
    Column("lightning", "", "Lightning version"),
    Column("denoiser", "", "denoiser class (VideoDiT, VideoUNet)"),
    Column("conditioning", "", "class, none, or text-cross / text-joint / text-pooled (the mechanism)"),
    Column("mup_base_width", "", "the width muP anchors the denoiser at (empty: standard parametrisation)"),
    Column("text_encoder", "", "text encoder class (SmallTextEncoder, PretrainedTextEncoder:<model>)"),
    Column("objective", "", "objective class"),
    Column("timestep_shift", "", "rectified flow's timestep shift at the run's clip size (1: none)"),
    Column("bucket_mix", "", "a bucketed run's clip shapes and shares of its clips (4x16x16:0.5,...)"),
)
# Present only in the grids of a mode: IsoFLOP budgets; cooldown branches (experiments.cooldown).
RUN_GRID_MODES: tuple[Column, ...] = (
    Column("flop_budget", "FLOPs", "IsoFLOP budget of the run's grid point (IsoFLOP grids)"),
    Column("branch_of", "", "run_id of the trunk a cooldown branch resumed from (cooldown grids)"),
    Column("branch_step", "optimizer steps", "the trunk's step the branch resumed from: its cooldown start"),
    Column("flops_shared", "FLOPs", "training FLOPs of the steps before branch_step, paid once by the trunk"),
)
# Present only for runs whose post-hoc EMA was evaluated and recorded (`lit-vdit posthoc-ema --record`).
RUN_POSTHOC: tuple[Column, ...] = (
    Column("val_loss_posthoc_ema", "loss", "validation loss of the best post-hoc EMA length, at its step"),
    Column("posthoc_sigma_rel", "", "that EMA's relative length sigma_rel (EDM2)"),
)
RUN_OPTIONAL: tuple[Column, ...] = RUN_GRID_MODES + RUN_POSTHOC
VIDEO_METRICS_NOTE = (
    "Video metrics joined at their steps: `<metric>` (fvd, fid, kid, ...), `<metric>_std` where defined, "
    "`<metric>_protocol` (protocol id); grid axes as `axis_<name>`."
)
RUNS: tuple[Column, ...] = RUN_IDENTITY + METRICS + RUN_COSTS + RUN_SETTINGS + RUN_OPTIONAL

# Default columns of each analysis role for `lit-vdit analyze` (N, D, C, the fitted metric, ...).
ANALYSIS_ROLES: dict[str, str] = {
    "N": "params_non_embedding",
    "D": "tokens_seen",
    "C": "flops_measured",
    "y": "val_loss_ema",
    "run": "run_id",
    "step": "step",
    "budget": "flop_budget",
}


def names(columns: tuple[Column, ...]) -> list[str]:
    return [c.name for c in columns]


def markdown_table() -> str:
    """The README's table of the runs.csv columns."""
    rows = [f"| `{c.name}` | {c.unit} | {c.meaning} |" for c in RUNS]
    return "\n".join(["| column | unit | meaning |", "| --- | --- | --- |", *rows, "", VIDEO_METRICS_NOTE])
