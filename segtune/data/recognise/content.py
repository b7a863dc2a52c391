"""What a picture holds, told from its pixels: a mask (a few flat levels or colours, perhaps with JPEG noise
around them and blends along their edges) or a photograph.

`init` uses it to tell masks from pictures whatever their folders are called. A clean mask holds at most
CLEAN_VALUES exact values. Otherwise the picture's levels are found from its flat pixels (levels.py) and every
pixel far from all of them is *off-level*: in a mask those are edge blends, bands a pixel or two wide; in a
photograph they are its texture, whole regions. The score is the share of pixels with an on-level pixel within
2 px: 0.98-1.0 for lossy masks (JPEG at quality 70, thin lines, specks), at most about 0.85 for a photograph
even on a backdrop that fills 80% of the frame (the object's inside is texture). Between MASK_SCORE and
PHOTO_SCORE a picture is *unsure*: the set decides (choice.py), or init asks. So is one that scores as a mask
while under ON_LEVEL of its pixels sit on a level (grain around a level's value, not regions on it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segtune.data.base import NEAR_GREY, grey_palette
from segtune.data.recognise.levels import RADIUS, flat_and_ridge, peaks

CLEAN_VALUES = 64  # a picture of at most this many exact values is a clean mask (photographs hold hundreds)
MAX_MASK_LEVELS = 16  # a picture whose flat pixels gather around more values than this is no mask
NEAR = {1: 6, 3: 18}  # a pixel within this (per channel) of a level is on it
MIN_LEVEL_SHARE = 0.02  # a level of one lossy picture holds at least this share of its pixels ...
SHARED_LEVEL_SHARE = 0.003  # ... or this, when the set's other pictures hold it too
MASK_SCORE = 0.95  # pictures scoring at least this are masks
PHOTO_SCORE = 0.9  # pictures scoring below this are photographs; between the two: unsure
UNSURE = (MASK_SCORE + PHOTO_SCORE) / 2
# A mask's pixels mostly sit on its levels (JPEG smears edges, not regions): at least 0.6 of them in masks drawn from
# tests/folder_space.py (150 folders). Under this share a picture scoring as a mask is unsure: a greyscale photo whose
# grain lies around one flat spot's value has an on-level pixel within 2 px nearly everywhere.
ON_LEVEL = 0.5
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


def is_colour(arr: np.ndarray) -> bool:
    """Colours that are no grey with JPEG noise: channels apart by more than the reader's NEAR_GREY somewhere."""
    if arr.ndim == 2:
        return False
    return int((arr.max(axis=2).astype(np.int16) - arr.min(axis=2)).max()) > NEAR_GREY


def is_lossy_file(path: Path) -> bool:
    """Stored in a lossy format (JPEG): its values may sit around the levels written, not on them."""
    try:
        with Image.open(path) as im:
            return im.format in LOSSY_FORMATS
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return False


def distinct(arr: np.ndarray) -> int:
    if arr.ndim == 2:
        return int(np.count_nonzero(np.bincount(arr.ravel(), minlength=256)))
    v = arr.reshape(-1, 3).astype(np.int64)
    return len(np.unique((v[:, 0] << 16) | (v[:, 1] << 8) | v[:, 2]))


def _near_any(arr: np.ndarray, levels: list) -> np.ndarray:
    channels = 1 if arr.ndim == 2 else 3
    a = arr.astype(np.int16).reshape(arr.shape[0], arr.shape[1], channels)
    on = np.zeros(arr.shape[:2], bool)
    for level in levels:
        target = np.array(level if isinstance(level, tuple) else (level,), np.int16)
        on |= np.abs(a - target).max(axis=2) <= NEAR[channels]
    return on


def _grow(mask: np.ndarray, n: int) -> np.ndarray:
    """``mask`` dilated by n pixels (a (2n+1)-square neighbourhood)."""
    out = mask.copy()
    h, w = mask.shape
    p = np.pad(mask, n)
    for dy in range(-n, n + 1):
        for dx in range(-n, n + 1):
            out |= p[n + dy : n + dy + h, n + dx : n + dx + w]
    return out


def _exact_flat(arr: np.ndarray) -> np.ndarray:
    """Pixels whose 3 x 3 neighbourhood holds one value (a clean mask's inside)."""
    h, w = arr.shape[:2]
    a = arr if arr.ndim == 2 else (arr.astype(np.int64) * [65536, 256, 1]).sum(axis=2)
    p = np.pad(a, 1, mode="edge")
    out = np.ones((h, w), bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out &= p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] == a
    return out


def _flat_peaks(arr: np.ndarray, min_share: float) -> list:
    """Where a picture's flat pixels gather (levels.peaks), each holding at least ``min_share`` of the picture."""
    channels = 1 if arr.ndim == 2 else 3
    flat, _ = flat_and_ridge(arr, ridges=False)
    codes = arr[flat].astype(np.int64)
    if channels == 3:
        codes = (codes[:, 0] << 16) | (codes[:, 1] << 8) | codes[:, 2]
    values, counts = np.unique(codes, return_counts=True)
    flat_counts = dict(zip(values.tolist(), counts.tolist(), strict=True))
    return [lv.value for lv in peaks(flat_counts, channels, max(5, round(min_share * flat.size)), MAX_MASK_LEVELS + 1)]


def levels_and_score(arr: np.ndarray, shared: list | None = None) -> tuple[int, float]:
    """How many levels a picture is written in, and the share of its pixels within 2 px of one on a level: 1.0
    for a clean mask, ~0.96-1 for a lossy one, low for a photograph (its texture is off every level).

    A picture of at most CLEAN_VALUES exact values is judged as a clean mask would be: its levels are the values
    some flat inside holds exactly (a photograph's grain leaves it none). Otherwise levels are where flat pixels
    gather (levels.py), each holding at least MIN_LEVEL_SHARE of the picture, or, smaller, one of the ``shared``
    levels other pictures of its set hold too (a mask's small region in a colour JPEG keeps few flat pixels; a
    photograph's flat spots are its own)."""
    n = distinct(arr)
    channels = 1 if arr.ndim == 2 else 3
    clean = 0.0
    if n <= CLEAN_VALUES:
        inside = _exact_flat(arr)
        flat_values = arr[inside]
        found = np.unique(flat_values if channels == 1 else flat_values.reshape(-1, 3), axis=0)
        if channels == 1:
            on = np.isin(arr, found)
        else:
            on = np.isin(
                (arr.astype(np.int64) * [65536, 256, 1]).sum(axis=2),
                (found.astype(np.int64) * [65536, 256, 1]).sum(axis=1),
            )
        clean = float(_grow(on, 2).mean())
        if clean >= MASK_SCORE:
            return n, clean
    found = _flat_peaks(arr, MIN_LEVEL_SHARE)
    if shared:
        found += [v for v in _flat_peaks(arr, SHARED_LEVEL_SHARE) if v not in found and _among(v, shared)]
    if not found or len(found) > MAX_MASK_LEVELS:
        return len(found), clean
    on = _near_any(arr, found)
    score = max(clean, float(_grow(on, 2).mean()))
    if score >= MASK_SCORE and on.mean() < ON_LEVEL:  # grain around a level, not regions on it: let the set decide
        return len(found), UNSURE
    return len(found), score


def _among(value: object, levels: list) -> bool:
    a = np.atleast_1d(np.asarray(value, np.int16))
    return any(int(np.abs(a - np.atleast_1d(np.asarray(v, np.int16))).max()) <= 2 * RADIUS[len(a)] for v in levels)


def shared_levels(arrays: list[np.ndarray]) -> list:
    """Levels that recur among a set's pictures (in at least a quarter of them, two at least): the evidence of the
    set, which a mask's colours give and a photograph's flat spots do not."""
    per_picture = [_flat_peaks(a, SHARED_LEVEL_SHARE) for a in arrays]
    need = max(2, len(arrays) / 4)
    out: list = []
    for levels in per_picture:
        for v in levels:
            if not _among(v, out) and sum(_among(v, other) for other in per_picture) >= need:
                out.append(v)
    return out


@dataclass(frozen=True)
class Sample:
    """What a few pictures of one group hold: each one's score, colour or grey, how many levels."""

    scores: tuple[float, ...]
    colour: bool
    levels: int
    lossy_format: bool

    @property
    def score(self) -> float:
        return float(np.median(self.scores)) if self.scores else 0.0

    @property
    def masks(self) -> int:
        return sum(s >= MASK_SCORE for s in self.scores)

    @property
    def photos(self) -> int:
        return sum(s < PHOTO_SCORE for s in self.scores)

    @property
    def mask_like(self) -> bool:
        return bool(self.scores) and self.masks == len(self.scores)

    @property
    def photo_like(self) -> bool:
        return bool(self.scores) and self.photos == len(self.scores)


def judge(paths: list[Path]) -> Sample:
    """Judge every picture of ``paths``."""
    scores, colour, levels = [], 0, 0
    arrays = [a for a in (pixels(p) for p in paths) if a is not None]
    shared = shared_levels(arrays) if len(arrays) >= 2 else []
    for arr in arrays:
        found, score = levels_and_score(arr, shared)
        scores.append(score)
        colour += is_colour(arr)
        levels = max(levels, found)
    # one picture in colour makes a colour set: most masks of a set may hold background alone (black: grey)
    return Sample(tuple(scores), colour > 0, levels, bool(paths) and is_lossy_file(paths[0]))


def spread(paths: list[Path], n: int = 12) -> list[Path]:
    """Up to ``n`` of ``paths``, spread over them."""
    m = min(n, len(paths))
    return list(dict.fromkeys(paths[round(i * (len(paths) - 1) / max(1, m - 1))] for i in range(m)))


def sample(paths: list[Path], n: int = 12) -> Sample:
    """Judge a group of pictures from up to ``n`` of them, spread over the group."""
    return judge(spread(paths, n))
