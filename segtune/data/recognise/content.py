"""What a picture holds, told from its pixels: a few flat levels or colours (a mask, perhaps stored with JPEG
noise around them), or a photograph.

`init` uses it to tell masks from pictures whatever their folders are called, and to decide, from every mask
of a dataset at once, whether the masks are lossy (:func:`find_levels`); the folder reader snaps lossy masks
to their levels within ``labels.tolerance``.

Why these rules: a mask's pixels sit exactly (or, after JPEG, within a few units) on a handful of values.
Measured on real files (the Oxford-IIIT Pet sample and Kvasir-SEG): 98-100% of a mask's pixels lie within 2
grey levels of its at most 16 most common levels; 2-41% of a photograph's (or of its greyscale copy's) do.
JPEG's colour subsampling smears colour-coded masks more, so colours count as on a level within 10 units
per channel (a 64 px colour mask saved at JPEG quality 75-90: 73-88% of its pixels; photographs: at most 67%).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segtune.data.base import grey_palette
from segtune.data.labels import RawValue, distance

MAX_MASK_LEVELS = 16  # a lossy picture whose pixels need more levels than this to be covered is no mask
CLEAN_VALUES = 64  # a picture of at most this many exact values is a clean mask (photographs hold hundreds)
NEAR = {1: 2, 3: 10}  # channels -> how far (per channel) from a level a pixel still counts as on it
MIN_LEVEL_SHARE = 0.002  # a level holds at least this share of the pixels; rarer values are noise around one
SEPARATION = {1: 16, 3: 48}  # two levels closer than this (grey levels; RGB distance) are one level and its noise
MASK_SCORE = 0.7  # pictures whose median score reaches this read as masks
PROBE_SIDE = 256  # content is judged on a thumbnail no larger than this (JPEG decodes it at a reduced size)
COLOUR_MODES = ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV")
LOSSY_FORMATS = {"JPEG", "MPO", "WEBP"}  # WEBP may be lossless, but people's WEBP masks rarely are


def pixels(path: Path) -> np.ndarray | None:
    """A picture's pixels for judging its content: (H, W) grey values when its channels are equal (or it has
    one), else (H, W, 3); at most about PROBE_SIDE on a side. None when it cannot be read."""
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft(im.mode, (PROBE_SIDE, PROBE_SIDE))  # decode at 1/2, 1/4 or 1/8 of the size: fast
            colour = im.mode in COLOUR_MODES or (im.mode == "P" and not grey_palette(im))
            arr = np.asarray(im.convert("RGB" if colour else "L"))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None
    step = max(1, math.ceil(max(arr.shape[:2]) / PROBE_SIDE))
    arr = arr[::step, ::step]
    if arr.ndim == 3 and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
        arr = arr[..., 0]
    return arr


def is_lossy_file(path: Path) -> bool:
    """Stored in a lossy format (JPEG): its values may sit around the levels written, not on them."""
    try:
        with Image.open(path) as im:
            return im.format in LOSSY_FORMATS
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return False


def _counts(arr: np.ndarray) -> dict[RawValue, int]:
    if arr.ndim == 2:
        counts = np.bincount(arr.ravel(), minlength=256)
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    colours, counts = np.unique(arr.reshape(-1, 3), axis=0, return_counts=True)
    return {(int(r), int(g), int(b)): int(n) for (r, g, b), n in zip(colours, counts, strict=True)}


def find_levels(counts: Mapping[RawValue, int], max_levels: int = MAX_MASK_LEVELS) -> list[RawValue]:
    """The levels (grey values or colours) a set of masks is written in: the most common values, each one
    taken only when no level already taken is within SEPARATION of it (its noise), and only while it holds
    MIN_LEVEL_SHARE of the pixels. Sorted."""
    total = sum(counts.values()) or 1
    channels = 1 if all(isinstance(v, int) for v in counts) else 3
    levels: list[RawValue] = []
    for value, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        if n / total < MIN_LEVEL_SHARE or len(levels) >= max_levels:
            break
        if all(distance(value, level) >= SEPARATION[channels] for level in levels):
            levels.append(value)
    return sorted(levels)


def _as_arrays(values: list[RawValue]) -> np.ndarray:
    """Grey levels or colours as an (N, channels) int array."""
    return np.array([v if isinstance(v, tuple) else (v,) for v in values], dtype=np.int32).reshape(len(values), -1)


def near_share(counts: Mapping[RawValue, int], levels: list[RawValue]) -> float:
    """The share of pixels within NEAR (per channel) of a level."""
    total = sum(counts.values())
    if not total or not levels:
        return 0.0
    values, targets = _as_arrays(list(counts)), _as_arrays(levels)
    n = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))
    gap = np.abs(values[:, None, :] - targets[None]).max(axis=2).min(axis=1)
    return float(n[gap <= NEAR[targets.shape[1]]].sum() / total)


def levels_and_score(counts: Mapping[RawValue, int]) -> tuple[int, float]:
    """How many levels a picture is written in, and how much of it sits on them: a clean mask holds at most
    CLEAN_VALUES exact values (1.0: indexed masks with dozens of classes among them); a lossy one sits near a
    few levels (~0.9); a photograph spreads over hundreds of values (low)."""
    if len(counts) <= CLEAN_VALUES:
        return len(counts), 1.0
    found = find_levels(counts)
    return len(found), near_share(counts, found)


def mask_score(arr: np.ndarray) -> float:
    """How much of a picture sits on a few flat levels: 1.0 for a clean mask, ~0.9 for a JPEG one, low for a photo."""
    return levels_and_score(_counts(arr))[1]


@dataclass(frozen=True)
class Sample:
    """What a few pictures of one group hold: the median mask score, colour or grey, how many levels."""

    score: float
    colour: bool
    levels: int
    lossy_format: bool

    @property
    def mask_like(self) -> bool:
        return self.score >= MASK_SCORE


def sample(paths: list[Path], n: int = 12) -> Sample:
    """Judge a group of pictures from up to ``n`` of them, spread over the group."""
    picked = [paths[round(i * (len(paths) - 1) / max(1, n - 1))] for i in range(min(n, len(paths)))]
    scores, colour, levels = [], 0, 0
    for path in dict.fromkeys(picked):
        arr = pixels(path)
        if arr is None:
            continue
        found, score = levels_and_score(_counts(arr))
        scores.append(score)
        colour += arr.ndim == 3
        levels = max(levels, found)
    if not scores:
        return Sample(0.0, False, 0, False)
    return Sample(float(np.median(scores)), colour > len(scores) / 2, levels, is_lossy_file(picked[0]))
