"""End-to-end: `lit-vdit fit / predict / validate / info` through LightningCLI on CPU."""

import json
import os
import stat
from functools import partial

import lightning as L
import pandas as pd
import pytest
import torch

from lit_vdit.callbacks import ModelCheckpoint, ScalingRecorder, log_spaced_steps
from lit_vdit.cli import main
from lit_vdit.data import SyntheticDataModule
from lit_vdit.models.dit import VideoDiT
from lit_vdit.modules import DiffusionModule
from lit_vdit.schema import METRICS, names

TINY = [
    "--model.init_args.denoiser.init_args.preset",
    "T0",
    "--data.init_args.frames",
    "4",
    "--data.init_args.height",
    "16",
    "--data.init_args.width",
    "16",
    "--data.init_args.num_clips",
    "32",
    "--data.init_args.val_clips",
    "8",
    "--data.init_args.batch_size",
    "4",
    "--data.init_args.num_predict",
    "2",
]


CONFIGS = ["--model", "configs/model/dit_demo.yaml", "--data", "configs/data/synthetic.yaml"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1"]


def run_args(out):
    return [
        *CONFIGS,
        "--trainer",
        "configs/trainer/cpu.yaml",
        "--trainer.default_root_dir",
        str(out),
        *QUIET,
        *TINY,
    ]


def fit(repo_root, out, *extra):
    os.chdir(repo_root)
    main(["fit", *run_args(out), "--trainer.max_steps", "6", *extra])


def test_fit_writes_metrics_result_logs_checkpoint_and_is_deterministic(repo_root, tmp_path):
    saved_umask = os.umask(0o022)
    try:
        fit(repo_root, tmp_path / "a", "--seed_everything", "7")
    finally:
        os.umask(saved_umask)
    for name in ("metrics.csv", "result.json", "checkpoints/last.ckpt"):  # readable in shared folders
        assert stat.S_IMODE(os.stat(tmp_path / "a" / name).st_mode) == 0o644, name
    fit(repo_root, tmp_path / "b", "--seed_everything", "7")
    a = pd.read_csv(tmp_path / "a" / "metrics.csv")
    b = pd.read_csv(tmp_path / "b" / "metrics.csv")
    assert list(a["step"]) == log_spaced_steps(6, 8) == [1, 2, 3, 4, 5, 6]
    assert list(a.columns) == names(METRICS)  # every column of the schema, in its order
    assert {
        "samples_seen",
        "tokens_seen",
        "flops_measured",
        "flops_6nd",
        "val_loss_raw",
        "val_loss_ema",
    } <= set(a.columns)
    assert a["samples_seen"].iloc[-1] == 24 and a["tokens_seen"].iloc[-1] == 24 * 2 * 4 * 4
    pd.testing.assert_series_equal(a["val_loss_raw"], b["val_loss_raw"])
    pd.testing.assert_series_equal(a["train_loss"], b["train_loss"])
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert result["finished"] and result["final"]["step"] == 6
    assert result["costs"]["flops_train_step"] * 24 == result["final"]["flops_measured"]
    assert (tmp_path / "a" / "checkpoints" / "last.ckpt").is_file()
    assert any((tmp_path / "a" / "tensorboard").iterdir())
    assert (tmp_path / "a" / "csv" / "metrics.csv").is_file()


def test_last_checkpoint_holds_the_final_step_between_periodic_saves(tmp_path):
    module = DiffusionModule(partial(VideoDiT, preset="T0", patch_size=(1, 4, 4)), clip_shape=(3, 4, 16, 16),
                             num_classes=16)  # fmt: skip
    data = SyntheticDataModule(num_clips=16, val_clips=4, frames=4, height=16, width=16, batch_size=4)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=3)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=5,
        callbacks=[checkpoint],
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data)
    assert (tmp_path / "epoch=0-step=3.ckpt").is_file()
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 5


class StopAt(L.Callback):
    """Raises before training step ``step``: a crash between two checkpoints."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def recorded_run(
    out,
    max_steps: int,
    *extra: L.Callback,
    ckpt_path: str | None = None,
    accumulate: int = 1,
    num_clips: int = 32,
    buckets: list[dict] | None = None,
) -> pd.DataFrame:
    """T0 on tiny clips, evaluated at steps 1 and 6, checkpointed every 3 steps, as the CLI would.
    The global batch is 4 clips, in ``accumulate`` micro-batches."""
    L.seed_everything(0)
    module = DiffusionModule(partial(VideoDiT, preset="T0", patch_size=(1, 4, 4)), val_timesteps=2)
    data = SyntheticDataModule(
        num_clips=num_clips,
        val_clips=4,
        frames=4,
        height=16,
        width=16,
        batch_size=4 // accumulate,
        buckets=buckets,
    )
    recorder = ScalingRecorder(eval_points=2, out_dir=str(out))
    checkpoint = ModelCheckpoint(dirpath=out, save_last=True, every_n_train_steps=3)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        accumulate_grad_batches=accumulate,
        callbacks=[recorder, checkpoint, *extra],
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return pd.read_csv(out / "metrics.csv")


def test_resumed_run_averages_the_same_train_losses_as_an_uninterrupted_one(tmp_path):
    expected = recorded_run(tmp_path / "a", 6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        recorded_run(tmp_path / "b", 6, StopAt(5))  # crashes after the checkpoint at step 3
    got = recorded_run(tmp_path / "b", 6, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert list(got["step"]) == list(expected["step"]) == [1, 6]
    # Step 6's train loss is the mean over steps 2..6, steps 2-3 of them from before the crash.
    assert got["train_loss"].tolist() == pytest.approx(expected["train_loss"].tolist(), rel=1e-6)
    assert got["samples_seen"].tolist() == expected["samples_seen"].tolist()


@pytest.mark.parametrize("num_clips", [8, 12])
def test_a_run_resumed_after_its_first_epoch_is_the_uninterrupted_run(tmp_path, num_clips):
    """The checkpoint of step 3 is in the middle of epoch 1 (8 clips: 2 batches an epoch), or at the
    end of epoch 0 (12 clips: 3 batches). The resumed loader must continue epoch 1's order: it used to
    read epoch 0's order in the first case and to skip epoch 1 in the second."""
    expected = recorded_run(tmp_path / "a", 6, num_clips=num_clips)
    with pytest.raises(RuntimeError, match="simulated crash"):
        recorded_run(tmp_path / "b", 6, StopAt(5), num_clips=num_clips)
    got = recorded_run(tmp_path / "b", 6, ckpt_path=str(tmp_path / "b" / "last.ckpt"), num_clips=num_clips)
    for column in ("train_loss", "val_loss_raw", "val_loss_ema"):
        assert got[column].tolist() == pytest.approx(expected[column].tolist(), rel=1e-6, abs=0), column


def test_a_run_on_buckets_resumes_to_the_uninterrupted_run(tmp_path):
    """Shapes, clips, noise and the per-shape accounting continue where the checkpoint left them."""
    buckets = [
        {"frames": 4, "height": 16, "width": 16, "batch_size": 2},
        {"frames": 1, "height": 16, "width": 16},
    ]
    expected = recorded_run(tmp_path / "a", 6, num_clips=24, buckets=buckets)
    with pytest.raises(RuntimeError, match="simulated crash"):
        recorded_run(tmp_path / "b", 6, StopAt(5), num_clips=24, buckets=buckets)
    got = recorded_run(
        tmp_path / "b", 6, ckpt_path=str(tmp_path / "b" / "last.ckpt"), num_clips=24, buckets=buckets
    )
    for column in ("train_loss", "samples_seen", "tokens_seen", "flops_measured"):
        assert got[column].tolist() == pytest.approx(expected[column].tolist(), rel=1e-6, abs=0), column
    assert expected["samples_seen"].iloc[-1] < 24  # batches of 2 clips (4x16x16) and of 4 images


def test_train_loss_is_the_mean_sample_loss_whatever_the_gradient_accumulation(tmp_path):
    """4 clips a step as one batch or as 2 micro-batches of 2: the same samples, noise and updates,
    so the same recorded train losses (Lightning's outputs["loss"] is divided by the accumulation)."""
    whole = recorded_run(tmp_path / "k1", 6)
    accumulated = recorded_run(tmp_path / "k2", 6, accumulate=2)
    assert accumulated["samples_seen"].tolist() == whole["samples_seen"].tolist() == [4, 24]
    assert accumulated["train_loss"].tolist() == pytest.approx(whole["train_loss"].tolist(), rel=1e-4)
    assert accumulated["val_loss_raw"].tolist() == pytest.approx(whole["val_loss_raw"].tolist(), rel=1e-4)


def test_evaluation_steps_are_log_spaced_and_end_at_max_steps():
    steps = log_spaced_steps(10_000, 9)
    assert steps[0] == 1 and steps[-1] == 10_000 and len(steps) == 9
    ratios = [b / a for a, b in zip(steps[1:], steps[2:], strict=False)]
    assert max(ratios) / min(ratios) < 1.1


def test_predict_writes_videos_and_validate_reports_losses(repo_root, tmp_path):
    fit(repo_root, tmp_path)
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    common = [*run_args(tmp_path), "--ckpt_path", ckpt, "--model.init_args.sampler.init_args.steps", "3"]
    main(["predict", *common])
    videos = sorted((tmp_path / "samples").glob("*.mp4"))
    assert len(videos) == 2 and all(v.stat().st_size > 0 for v in videos)
    import av

    with av.open(str(videos[0])) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 4 and frames[0].width == 16
    main(["validate", *common])
    logged = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert logged["val/loss_raw"].notna().any() and logged["val/loss_ema"].notna().any()


def test_unknown_config_key_is_a_clear_error(repo_root, tmp_path, capsys):
    with pytest.raises(SystemExit):
        fit(repo_root, tmp_path, "--model.init_args.learning_rate", "0.1")
    assert "learning_rate" in capsys.readouterr().err


def test_nan_loss_stops_with_advice(repo_root, tmp_path):
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(repo_root, tmp_path, "--model.init_args.lr", "1e30", "--model.init_args.warmup_steps", "0")


def test_info_prints_params_and_flops_as_json(repo_root, capsys):
    os.chdir(repo_root)
    main(
        [
            "info",
            "--model",
            "configs/model/dit_demo.yaml",
            "--clip-shape",
            "3",
            "8",
            "32",
            "32",
            "--num-classes",
            "16",
            "--json",
        ]
    )
    info = json.loads(capsys.readouterr().out)
    assert info["tokens_per_sample"] == 4 * 8 * 8
    assert info["params_total"] > info["params_trainable"] > 0
    assert info["flops_train_step"] > 2.5 * info["flops_forward"] > 0


def test_every_subcommand_is_registered_and_loads():
    """`lit-vdit` finds the subcommands of every layer through entry points, importing none of them."""
    from lit_vdit.cli import registered_commands

    commands = registered_commands()
    assert set(commands) == {
        "info",
        "eval",
        "posthoc-ema",
        "cache-latents",
        "cache-captions",
        "grid",
        "demo",
        "bench",
        "analyze",
    }
    for entry in commands.values():
        assert callable(entry.load())


def test_readme_layout_names_every_module(repo_root):
    """The README's Layout section matches the tree: every module of the three packages is named."""
    from pathlib import Path

    readme = Path(repo_root, "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    missing = [
        str(path.relative_to(repo_root))
        for package in ("lit_vdit", "experiments", "analysis")
        for path in sorted(Path(repo_root, package).rglob("*.py"))
        if not path.name.startswith("__") and f"`{path.name}`" not in layout
    ]
    assert not missing, f"README Layout does not name {missing}"


def test_readme_table_of_columns_is_the_schema(repo_root):
    from pathlib import Path

    from lit_vdit.schema import markdown_table

    readme = Path(repo_root, "README.md").read_text()
    block = readme.split("<!-- schema:begin -->\n")[1].split("\n<!-- schema:end -->")[0]
    assert block == markdown_table(), "README's table drifted: paste lit_vdit.schema.markdown_table()"


def test_analysis_defaults_are_the_schema_roles():
    """analysis imports nothing of ours, so its default columns are checked against the schema here."""
    import dataclasses

    from analysis.data import Columns
    from lit_vdit.schema import ANALYSIS_ROLES, RUNS, names

    defaults = {k: v for k, v in dataclasses.asdict(Columns()).items() if v is not None}
    assert defaults == ANALYSIS_ROLES
    assert set(ANALYSIS_ROLES.values()) <= set(names(RUNS))


def test_a_run_log_has_no_tips_nor_repeated_arguments_nor_dependency_notices(repo_root, tmp_path):
    """What a grid's run writes to its log.txt: Lightning's advertising tips, LightningCLI's warning
    that repeats every argument, and torch/torchdata/Lightning deprecation notices about their own code
    are gone at their source; a real warning (an unknown argument) would still fail loudly."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "lit_vdit.cli", "fit", *run_args(tmp_path), "--trainer.max_steps", "2"],
        cwd=repo_root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    log = done.stdout + done.stderr
    for noise in ("Tip:", "args parameter is intended", "set_vital", "LeafSpec", "in eval mode at the start"):
        assert noise not in log, noise
    assert "`Trainer.fit` stopped: `max_steps=2` reached." in log  # Lightning's INFO lines still show
