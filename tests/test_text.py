"""Text conditioning: encoders (a small trainable one, frozen Hugging Face T5 / CLIP from a local
folder), the conditioning mechanisms of both denoiser families, padding masks and text guidance."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from lit_vdit.diffusion import RectifiedFlow, denoiser_fn
from lit_vdit.flops import denoiser_costs
from lit_vdit.models.dit import VideoDiT
from lit_vdit.models.hf_text import PretrainedTextEncoder
from lit_vdit.models.text import SmallTextEncoder, TextEmbedding, TextEncoder, encode_captions
from lit_vdit.models.unet import VideoUNet

CAPTIONS = ["a red circle moving left, fast", "a blue square bouncing, slow, with 2 other shapes"]
CPU = torch.device("cpu")


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Zero-initialised branches (adaLN-Zero, cross-attention outputs) made non-zero, so that every
    path of the model affects its output."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    return model


def _padded_pair(dim: int = 32) -> tuple[TextEmbedding, TextEmbedding]:
    """The same captions encoded at 12 and at 24 tokens (more padding)."""
    short = SmallTextEncoder(dim=dim, max_length=12)
    long = SmallTextEncoder(dim=dim, max_length=24)
    long.load_state_dict(short.state_dict())
    return encode_captions(short, CAPTIONS, CPU), encode_captions(long, CAPTIONS, CPU)


def test_small_encoder_tokens_start_pad_and_truncate():
    words = SmallTextEncoder(max_length=6)
    ids, mask = words.tokenize(["A red circle", "one two three four five six seven"])
    assert ids.shape == (2, 6) and (ids[:, 0] == SmallTextEncoder.START).all()
    assert mask.tolist() == [[True] * 4 + [False] * 2, [True] * 6]
    assert words.token_ids("a RED circle") == words.token_ids("a red circle")  # lower-cased words
    assert len(SmallTextEncoder(tokens="byte", max_length=64).token_ids("héllo")) == 1 + 6  # UTF-8 bytes
    assert isinstance(words, TextEncoder)
    with pytest.raises(ValueError, match="tokens must be"):
        SmallTextEncoder(tokens="chars")


def test_padding_does_not_change_the_encoding():
    short, long = _padded_pair()
    assert torch.allclose(short.tokens, long.tokens[:, :12], atol=1e-6)
    assert long.tokens[:, 12:].abs().max() == 0 and not long.mask[:, 12:].any()


@pytest.mark.parametrize("position", ["sincos", "rope"])
@pytest.mark.parametrize("mechanism", ["cross", "joint", "pooled"])
def test_dit_output_ignores_padding_and_depends_on_the_caption(mechanism, position):
    short, long = _padded_pair()
    model = _perturbed(
        VideoDiT((4, 2, 8, 8), 0, "T1", text_dim=32, text_conditioning=mechanism, position=position)
    )
    x, t = torch.randn(2, 4, 2, 8, 8, generator=torch.Generator().manual_seed(1)), torch.rand(2)
    out = model(x, t, None, short)
    assert torch.allclose(out, model(x, t, None, long), atol=1e-5)  # padded caption: same output
    assert (out - model(x, t, None, short.dropped())).abs().max() > 1e-4  # the null caption differs
    swapped = TextEmbedding(short.tokens.flip(0), short.mask.flip(0))
    assert (out - model(x, t, None, swapped)).abs().max() > 1e-4  # the caption matters
    assert model.conditioning == f"text-{mechanism}" and model.null_caption


def test_unet_cross_attention_ignores_padding_and_depends_on_the_caption():
    short, long = _padded_pair()
    model = _perturbed(VideoUNet((4, 2, 8, 8), 0, "U1", text_dim=32))
    x, t = torch.randn(2, 4, 2, 8, 8, generator=torch.Generator().manual_seed(1)), torch.rand(2)
    out = model(x, t, None, short)
    assert torch.allclose(out, model(x, t, None, long), atol=1e-5)
    assert (out - model(x, t, None, short.dropped())).abs().max() > 1e-4
    assert model.conditioning == "text-cross"


def test_text_models_start_as_the_unconditional_zero_output_and_refuse_missing_text():
    """Cross-attention outputs start at zero (PixArt-alpha), like every adaLN-Zero branch."""
    short, _ = _padded_pair()
    model = VideoDiT((4, 2, 8, 8), 0, "T1", text_dim=32, text_conditioning="cross")
    assert all(block.cross_attn.proj.weight.abs().max() == 0 for block in model.blocks)
    with pytest.raises(ValueError, match="text-conditional"):
        model(torch.zeros(1, 4, 2, 8, 8), torch.zeros(1))
    with pytest.raises(ValueError, match="attention='full'"):
        VideoDiT((4, 2, 8, 8), 0, "T1", text_dim=32, text_conditioning="joint", attention="interleaved")
    no_null = VideoDiT((4, 2, 8, 8), 0, "T1", text_dim=32, caption_dropout_prob=0.0)
    with pytest.raises(ValueError, match="caption_dropout_prob > 0"):
        no_null(torch.zeros(2, 4, 2, 8, 8), torch.zeros(2), None, short.dropped())


def test_text_guidance_extrapolates_from_the_null_caption():
    def denoiser(x, t, y, text):
        return x + (~text.drops()).float().reshape(-1, 1, 1, 1, 1)  # 1 with a caption, 0 without

    text = TextEmbedding(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))
    x = torch.zeros(2, 3, 1, 2, 2)
    out = denoiser_fn(denoiser, None, 4.0, None, text=text, null_caption=True)(x, torch.zeros(2))
    assert torch.allclose(out, torch.full_like(x, 4.0))  # 0 + 4 * (1 - 0)
    with pytest.raises(ValueError, match="caption dropout"):
        denoiser_fn(denoiser, None, 2.0, None, text=text, null_caption=False)


def test_flops_count_cross_and_joint_attention_over_the_text_tokens():
    objective = RectifiedFlow()
    shape = (4, 2, 8, 8)
    base = denoiser_costs(lambda: VideoDiT(shape, 0, "T1"), objective, shape, 0)
    costs = {
        mechanism: denoiser_costs(
            lambda m=mechanism: VideoDiT(shape, 0, "T1", text_dim=32, text_conditioning=m),
            objective,
            shape,
            0,
            (16, 32),
        )["flops_forward"]
        for mechanism in ("cross", "joint", "pooled")
    }
    long = denoiser_costs(
        lambda: VideoDiT(shape, 0, "T1", text_dim=32, text_conditioning="joint"),
        objective,
        shape,
        0,
        (32, 32),
    )["flops_forward"]
    assert base["flops_forward"] < costs["pooled"] < costs["cross"] < costs["joint"] < long


# -- frozen Hugging Face encoders, built and saved here (no download) ----------------------------------
def _tokenizer(max_length: int):
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    words = [w for caption in CAPTIONS for w in caption.replace(",", " ").split()]
    tokenizer.train_from_iterator(words, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    t5 = T5EncoderModel(T5Config(vocab_size=32, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2))
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=32,
            hidden_size=24,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
        )
    )
    folders = {}
    for name, model in {"t5": t5, "clip": clip}.items():
        model.save_pretrained(root / name)
        _tokenizer(16).save_pretrained(root / name)
        folders[name] = root / name
    return folders


@pytest.mark.parametrize(("name", "dim"), [("t5", 16), ("clip", 24)])
def test_pretrained_encoder_loads_a_local_folder_frozen_with_its_tokenizer(hf_folders, name, dim):
    encoder = PretrainedTextEncoder(str(hf_folders[name]), max_length=10)
    assert isinstance(encoder, TextEncoder) and encoder.dim == dim and encoder.max_length == 10
    assert not any(p.requires_grad for p in encoder.parameters())
    text = encode_captions(encoder, CAPTIONS, CPU)
    assert text.tokens.shape == (2, 10, dim) and text.mask.sum(1).tolist()[0] < 10
    assert text.tokens[~text.mask].abs().max() == 0  # padding positions carry nothing
    assert encoder.fingerprint() == PretrainedTextEncoder(str(hf_folders[name]), max_length=10).fingerprint()
    assert encoder.fingerprint() != PretrainedTextEncoder(str(hf_folders[name]), max_length=12).fingerprint()


def test_pretrained_encoder_names_what_is_missing(hf_folders, tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        PretrainedTextEncoder(str(tmp_path / "nowhere"))
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((hf_folders["t5"] / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="weights"):
        PretrainedTextEncoder(str(partial))
