"""Procedural "moving shapes" videos: the embedded default dataset, no download, any size.

Each clip is a pure function of (seed, split, index): a smooth background of one of 8 dark tones, one
class object and up to ``distractors`` grey shapes that move, may occlude each other and leave the
frame. The class is (shape, motion) of the main object: 4 shapes x 4 motions = 16 classes at most.
The caption says what determines the clip: the main object's colour (one of 8 bright named colours,
which no background or distractor reaches), shape, motion and its direction, speed, the number of
other shapes and the background, e.g. "a red circle moving left, fast, with 2 other shapes, on a navy
background".
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import torch
from torch.utils.data import Dataset

SHAPES = ("circle", "square", "triangle", "ring")
MOTIONS = ("linear", "circular", "bounce", "zoom")
MAX_CLASSES = len(SHAPES) * len(MOTIONS)
# The main object's colours (RGB in [0, 1]): every one has a channel at or above 0.9, which the
# backgrounds (channels <= 0.6) and the grey distractors (<= 0.65) never reach (see dominant_colour).
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.15, 0.15),
    "green": (0.15, 0.9, 0.2),
    "blue": (0.2, 0.35, 1.0),
    "yellow": (1.0, 0.9, 0.1),
    "magenta": (1.0, 0.2, 0.9),
    "cyan": (0.1, 0.9, 1.0),
    "orange": (1.0, 0.55, 0.05),
    "white": (1.0, 1.0, 1.0),
}
# Background tones (RGB in [0, 1], channels <= 0.45), each drawn as a gradient from 0.5x to 1x of it.
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "navy": (0.05, 0.1, 0.45),
    "maroon": (0.45, 0.08, 0.08),
    "olive": (0.35, 0.35, 0.05),
    "teal": (0.05, 0.35, 0.35),
    "purple": (0.3, 0.1, 0.45),
    "grey": (0.3, 0.3, 0.3),
    "brown": (0.4, 0.22, 0.08),
    "forest": (0.08, 0.3, 0.1),
}
HEADINGS = ("right", "down-right", "down", "down-left", "left", "up-left", "up", "up-right")  # image axes
SPEEDS = {"slow": 0.03, "fast": 0.07}  # pixels per frame, as a fraction of the clip's short side
UNBOUNDED_CLIPS = 2**31 - 1
# Rendered clips kept in memory per dataset (and DataLoader worker): rendering costs a few ms per clip,
# as much as a training step of the smallest ladder DiTs; a clip is rendered once and then read back.
MEMO_BYTES = 256 * 2**20


def _shape_mask(kind: str, dx: torch.Tensor, dy: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Soft mask (anti-aliased over ~1 pixel) of a shape centred at the origin; dx, dy in pixels."""
    if kind == "circle":
        dist = torch.sqrt(dx**2 + dy**2) - radius
    elif kind == "square":
        dist = torch.maximum(dx.abs(), dy.abs()) - radius * 0.85
    elif kind == "triangle":
        # Equilateral triangle pointing up: the max of three half-plane distances.
        edges = [
            dy - radius * 0.5,
            -0.866 * dx - 0.5 * dy - radius * 0.5,
            0.866 * dx - 0.5 * dy - radius * 0.5,
        ]
        dist = torch.stack(edges).amax(0)
    else:  # ring
        dist = (torch.sqrt(dx**2 + dy**2) - radius * 0.75).abs() - radius * 0.3
    return (0.5 - dist).clamp(0, 1)


@dataclasses.dataclass(frozen=True)
class ShapeSpec:
    """One moving shape: what it is, how it moves, where it starts."""

    shape: str
    motion: str
    colour: tuple[float, float, float]
    radius: float  # fraction of the short side
    centre: tuple[float, float]  # (x, y) fractions of (width, height)
    speed: str  # a key of SPEEDS
    heading: int  # index into HEADINGS (linear), or +1 / -1 for clockwise / counter-clockwise (circular)
    phase: float  # zoom phase in radians


def describe(spec: ShapeSpec, colour: str, others: int, background: str) -> str:
    """The caption of a clip whose main object is ``spec`` in colour ``colour``."""
    motion = {
        "linear": f"moving {HEADINGS[spec.heading]}",
        "circular": "circling clockwise" if spec.heading > 0 else "circling counter-clockwise",
        "bounce": "bouncing",
        "zoom": "growing and shrinking",
    }[spec.motion]
    text = f"a {colour} {spec.shape} {motion}, {spec.speed}"
    if others:
        text += f", with {others} other shape{'s' if others > 1 else ''}"
    return f"{text}, on a {background} background"


def dominant_colour(video: torch.Tensor, threshold: float = 0.8) -> str | None:
    """The palette colour of a (3, T, H, W) clip in [-1, 1]: the nearest name to the mean of its pixels
    with a channel above ``threshold`` (in [0, 1]; only the main object reaches it), None when none
    does. A probe of whether generated videos follow their prompts' colour."""
    pixels = ((video.float() + 1) / 2).flatten(1)  # (3, T*H*W)
    bright = pixels[:, pixels.amax(0) > threshold]
    if bright.shape[1] == 0:
        return None
    mean = bright.mean(1)
    names = list(PALETTE)
    distances = torch.stack([(mean - torch.tensor(PALETTE[n])).norm() for n in names])
    return names[int(distances.argmin())]


class SyntheticVideoDataset(Dataset):
    """Moving-shapes clips as ``{"video": (3, T, H, W) in [-1, 1], "label": int, "caption": str}``.

    Args:
        num_clips: number of unique clips (the data budget); None for an unbounded stream.
        frames, height, width: clip size.
        num_classes: classes used (1..16); 1 makes an effectively unconditional dataset.
        seed: dataset seed; together with ``split`` and the index it fixes every pixel.
        split: "train" or "val"; the two splits draw from disjoint seed streams.
        distractors: most extra grey shapes per clip (0..distractors, occluders, not part of the
            label; their number is in the caption).
    """

    def __init__(
        self,
        num_clips: int | None = 1024,
        frames: int = 8,
        height: int = 32,
        width: int = 32,
        num_classes: int = MAX_CLASSES,
        seed: int = 0,
        split: str = "train",
        distractors: int = 2,
    ) -> None:
        if not 1 <= num_classes <= MAX_CLASSES:
            raise ValueError(
                f"num_classes must be in [1, {MAX_CLASSES}] for the synthetic dataset, got {num_classes}"
            )
        if num_clips is not None and num_clips < 1:
            raise ValueError(f"num_clips must be a positive number of unique clips or None, got {num_clips}")
        self.num_clips = num_clips
        self.frames, self.height, self.width = frames, height, width
        self.num_classes = num_classes
        self.seed = seed
        self.split = split
        self.distractors = distractors
        self._memo: dict[int, dict[str, torch.Tensor | int]] = {}
        self._memo_clips = MEMO_BYTES // (3 * frames * height * width * 4)

    def __len__(self) -> int:
        return self.num_clips if self.num_clips is not None else UNBOUNDED_CLIPS

    def generator(self, index: int) -> torch.Generator:
        key = f"{self.seed}/{self.split}/{index}".encode()
        return torch.Generator().manual_seed(zlib.crc32(key) * 2654435761 % 2**63 + index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int | str]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        if index not in self._memo:
            item = self.render(index)
            if len(self._memo) >= self._memo_clips:
                return item
            self._memo[index] = item
        return dict(self._memo[index])

    def render(self, index: int) -> dict[str, torch.Tensor | int | str]:
        """Draw clip ``index`` (no memo)."""
        g = self.generator(index)
        label = int(torch.randint(self.num_classes, (1,), generator=g))
        background = list(BACKGROUNDS)[int(torch.randint(len(BACKGROUNDS), (1,), generator=g))]
        video = self.background(BACKGROUNDS[background], g)
        colour = list(PALETTE)[int(torch.randint(len(PALETTE), (1,), generator=g))]
        main = self.spec(SHAPES[label % len(SHAPES)], MOTIONS[label // len(SHAPES)], PALETTE[colour], g)
        others = int(torch.randint(self.distractors + 1, (1,), generator=g))
        objects = [main]
        for _ in range(others):
            shape = SHAPES[int(torch.randint(len(SHAPES), (1,), generator=g))]
            motion = MOTIONS[int(torch.randint(len(MOTIONS), (1,), generator=g))]
            grey = 0.35 + 0.3 * float(torch.rand(1, generator=g))
            objects.append(self.spec(shape, motion, (grey, grey, grey), g))
        # Draw back to front; the class object is drawn in a random depth order among distractors.
        for i in torch.randperm(len(objects), generator=g).tolist():
            video = self.draw(video, objects[i])
        return {"video": video * 2 - 1, "label": label, "caption": describe(main, colour, others, background)}

    @staticmethod
    def spec(shape: str, motion: str, colour: tuple[float, float, float], g: torch.Generator) -> ShapeSpec:
        radius = 0.12 + 0.1 * float(torch.rand(1, generator=g))
        cx, cy = (torch.rand(2, generator=g) * 0.6 + 0.2).tolist()
        speed = list(SPEEDS)[int(torch.randint(len(SPEEDS), (1,), generator=g))]
        heading = int(torch.randint(len(HEADINGS), (1,), generator=g))
        if motion == "circular":
            heading = 1 if heading % 2 else -1
        phase = float(torch.rand(1, generator=g)) * 2 * math.pi
        return ShapeSpec(shape, motion, colour, radius, (cx, cy), speed, heading, phase)

    def background(self, tone: tuple[float, float, float], g: torch.Generator) -> torch.Tensor:
        """A smooth gradient of ``tone`` (0.5x to 1x of it) in a random direction, drifting slowly."""
        c1 = torch.tensor(tone).view(3, 1, 1, 1)
        c0 = 0.5 * c1
        angle = float(torch.rand(1, generator=g)) * 2 * math.pi
        t, h, w = self.frames, self.height, self.width
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        drift = torch.linspace(0, 0.5, t).view(t, 1, 1)
        ramp = ((math.cos(angle) * xs + math.sin(angle) * ys)[None] + drift).sin() * 0.5 + 0.5
        return c0 + (c1 - c0) * ramp.unsqueeze(0)

    def draw(self, video: torch.Tensor, spec: ShapeSpec) -> torch.Tensor:
        t, h, w = self.frames, self.height, self.width
        size = min(h, w)
        radius, speed = size * spec.radius, size * SPEEDS[spec.speed]
        steps = torch.arange(t, dtype=torch.float32)
        x0, y0 = spec.centre[0] * w, spec.centre[1] * h
        if spec.motion == "linear":
            heading = spec.heading * math.pi / 4
            xs, ys = x0 + speed * steps * math.cos(heading), y0 + speed * steps * math.sin(heading)
            rs = radius
        elif spec.motion == "circular":
            phase = spec.phase + spec.heading * steps * speed / (0.25 * size)
            xs, ys, rs = x0 + 0.25 * size * torch.cos(phase), y0 + 0.25 * size * torch.sin(phase), radius
        elif spec.motion == "bounce":
            ys = h - radius - (h - 2 * radius) * (torch.sin(steps * speed / size * math.pi) ** 2)
            xs, rs = x0 + 0 * steps, radius
        else:  # zoom
            xs, ys = x0 + 0 * steps, y0 + 0 * steps
            rs = radius * (0.6 + 0.8 * (torch.sin(steps * speed / size * math.pi + spec.phase) * 0.5 + 0.5))
        rs = torch.as_tensor(rs, dtype=torch.float32).expand(t)
        gy, gx = torch.meshgrid(
            torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
        )
        dx = gx[None] - xs.view(t, 1, 1)
        dy = gy[None] - ys.view(t, 1, 1)
        mask = _shape_mask(spec.shape, dx, dy, rs.view(t, 1, 1)).unsqueeze(0)
        colour = torch.tensor(spec.colour).view(3, 1, 1, 1)
        return video * (1 - mask) + colour * mask
