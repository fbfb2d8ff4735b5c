"""Strategies on CPU: 2-process DDP and FSDP2 (also with compiled, checkpointed blocks) reproduce a
single-process run; FSDP2 checkpoints resume.

Multi-process runs are ``lit-vdit fit`` with configs/trainer/{ddp,fsdp2}_cpu.yaml, started as
``tests/parallel_run.py`` so that Lightning's launcher can re-run the command for the second process.
The global batch is the same in every run (4 clips: 4 x 1 process, 2 x 2 processes). Timesteps and
noise are drawn per sample from its position in the run, so runs differ only by floating-point
reduction order: per-step train losses and validation losses agree to ``RTOL``. Label dropout is on
(``class_dropout_prob: 0.5``): its mask is drawn per sample in the same way (checked directly below).
"""

import json
import subprocess
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml
from lightning.pytorch.strategies import DDPStrategy
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from lit_vdit.callbacks import validation_batches
from lit_vdit.data import SyntheticDataModule
from lit_vdit.data.buckets import BucketSampler
from lit_vdit.models.dit import VideoDiT
from lit_vdit.models.layers import LabelEmbedder
from lit_vdit.modules import DiffusionModule

REPO = Path(__file__).resolve().parents[1]
RTOL = 1e-4
STEPS = 6
GLOBAL_BATCH = 4
TINY = [
    "--seed_everything",
    "0",
    "--model",
    "configs/model/dit_demo.yaml",
    "--model.init_args.denoiser.init_args.preset",
    "T0",
    "--model.init_args.denoiser.init_args.class_dropout_prob",
    "0.5",
    "--model.init_args.ema_decay",
    "0.9",
    "--model.init_args.val_timesteps",
    "4",
    "--data",
    "configs/data/synthetic.yaml",
    "--data.init_args.frames",
    "4",
    "--data.init_args.height",
    "16",
    "--data.init_args.width",
    "16",
    "--data.init_args.num_clips",
    "24",
    "--data.init_args.val_clips",
    "6",  # 3 batches of 2 for 2 processes: one process pads (sharded forwards are collective)
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.log_every_n_steps",
    "1",
]


AC = ["--model.init_args.activation_checkpointing", "true"]


def trainer_config(name: str, out: Path) -> Path:
    """configs/trainer/<name>.yaml evaluating at steps 1 and max_steps and checkpointing every 3 steps."""
    config = yaml.safe_load((REPO / "configs" / "trainer" / f"{name}.yaml").read_text())
    for callback in config["callbacks"]:
        if callback["class_path"].endswith("ScalingRecorder"):
            callback["init_args"]["eval_points"] = 2
        if callback["class_path"].endswith("ModelCheckpoint"):
            callback["init_args"]["every_n_train_steps"] = 3
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def fit(out: Path, trainer: str, processes: int, steps: int = STEPS, *extra: str) -> Path:
    command = [
        sys.executable,
        "tests/parallel_run.py",
        "fit",
        "--trainer",
        str(trainer_config(trainer, out)),
        "--trainer.max_steps",
        str(steps),
        "--trainer.default_root_dir",
        str(out),
        *TINY,
        "--data.init_args.batch_size",
        str(GLOBAL_BATCH // processes),
        *extra,
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def step_losses(run: Path) -> pd.Series:
    """Per-step train loss of the global batch, as logged by Lightning (``train/loss``)."""
    logged = pd.read_csv(run / "csv" / "metrics.csv").dropna(subset=["train/loss"])
    return logged.groupby("step")["train/loss"].last()


def final_state(checkpoint: Path, out: Path) -> dict[str, torch.Tensor]:
    """Full model state of a distributed (FSDP2) checkpoint folder, gathered into one file."""
    dcp_to_torch_save(checkpoint, out)
    return torch.load(out, weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run as one process, as DDP and as FSDP2 on 2 processes (made on first use)."""
    root = tmp_path_factory.mktemp("strategies")
    settings = {
        "single": ("cpu", 1),
        "ddp": ("ddp_cpu", 2),
        "fsdp2": ("fsdp2_cpu", 2),
        # each block checkpointed, then compiled, then sharded: the order parallelize applies them
        "fsdp2_compiled": ("fsdp2_cpu", 2, STEPS, *AC, "--model.init_args.compile", "aot_eager"),
    }
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = fit(root / name, *settings[name])
        return made[name]

    return get


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2", "fsdp2_compiled"])
def test_two_processes_give_the_single_process_loss_curve(runs, strategy):
    single, parallel = runs("single"), runs(strategy)
    expected, got = step_losses(single), step_losses(parallel)
    assert list(got.index) == list(expected.index) and len(got) == STEPS
    assert torch.allclose(torch.tensor(got.values), torch.tensor(expected.values), rtol=RTOL, atol=0)
    a, b = pd.read_csv(single / "metrics.csv"), pd.read_csv(parallel / "metrics.csv")
    assert list(b["step"]) == list(a["step"]) == [1, STEPS]
    assert list(b["samples_seen"]) == list(a["samples_seen"]) == [GLOBAL_BATCH, GLOBAL_BATCH * STEPS]
    for column in ("train_loss", "val_loss_raw", "val_loss_ema"):
        assert torch.allclose(torch.tensor(b[column].values), torch.tensor(a[column].values), rtol=RTOL)
    result = json.loads((parallel / "result.json").read_text())
    assert result["world_size"] == 2 and result["finished"]


def test_fsdp2_checkpoint_resumes_the_same_run_with_its_ema(runs, tmp_path):
    """Train 3 steps, stop, resume to 6: losses, weights and EMA equal the uninterrupted run's."""
    uninterrupted = runs("fsdp2")
    resumed = fit(tmp_path / "resumed", "fsdp2_cpu", 2, 3)
    checkpoint = resumed / "checkpoints" / "last.ckpt"
    assert (checkpoint / "meta.pt").is_file() and (checkpoint / "__1_0.distcp").is_file()
    assert checkpoint.is_symlink() and checkpoint.resolve().name == "last.ckpt-step3"
    at_3 = final_state(checkpoint, tmp_path / "at_3.pt")
    assert any(key.startswith("ema.module.blocks.") for key in at_3)
    before = step_losses(resumed)  # Lightning's CSVLogger starts its file afresh on resume
    # The second part also recomputes block activations in backward, which must change nothing.
    fit(resumed, "fsdp2_cpu", 2, STEPS, "--ckpt_path", str(checkpoint), *AC)
    # last.ckpt is swapped atomically to a fresh folder per save; the step-3 folder is gone.
    assert checkpoint.is_symlink() and checkpoint.resolve().name == f"last.ckpt-step{STEPS}"
    assert not (resumed / "checkpoints" / "last.ckpt-step3").exists()

    expected, got = step_losses(uninterrupted), pd.concat([before, step_losses(resumed)])
    assert list(got.index) == list(expected.index)
    assert torch.allclose(torch.tensor(got.values), torch.tensor(expected.values), rtol=RTOL, atol=0)
    a, b = pd.read_csv(uninterrupted / "metrics.csv"), pd.read_csv(resumed / "metrics.csv")
    assert list(b["step"]) == [1, 3, STEPS] and b["samples_seen"].iloc[-1] == GLOBAL_BATCH * STEPS
    for column in ("val_loss_raw", "val_loss_ema"):
        assert b[column].iloc[-1] == pytest.approx(a[column].iloc[-1], rel=RTOL)
    # Weights and EMA after the resume equal those of the uninterrupted run, and the EMA had moved.
    want = final_state(uninterrupted / "checkpoints" / "last.ckpt", tmp_path / "want.pt")
    have = final_state(checkpoint, tmp_path / "have.pt")
    for key in want:
        assert torch.allclose(have[key], want[key], rtol=RTOL, atol=1e-6), key
    assert any(not torch.equal(at_3[key], have[key]) for key in have if key.startswith("ema.module.blocks."))


def test_noise_and_label_dropout_depend_on_the_sample_not_the_process():
    """What training_noise draws for a sample equals across world sizes; labels are dropped from it."""
    module = DiffusionModule(
        partial(VideoDiT, preset="T0", patch_size=(1, 4, 4), class_dropout_prob=0.5),
        clip_shape=(3, 4, 16, 16),
        num_classes=16,
    )
    assert module.label_dropout == (0.5, 16)
    assert not any(m.random_drop for m in module.denoiser.modules() if isinstance(m, LabelEmbedder))

    def draws(replicas: int, rank: int, batch: int) -> list[torch.Tensor]:
        strategy = DDPStrategy(parallel_devices=[torch.device("cpu")] * replicas)
        strategy.set_world_ranks = lambda: None
        strategy.cluster_environment = SimpleNamespace(global_rank=lambda: rank)
        module._trainer = SimpleNamespace(accumulate_grad_batches=1, global_step=3, strategy=strategy)
        x0 = torch.zeros(batch, 3, 4, 16, 16)
        return module.training_noise(x0, module.batch_positions({}, 3, batch))  # global batch 3

    single, rank0, rank1 = draws(1, 0, 4), draws(2, 0, 2), draws(2, 1, 2)
    for one, *two in zip(single, rank0, rank1, strict=True):
        # Sample i of rank r is sample 2 * i + r of the global batch.
        assert torch.equal(one, torch.stack([two[0][0], two[1][0], two[0][1], two[1][1]]))
    uniform = draws(1, 0, 64)[2]
    assert 0.2 < (uniform < 0.5).float().mean() < 0.8  # about half of the labels would be dropped


def dealing(replicas: int, rank: int) -> DDPStrategy:
    """A strategy whose data-parallel share is (replicas, rank), unlaunched."""

    class Dealt(DDPStrategy):
        @property
        def distributed_sampler_kwargs(self) -> dict[str, int]:
            return {"num_replicas": replicas, "rank": rank}

    return Dealt()


@pytest.mark.parametrize(("clips", "world"), [(6, 2), (7, 3), (2, 3)])
def test_validation_clips_are_dealt_once_each_in_equal_numbers_of_batches(clips, world):
    data = SyntheticDataModule(num_clips=4, val_clips=clips, frames=2, height=8, width=8, batch_size=2)
    data.setup()
    counted, lengths = [], set()
    for rank in range(world):
        trainer = SimpleNamespace(datamodule=data, strategy=dealing(world, rank))
        batches = list(validation_batches(trainer))
        lengths.add(len(batches))
        for batch, clip_ids, count in batches:
            assert len(clip_ids) == len(batch["label"])
            counted += clip_ids if count else []
    assert sorted(counted) == list(range(clips)) and len(lengths) == 1


def test_a_bucketed_run_on_two_processes_is_the_single_process_run(tmp_path):
    """Global batches of one shape each, dealt to the processes: the loss curve, the per-shape
    accounting and the validation over every bucket of one process."""

    def buckets(processes: int) -> str:
        shapes = [
            {"frames": 4, "height": 16, "width": 16, "batch_size": 4},
            {"frames": 2, "height": 16, "width": 24},
        ]
        return json.dumps([{**s, "batch_size": s.get("batch_size", 8) // processes} for s in shapes])

    single = fit(tmp_path / "single", "cpu", 1, STEPS, "--data.init_args.buckets", buckets(1))
    ddp = fit(tmp_path / "ddp", "ddp_cpu", 2, STEPS, "--data.init_args.buckets", buckets(2))
    expected, got = step_losses(single), step_losses(ddp)
    assert torch.allclose(torch.tensor(got.values), torch.tensor(expected.values), rtol=RTOL, atol=0)
    a, b = pd.read_csv(single / "metrics.csv"), pd.read_csv(ddp / "metrics.csv")
    for column in ("samples_seen", "tokens_seen", "flops_measured"):
        assert b[column].tolist() == a[column].tolist(), column
    for column in ("train_loss", "val_loss_raw"):
        assert torch.allclose(torch.tensor(b[column].values), torch.tensor(a[column].values), rtol=RTOL)
    assert json.loads((ddp / "result.json").read_text())["bucket_mix"] == "4x16x16:0.5,2x16x24:0.5"


def test_a_packed_run_on_two_processes_counts_every_process_pack(tmp_path):
    """Packs of clips of several shapes, one per process and step (they differ): the accounting sums
    what every process read, as the sampler planned it, and the run trains."""
    shapes = [{"frames": 4, "height": 16, "width": 16}, {"frames": 2, "height": 16, "width": 24}]
    args = ("--data.init_args.buckets", json.dumps(shapes), "--data.init_args.pack_positions", "2560")
    ddp = fit(
        tmp_path / "ddp",
        "ddp_cpu",
        2,
        STEPS,
        *args,
        "--model.init_args.denoiser.init_args.patch_size",
        "[1, 4, 4]",
    )
    data = SyntheticDataModule(num_clips=24, buckets=shapes, pack_positions=2560)
    sampler = BucketSampler(list(range(24)), data.buckets, 2, 0, 0, pack_positions=2560)
    steps = [batch for epoch in range(4) for batch in sampler.plan(epoch)][:STEPS]
    assert len({len(batch.shares[0]) for batch in steps} | {len(batch.shares[1]) for batch in steps}) > 1
    metrics = pd.read_csv(ddp / "metrics.csv")
    assert metrics["samples_seen"].tolist() == [len(steps[0].clips), sum(len(b.clips) for b in steps)]
    positions = {0: 4 * 16 * 16 // 16, 1: 2 * 16 * 24 // 16}  # tokens of a clip of each bucket
    assert metrics["tokens_seen"].iloc[-1] == sum(positions[b] for batch in steps for b in batch.buckets)
    assert metrics["train_loss"].notna().all() and metrics["val_loss_raw"].notna().all()


SP = ["--model.init_args.denoiser.init_args.preset", "T1"]  # 2 heads: one per process


TWO_BUCKETS = [{"frames": 4, "height": 16, "width": 16}, {"frames": 2, "height": 16, "width": 24}]
PACKS = [
    "--data.init_args.buckets", json.dumps(TWO_BUCKETS), "--data.init_args.pack_positions", "2560",
    "--model.init_args.denoiser.init_args.patch_size", "[1, 4, 4]",
]  # fmt: skip


@pytest.mark.parametrize("layout", [[], PACKS], ids=["batches", "packs"])
def test_sequence_parallel_run_is_the_single_process_run_and_resumes_to_it(tmp_path, layout):
    """Degree 2 on 2 processes: each computes half of every clip's tokens (Ulysses); the loss curve and
    accounting are the single-process run's to 1e-6 (batches, and packs of clips of two buckets), and
    stopped at step 3 and resumed it is the same run. (Every layout and conditioning at the model level:
    tests/test_sequence_parallel.py.)"""
    single = fit(tmp_path / "single", "cpu", 1, STEPS, *SP, *layout)
    sp = fit(tmp_path / "sp", "sp_cpu", 1, STEPS, *SP, *layout)
    expected, got = step_losses(single), step_losses(sp)
    assert list(got.index) == list(expected.index) and len(got) == STEPS
    assert torch.allclose(torch.tensor(got.values), torch.tensor(expected.values), rtol=1e-6, atol=0)
    a, b = pd.read_csv(single / "metrics.csv"), pd.read_csv(sp / "metrics.csv")
    for column in ("samples_seen", "tokens_seen", "flops_measured"):
        assert b[column].tolist() == a[column].tolist(), column
    for column in ("val_loss_raw", "val_loss_ema"):
        assert torch.allclose(torch.tensor(b[column].values), torch.tensor(a[column].values), rtol=1e-6)
    result = json.loads((sp / "result.json").read_text())
    assert result["strategy"] == "SequenceParallelStrategy" and result["global_batch"] == GLOBAL_BATCH
    if layout:
        return
    resumed = fit(tmp_path / "resumed", "sp_cpu", 1, 3, *SP)
    before = step_losses(resumed)
    fit(resumed, "sp_cpu", 1, STEPS, *SP, "--ckpt_path", str(resumed / "checkpoints" / "last.ckpt"))
    got = pd.concat([before, step_losses(resumed)])
    assert torch.allclose(torch.tensor(got.values), torch.tensor(step_losses(sp).values), rtol=1e-6, atol=0)


def test_sequence_parallel_degrees_that_do_not_divide_are_refused():
    from lit_vdit.parallel import SequenceParallelStrategy

    strategy = SequenceParallelStrategy(sequence_parallel_size=2)  # one process, unlaunched
    with pytest.raises(ValueError, match="sequence_parallel_size 2 does not divide the 1 processes"):
        strategy.setup_environment()
    model = VideoDiT((3, 4, 16, 16), num_classes=4, preset="T0", patch_size=(2, 4, 4))  # 1 head
    with pytest.raises(ValueError, match="num_heads 1 is not divisible by 2"):
        model.check_sequence_degree(2)


def test_sequence_parallelism_refuses_a_denoiser_without_tokens():
    from lit_vdit.models.unet import VideoUNet
    from lit_vdit.parallel import parallelize

    unet = VideoUNet((3, 4, 16, 16), num_classes=4, preset="U0")
    with pytest.raises(ValueError, match="VideoUNet has no token sequence to split"):
        parallelize(unet, SimpleNamespace(), sequence_parallel=True)
