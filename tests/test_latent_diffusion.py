"""The DiffusionModule in the latent space of a trained VAE: frozen, its FLOPs apart, other VAEs refused."""

import json
import os
from functools import partial
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy
from test_vae import vae_checkpoint

from lit_vdit.cli import main as cli_main
from lit_vdit.models.dit import VideoDiT
from lit_vdit.models.vae import load_frozen_vae
from lit_vdit.modules import DiffusionModule

TINY = [
    "--model", "configs/model/dit_demo.yaml", "--data", "configs/data/synthetic.yaml",
    "--trainer", "configs/trainer/cpu.yaml", "--seed_everything", "0",
    "--model.init_args.denoiser.init_args.preset", "T0",
    "--model.init_args.denoiser.init_args.patch_size", "[1, 2, 2]",
    "--model.init_args.val_timesteps", "2",
    "--data.init_args.frames", "4", "--data.init_args.height", "16", "--data.init_args.width", "16",
    "--data.init_args.num_clips", "16", "--data.init_args.val_clips", "4", "--data.init_args.batch_size", "4",
    "--trainer.enable_progress_bar", "false",
]  # fmt: skip


def fit(out, *extra: str):
    cli_main(["fit", *TINY, "--trainer.default_root_dir", str(out), *extra])
    return out


def test_fit_in_latent_space_reports_vae_flops_apart_and_resumes(repo_root, tmp_path):
    os.chdir(repo_root)
    ckpt = vae_checkpoint(tmp_path / "vae.ckpt", seed=0)
    run = fit(tmp_path / "run", "--model.init_args.vae_checkpoint", ckpt, "--trainer.max_steps", "2")
    costs = json.loads((run / "result.json").read_text())["costs"]
    assert costs["latent_shape"] == [4, 4, 8, 8]  # 2x spatial compression, 4 latent channels
    assert costs["vae_params"] == sum(p.numel() for p in load_frozen_vae(ckpt).parameters())
    assert costs["vae_encode_flops"] > 0 and costs["vae_decode_flops"] > 0
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["step"]) == [1, 2]
    assert list(metrics["flops_vae_encode"]) == list(metrics["samples_seen"] * costs["vae_encode_flops"])
    assert list(metrics["flops_measured"]) == list(metrics["samples_seen"] * costs["flops_train_step"])

    # The checkpoint holds the frozen VAE unchanged by training; resuming continues both counters.
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    for key, value in load_frozen_vae(ckpt).state_dict().items():
        assert torch.equal(state["state_dict"][f"vae.{key}"], value), key
    fit(run, "--model.init_args.vae_checkpoint", ckpt, "--trainer.max_steps", "3",
        "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))  # fmt: skip
    last = pd.read_csv(run / "metrics.csv").iloc[-1]
    assert last["step"] == 3 and last["flops_vae_encode"] == 12 * costs["vae_encode_flops"]


def test_other_vae_or_unfit_clips_are_refused_with_the_fix(repo_root, tmp_path):
    os.chdir(repo_root)
    ckpt = vae_checkpoint(tmp_path / "vae.ckpt", seed=0)
    run = fit(tmp_path / "run", "--model.init_args.vae_checkpoint", ckpt, "--trainer.max_steps", "1")
    last = run / "checkpoints" / "last.ckpt"
    other = vae_checkpoint(tmp_path / "other.ckpt", seed=1, latent_channels=8)
    denoiser = partial(VideoDiT, preset="T0", patch_size=(1, 2, 2))
    wrong = r"another VAE \(latents \[4, 4, 8, 8\]\).*CausalVideoVAE, latents \[8, 4, 8, 8\]"
    with pytest.raises(ValueError, match=wrong):
        DiffusionModule.load_from_checkpoint(last, denoiser=denoiser, vae_checkpoint=other)
    with pytest.raises(ValueError, match=r"another VAE.*IdentityVAE, latents \[3, 4, 16, 16\]"):
        DiffusionModule.load_from_checkpoint(last, denoiser=denoiser, vae_checkpoint=None)
    # A resume takes the VAE path from the checkpoint's hyperparameters: a file retrained since is refused.
    os.replace(other, ckpt)
    with pytest.raises(ValueError, match=wrong):
        fit(run, "--trainer.max_steps", "2", "--ckpt_path", str(last))
    causal = vae_checkpoint(tmp_path / "causal.ckpt", seed=0, temporal_compression=2)
    with pytest.raises(ValueError, match=r"4x16x16 \(TxHxW\) does not fit a 2x2x2 VAE: frames must be 1 \+"):
        fit(tmp_path / "causal", "--model.init_args.vae_checkpoint", causal, "--trainer.max_steps", "1")
    with pytest.raises(FileNotFoundError, match="does not exist; train one"):
        DiffusionModule(denoiser, vae_checkpoint=str(tmp_path / "missing.ckpt"))
    with pytest.raises(ValueError, match="either vae or vae_checkpoint"):
        DiffusionModule(denoiser, vae=load_frozen_vae(causal), vae_checkpoint=causal)


def test_samples_are_decoded_by_the_vae(tmp_path):
    ckpt = vae_checkpoint(tmp_path / "vae.ckpt", seed=0)
    module = DiffusionModule(
        partial(VideoDiT, preset="T0", patch_size=(1, 2, 2)),
        vae_checkpoint=ckpt,
        clip_shape=(3, 4, 16, 16),
        num_classes=16,
    )
    assert module.latent_shape == (4, 4, 8, 8) and not any(p.requires_grad for p in module.vae.parameters())
    videos = module.generate(torch.tensor([0, 1]), seeds=[0, 1])
    assert videos.shape == (2, 3, 4, 16, 16) and videos.abs().max() <= 1


def test_fsdp1_on_several_devices_refuses_a_vae_with_weights(tmp_path):
    module = DiffusionModule(
        partial(VideoDiT, preset="T0", patch_size=(1, 2, 2)),
        vae_checkpoint=vae_checkpoint(tmp_path / "vae.ckpt", seed=0),
        clip_shape=(3, 4, 16, 16),
        num_classes=16,
    )
    module._trainer = SimpleNamespace(datamodule=None, strategy=FSDPStrategy(), world_size=2)
    with pytest.raises(ValueError, match="FSDPStrategy on several devices.*fsdp2_gpu.yaml"):
        module.configure_model()
    module._trainer.world_size = 1  # one device: nothing is sharded
    module.configure_model()
