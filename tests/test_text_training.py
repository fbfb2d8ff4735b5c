"""Text-to-video training: caption-conditioned runs through the CLI, their accounting and records,
the caption cache of a frozen encoder, and generation from prompts."""

import json
import os

import pandas as pd
import pytest
import torch
from test_text import hf_folders  # noqa: F401 - the fixture

from lit_vdit.cli import main
from lit_vdit.data import SyntheticDataModule
from lit_vdit.data.caption_cache import CaptionCache, build_caption_cache
from lit_vdit.models.dit import VideoDiT
from lit_vdit.models.hf_text import PretrainedTextEncoder
from lit_vdit.models.text import SmallTextEncoder, encode_captions
from lit_vdit.modules import DiffusionModule

TINY = [
    "--data.init_args.num_clips", "16",
    "--data.init_args.val_clips", "4",
    "--data.init_args.frames", "2",
    "--data.init_args.height", "16",
    "--data.init_args.width", "16",
    "--data.init_args.batch_size", "4",
    "--model.init_args.denoiser.init_args.preset", "T0",
    "--model.init_args.denoiser.init_args.patch_size", "[1, 4, 4]",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]  # fmt: skip


def text_args(out, *extra):
    return [
        "--model", "configs/model/dit_text_demo.yaml",
        "--data", "configs/data/synthetic.yaml",
        "--trainer", "configs/trainer/cpu.yaml",
        "--trainer.default_root_dir", str(out),
        *TINY,
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("mechanism", ["cross", "joint"])
def test_a_caption_conditioned_run_records_its_conditioning_and_text_costs(repo_root, tmp_path, mechanism):
    os.chdir(repo_root)
    extra = ["--model.init_args.denoiser.init_args.text_conditioning", mechanism]
    main(["fit", *text_args(tmp_path, *extra), "--trainer.max_steps", "4"])
    result = json.loads((tmp_path / "result.json").read_text())
    costs = result["costs"]
    assert result["conditioning"] == f"text-{mechanism}" and result["text_encoder"].startswith(
        "SmallTextEncoder"
    )
    assert costs["text_tokens"] == 16 and costs["text_encoder_params"] > 0
    assert 0 < costs["text_encoder_flops"] < costs["text_encoder_flops_train"]
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    last = metrics.iloc[-1]
    assert last["flops_text_encoder"] == 16 * costs["text_encoder_flops_train"]  # 16 captions, trained
    assert last["flops_measured"] == 16 * costs["flops_train_step"]  # the denoiser's C, apart
    # The trained encoder is in the checkpoint; a resumed run continues with it.
    main(["fit", *text_args(tmp_path, *extra), "--trainer.max_steps", "6", "--ckpt_path", "last"])
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("text.trained.") for k in state) and any(k.startswith("text.ema.") for k in state)
    assert pd.read_csv(tmp_path / "metrics.csv")["step"].iloc[-1] == 6


def test_predict_writes_one_video_per_prompt(repo_root, tmp_path):
    os.chdir(repo_root)
    main(["fit", *text_args(tmp_path), "--trainer.max_steps", "2"])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left, fast\n\na blue ring bouncing, slow\n")
    main(
        [
            "predict",
            *text_args(tmp_path),
            "--ckpt_path", str(tmp_path / "checkpoints" / "last.ckpt"),
            "--data.init_args.prompts", str(prompts),
            "--model.init_args.sampler.init_args.steps", "2",
        ]
    )  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "samples").glob("*.mp4"))
    assert names == [
        "sample_00000_a_red_circle_moving_left_fast.mp4",
        "sample_00001_a_blue_ring_bouncing_slow.mp4",
    ]


def _module(encoder) -> DiffusionModule:
    torch.manual_seed(0)
    factory = lambda shape, classes, text_dim=None: VideoDiT(
        shape, classes, "T0", patch_size=(1, 4, 4), text_dim=text_dim
    )
    return DiffusionModule(
        factory, text_encoder=encoder, clip_shape=(3, 2, 16, 16), num_classes=16, ema_decay=0
    )


def test_caption_cache_gives_the_frozen_encoders_embeddings_and_refuses_another(hf_folders, tmp_path):  # noqa: F811
    encoder = PretrainedTextEncoder(str(hf_folders["t5"]), max_length=12)
    data = SyntheticDataModule(num_clips=12, val_clips=4, frames=2, height=16, width=16, batch_size=4)
    data.setup("fit")
    captions = data.split_captions("train") + data.split_captions("val")
    # An interrupted build (first chunk only) resumes to the same cache.
    with pytest.raises(ZeroDivisionError):
        build_caption_cache(
            captions, _Failing(encoder, after=1), tmp_path / "cache", batch_size=4, dtype="float32"
        )
    with pytest.raises(ValueError, match="unfinished"):
        CaptionCache(tmp_path / "cache")
    meta = build_caption_cache(captions, encoder, tmp_path / "cache", batch_size=4, dtype="float32")
    assert meta["written"] == len(set(captions))
    cached = SyntheticDataModule(
        num_clips=12,
        val_clips=4,
        frames=2,
        height=16,
        width=16,
        batch_size=4,
        caption_cache=str(tmp_path / "cache"),
    )
    cached.setup("fit")
    batch = next(iter(cached.val_dataloader()))
    fresh = encode_captions(encoder, batch["caption"], torch.device("cpu"))
    assert torch.allclose(batch["text_tokens"], fresh.tokens, atol=1e-6) and torch.equal(
        batch["text_mask"], fresh.mask
    )
    module = _module(encoder)
    cached.check_text_encoder(module.encoder)
    from_cache = module.validation_losses(batch, [0, 1, 2, 3])["raw"]
    on_the_fly = module.validation_losses(
        {k: v for k, v in batch.items() if not k.startswith("text_")}, [0, 1, 2, 3]
    )
    assert torch.allclose(from_cache, on_the_fly["raw"], rtol=1e-6)
    other = PretrainedTextEncoder(str(hf_folders["t5"]), max_length=10)
    with pytest.raises(
        ValueError, match=r"made by PretrainedTextEncoder:t5:t5 \(max length 12.*max length 10"
    ):
        cached.check_text_encoder(other)
    with pytest.raises(ValueError, match="trainable parameters"):
        build_caption_cache(captions, SmallTextEncoder(), tmp_path / "small")


class _Failing(torch.nn.Module):
    """A text encoder that fails after ``after`` batches: an interrupted cache build."""

    def __init__(self, encoder, after: int) -> None:
        super().__init__()
        self.encoder, self.calls, self.after = encoder, 0, after
        self.dim, self.max_length, self.name = encoder.dim, encoder.max_length, encoder.name

    def tokenize(self, captions):
        return self.encoder.tokenize(captions)

    def fingerprint(self):
        return self.encoder.fingerprint()

    def forward(self, ids, mask):
        self.calls += 1
        if self.calls > self.after:
            raise ZeroDivisionError("killed")
        return self.encoder(ids, mask)


def test_evaluation_generates_from_the_real_clips_captions_and_records_them():
    from lit_vdit.evaluation import generated_clips, run_protocol

    data = SyntheticDataModule(num_clips=8, val_clips=3, frames=2, height=16, width=16, batch_size=4)
    data.setup("fit")
    module = _module(SmallTextEncoder(dim=16, max_length=8))
    module.sampler.steps = 2
    protocol = run_protocol(module, data, num_videos=4)
    assert protocol.prompts and "prompts" in protocol.to_dict()
    assert run_protocol(module, data, num_videos=2).id != protocol.id  # another prompt set
    captions = data.split_captions("val")
    seen = []
    module.generate = lambda labels, seeds, use_ema=True, captions=None: (
        seen.append(captions) or torch.zeros(len(seeds), 3, 2, 16, 16)
    )
    list(generated_clips(module, [0, 1, 2, 3], 2, prompts=captions))
    assert seen == [captions[:2], [captions[2], captions[0]]]  # the real clips' captions in turn
    class_module = DiffusionModule(
        lambda shape, classes: VideoDiT(shape, classes, "T0", patch_size=(1, 4, 4)),
        clip_shape=(3, 2, 16, 16),
        num_classes=16,
    )
    assert "prompts" not in run_protocol(class_module, data, num_videos=4).to_dict()  # ids as before
