"""Mask values and what they mean: the one place that reads raw mask values and decides them into classes.

`check`, `run` and `init` all read mask values here, so 0/255 means the same thing everywhere:
with two classes and masks holding only 0 and 255 across the dataset (decided from all masks,
never per mask), 255 is the foreground. The ignore label applies only where a spec or a dataset's
own convention (VOC's outlines, the pets-binary border, CamVid's void) says so.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IGNORE_INDEX = 255  # the label of pixels that count for nothing: outlines, borders, padding

RawValue = int | tuple[int, int, int]  # a grey level / palette index, or an RGB colour (colour-coded masks)


@dataclass
class ValueCensus:
    """Raw mask values across a dataset: for each value, its pixels and how many masks hold it."""

    pixels: Counter = field(default_factory=Counter)
    masks_with: Counter = field(default_factory=Counter)
    masks: int = 0

    def add(self, mask: np.ndarray) -> None:
        """Count one raw mask: (H, W) values or (H, W, 3) colours."""
        if mask.ndim == 3:
            colours, counts = np.unique(mask.reshape(-1, mask.shape[-1]), axis=0, return_counts=True)
            values: list[RawValue] = [tuple(int(c) for c in colour) for colour in colours]  # type: ignore[misc]
        else:
            unique, counts = np.unique(mask, return_counts=True)
            values = [int(v) for v in unique]
        for value, n in zip(values, counts.tolist(), strict=True):
            self.pixels[value] += n
            self.masks_with[value] += 1
        self.masks += 1

    def merge(self, others: Iterable[ValueCensus]) -> ValueCensus:
        for other in others:
            self.pixels.update(other.pixels)
            self.masks_with.update(other.masks_with)
            self.masks += other.masks
        return self

    @property
    def values(self) -> list[Any]:
        return sorted(self.pixels)

    def describe(self, limit: int = 12) -> str:
        shown = ", ".join(str(v) for v in self.values[:limit])
        return shown + (f" and {len(self.values) - limit} more" if len(self.values) > limit else "")


def census_of(masks: Iterable[np.ndarray]) -> ValueCensus:
    census = ValueCensus()
    for mask in masks:
        census.add(mask)
    return census


def is_binary_255(values: Iterable[Any], num_classes: int) -> bool:
    """Two classes and masks that hold only 0 and 255 (1-bit masks read as 0/255 too): 255 is the foreground."""
    seen = set(values)
    return num_classes == 2 and 255 in seen and seen <= {0, 255}


def decide_value_map(
    census: ValueCensus, classes: list[str], ignore_value: int | None = None
) -> tuple[dict[int, int], str]:
    """Raw value -> class index for masks whose spec lists no ``values``, and the reason in words.

    Decided from every mask of the dataset at once: a mask that happens to hold only background
    must not decide what the others mean. ``ignore_value`` (the spec's ``ignore_index``) is
    ignored only when the user set it.
    """
    k = len(classes)
    if ignore_value != 255 and is_binary_255(census.values, k):
        return {0: 0, 255: 1}, (
            f"masks hold only 0 and 255 across all {census.masks} masks: 0 is {classes[0]}, 255 is {classes[1]}"
        )
    mapping = {i: i for i in range(k)}
    reason = f"mask values are class indices 0..{k - 1}"
    if ignore_value is not None:
        mapping[ignore_value] = IGNORE_INDEX
        reason += f"; {ignore_value} is ignored (dataset.ignore_index)"
    return mapping, reason


def train_pixels_per_class(masks: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels of each class in ``masks`` (class-index masks; the ignore label is not a class)."""
    return np.bincount(masks.ravel(), minlength=256)[:num_classes]


MAX_TOLERANCE = 64
COLOUR_TOLERANCE = 128


def distance(a: RawValue, b: RawValue) -> float:
    """Between two grey levels, or two colours (Euclidean in RGB)."""
    if isinstance(a, int) and isinstance(b, int):
        return float(abs(a - b))
    return math.dist(a, b)  # type: ignore[arg-type]


def tolerance(levels: list[RawValue]) -> float:
    """How far from its nearest level a lossy mask's pixel may lie and still be snapped to it, in whole units.

    Grey levels: a quarter of the distance between the two closest levels (so no pixel is near two), at most
    MAX_TOLERANCE. Binary 0/255 masks: 63, so values 64..191 are ignored; four grey levels 0/85/170/255: 21.
    Colours (RGB distance): just under half the distance between the two closest, at most twice MAX_TOLERANCE:
    JPEG keeps a colour region's luma but smears its colour (chroma) a pixel or two beyond its edge, so the
    pixels of a colour mask's edges are snapped to the nearer colour rather than ignored. Black / red
    (255, 0, 0): 126."""
    gaps = [distance(a, b) for i, a in enumerate(levels) for b in levels[i + 1 :]]
    if levels and isinstance(levels[0], tuple):
        return min(COLOUR_TOLERANCE, math.ceil(min(gaps) / 2) - 1) if gaps else COLOUR_TOLERANCE
    return min(MAX_TOLERANCE, math.floor(min(gaps) / 4)) if gaps else MAX_TOLERANCE


@dataclass(frozen=True)
class OffLevel:
    """Pixels of lossy masks that were not exactly on a level: snapped to the nearest, or too far and ignored."""

    pixels: int = 0
    snapped: int = 0
    ignored: int = 0

    def share(self, n: int) -> float:
        return n / self.pixels if self.pixels else 0.0

    def text(self) -> str:
        return (
            f"{self.share(self.snapped + self.ignored):.2%} of pixels off-level ({self.share(self.snapped):.2%} "
            f"snapped to the nearest level, {self.share(self.ignored):.2%} too far from every level: ignored)"
        )


@dataclass(frozen=True)
class LossyLevels:
    """``dataset.lossy_masks: nearest``: masks stored with JPEG noise, read by snapping each pixel to the nearest
    declared level (grey value or colour) within ``tolerance`` (:func:`tolerance` says how it is chosen); a pixel
    farther from every level counts for nothing (IGNORE_INDEX) and is counted."""

    classes: dict[Any, int]  # level (a grey value, or an (r, g, b) colour) -> class index or IGNORE_INDEX
    tolerance: float

    def nearest(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For (U, C) raw values: the index of the nearest level and the distance to it."""
        levels = np.array([v if isinstance(v, tuple) else (v,) for v in self.classes], dtype=np.float64)
        d = np.sqrt(((values[:, None, :].astype(np.float64) - levels[None]) ** 2).sum(axis=2))
        return d.argmin(axis=1), d.min(axis=1)

    def _table(self, values: np.ndarray) -> np.ndarray:
        nearest, d = self.nearest(values)
        target = np.array(list(self.classes.values()), dtype=np.uint8)[nearest]
        return np.where(d <= self.tolerance, target, IGNORE_INDEX).astype(np.uint8)

    def snap(self, mask: np.ndarray) -> np.ndarray:
        """Raw values (H, W) or colours (H, W, 3) -> class indices."""
        if mask.ndim == 2:
            return self._table(np.arange(256).reshape(256, 1))[mask]
        code = (mask[..., 0].astype(np.int64) << 16) | (mask[..., 1].astype(np.int64) << 8) | mask[..., 2]
        unique, inverse = np.unique(code, return_inverse=True)
        rgb = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], axis=1)
        return self._table(rgb)[inverse].reshape(mask.shape[:2])

    def off_level(self, census: ValueCensus) -> OffLevel:
        """How many of the pixels ``census`` counted were off every level, snapped, and too far."""
        if not census.pixels:
            return OffLevel()
        values = list(census.pixels)
        raw = np.array([v if isinstance(v, tuple) else (v,) for v in values], dtype=np.int64)
        n = np.array([census.pixels[v] for v in values], dtype=np.int64)
        _, d = self.nearest(raw)
        return OffLevel(int(n.sum()), int(n[(d > 0) & (d <= self.tolerance)].sum()), int(n[d > self.tolerance].sum()))
