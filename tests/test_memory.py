"""Training memory: activations measured on the meta device, checked against a measured CPU step."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.grid import load_spec
from experiments.plan import plan
from lit_vdit.diffusion import RectifiedFlow
from lit_vdit.flops import denoiser_costs
from lit_vdit.memory import GIB, peak_training_bytes, step_bytes
from lit_vdit.models.dit import VideoDiT

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_memory.py"  # its --measure


def costs(frames, preset="T5"):
    shape = (4, frames, 32, 32)
    return denoiser_costs(lambda: VideoDiT(shape, num_classes=16, preset=preset), RectifiedFlow(), shape, 16)


def test_activations_grow_linearly_with_tokens_as_fused_attention_keeps_no_scores():
    two, eight = costs(2), costs(8)
    assert eight["activation_bytes"] / two["activation_bytes"] == pytest.approx(4, rel=0.05)
    assert two["activation_bytes_checkpointed"] < two["activation_bytes"] / 3


@pytest.mark.parametrize("checkpointed", [False, True])
def test_the_estimated_step_memory_matches_a_measured_cpu_step(checkpointed):
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    command = [
        sys.executable,
        str(BENCHMARK),
        "--measure",
        "T5",
        "4",
        "32",
        "1",
        "1" if checkpointed else "0",
        "1",
    ]
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    measured = json.loads(out.stdout)
    estimated = step_bytes(costs(4), 1, activation_checkpointing=checkpointed)
    # eager: the estimate measured 1.01x on this machine; checkpointed it is an upper bound (0.83x)
    assert 0.7 * estimated <= measured <= 1.15 * estimated


def test_peak_memory_counts_states_over_shards_and_halves_bf16_activations():
    c = costs(4)
    one = peak_training_bytes(c, 8, ema=True)
    assert peak_training_bytes(c, 8, ema=False) == one - 4 * c["params_trainable"]
    assert peak_training_bytes(c, 8, shards=2) < one
    assert step_bytes(c, 8, precision="bf16-mixed") == pytest.approx(step_bytes(c, 8) / 2, rel=0.01)
    assert step_bytes(c, 8, sequence_parallel=2) == pytest.approx(step_bytes(c, 8) / 2, rel=0.01)


def test_the_dry_run_plans_peak_memory_per_run(repo_root):
    planned = plan(load_spec(f"{repo_root}/experiments/demo.yaml"))
    for _, info in planned:
        assert info["est_peak_gib"] * GIB == pytest.approx(peak_training_bytes(info, 16, ema=False), rel=1e-6)
    assert planned[0][1]["activation_bytes"] > 0


def test_a_sequence_parallel_grid_plans_one_batch_per_group_and_a_share_of_the_activations(
    tmp_path, repo_root
):
    spec = tmp_path / "sp.yaml"
    spec.write_text(
        f"name: sp\nbase: {{model: {repo_root}/configs/model/dit_demo.yaml, data: {repo_root}/configs/data/"
        f"synthetic.yaml, trainer: {repo_root}/configs/trainer/sp_cpu.yaml, overrides: {{batch_size: 4, "
        "model.init_args.denoiser.init_args.preset: T1}}\naxes: {seed: [0]}\n"
    )
    ((_, info),) = plan(load_spec(spec))
    assert info["sequence_parallel"] == 2 and info["shards"] == 2 and info["global_batch"] == 4
    assert info["est_peak_gib"] * GIB == pytest.approx(
        peak_training_bytes(info, 4, shards=2, ema=True, sequence_parallel=2), rel=1e-6
    )
