"""Ulysses sequence parallelism of the video DiT on 2 gloo processes: each computes half of the tokens,
and the outputs and (summed) gradients are those of one process computing all of them."""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lit_vdit.models.dit import VideoDiT
from lit_vdit.models.text import TextEmbedding

CASES = {
    "full-sincos": {},
    "full-rope": {"position": "rope"},
    "interleaved-sincos": {"attention": "interleaved"},
    "interleaved-rope": {"attention": "interleaved", "position": "rope"},
    "cross-text": {"text_dim": 8, "text_conditioning": "cross"},
}


def model(options: dict) -> VideoDiT:
    torch.manual_seed(0)
    dit = VideoDiT((3, 4, 16, 16), num_classes=4, preset="T3", patch_size=(1, 4, 4), num_heads=4, **options)
    for p in dit.parameters():  # leave adaLN-Zero: every block active
        torch.nn.init.normal_(p, std=0.05)
    return dit.eval()  # no label dropout: both models see the same labels (backward runs all the same)


def compare(rank: int, port: int, out: dict) -> None:
    """Every case, batched and packed, in one pair of processes."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    for case, options in CASES.items():
        for packed in (False, True):
            if not (packed and options.get("attention") == "interleaved"):  # packs: full attention only
                difference = one_case(options, packed)
                if rank == 0:
                    out[case, packed] = difference
    dist.destroy_process_group()


def one_case(options: dict, packed: bool) -> tuple[float, float]:
    torch.manual_seed(1)
    text = None
    if "text_dim" in options:
        n = 3 if packed else 2
        text = TextEmbedding(torch.randn(n, 5, 8), torch.ones(n, 5, dtype=torch.bool))
    if packed:
        x = [torch.randn(3, 4, 16, 16), torch.randn(3, 2, 16, 8), torch.randn(3, 1, 8, 8)]
        t, y = torch.rand(3), torch.tensor([1, 2, 3])
    else:
        x, t, y = torch.randn(2, 3, 4, 16, 16), torch.rand(2), torch.tensor([1, 2])

    def loss(dit: VideoDiT) -> list[torch.Tensor]:
        pred = dit(x, t, y, text)
        outputs = pred if packed else [pred]
        sum(o.square().mean() for o in outputs).backward()
        return outputs

    one, split = model(options), model(options)
    split.shard_sequence(dist.group.WORLD)
    expected, got = loss(one), loss(split)
    for p in split.parameters():
        if p.grad is not None:  # each process's gradient is its tokens' share x 2: the mean over both
            dist.all_reduce(p.grad)
            p.grad /= 2
    output = max((a - b).abs().max().item() for a, b in zip(got, expected, strict=True))
    grad = max(
        (a.grad - b.grad).abs().max().item()
        for a, b in zip(split.parameters(), one.parameters(), strict=True)
        if b.grad is not None
    )
    return output, grad


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_split_the_tokens_and_match_one():
    out = mp.Manager().dict()
    mp.spawn(compare, args=(free_port(), out), nprocs=2)
    assert len(out) == 8  # 5 layouts / conditionings batched, the 3 with full attention packed too
    for (case, packed), (output, grad) in out.items():
        assert output < 1e-6 and grad < 1e-6, (case, "pack" if packed else "batch", output, grad)
