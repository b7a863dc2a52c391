"""SegData and the decoding every file-based builder shares."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segtune.errors import DataError
from segtune.losses import IGNORE_INDEX

SPLITS = ("train", "val", "test")


@dataclass
class SegData:
    """Decoded, resized arrays shared read-only by all trials (through Ray's object store)."""

    images: np.ndarray  # uint8 (N, S, S, 3)
    masks: np.ndarray  # uint8 (N, S, S): class index, or IGNORE_INDEX
    splits: dict[str, np.ndarray]  # split name -> indices into images/masks
    classes: list[str]
    names: list[str] = field(default_factory=list)  # one id per image, for messages and reports

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])


@dataclass
class Record:
    """One image/mask pair on disk, before decoding."""

    name: str
    image: Path
    mask: Path
    split: str


def read_image(path: Path, size: int) -> np.ndarray:
    """RGB uint8 (size, size, 3); palette and alpha pictures are converted to RGB."""
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: cannot read image: {e}") from None
    return np.asarray(rgb.resize((size, size), Image.BILINEAR, reducing_gap=2.0), dtype=np.uint8)


def read_mask(path: Path, size: int) -> np.ndarray:
    """Single-channel uint8 (size, size), resized nearest-neighbour so label values stay labels.

    RGB masks whose three channels are equal are read as one channel; 1-bit pictures read as 0/255,
    exactly as the same picture saved in 8 bits would.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA"):
                arr = np.asarray(im.convert("RGB"))
                if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
                    raise DataError(f"{path}: mask has colour (its RGB channels differ); expected class values")
                single = Image.fromarray(arr[..., 0])
            elif im.mode in ("L", "P"):
                single = im
            else:  # "1", "I;16", "I", ...
                single = im.convert("L")
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: cannot read mask: {e}") from None
    return np.asarray(single.resize((size, size), Image.NEAREST), dtype=np.uint8)


def decode_records(
    records: list[Record], size: int, classes: list[str], remap: Callable[[np.ndarray, Path], np.ndarray]
) -> SegData:
    """Decode and resize every pair once (threads: PIL releases the GIL while decoding)."""
    if not records:
        raise DataError("the dataset has no images")
    images = np.empty((len(records), size, size, 3), dtype=np.uint8)
    masks = np.empty((len(records), size, size), dtype=np.uint8)

    def one(i: int) -> None:
        rec = records[i]
        images[i] = read_image(rec.image, size)
        masks[i] = remap(read_mask(rec.mask, size), rec.mask)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(len(records))))
    splits = {s: np.array([i for i, r in enumerate(records) if r.split == s], dtype=np.int64) for s in SPLITS}
    return SegData(images, masks, splits, list(classes), [r.name for r in records])


def value_remap(mapping: dict[int, int], what: str) -> Callable[[np.ndarray, Path], np.ndarray]:
    """Raw mask values -> class indices through a lookup table; a value it does not list is an error."""
    table = np.full(256, -1, dtype=np.int16)
    for raw, cls in mapping.items():
        table[raw] = cls

    def remap(mask: np.ndarray, path: Path) -> np.ndarray:
        out = table[mask]
        if (out < 0).any():
            bad = sorted(int(v) for v in np.unique(mask[out < 0]))
            raise DataError(f"{path}: mask values {bad} are not among the {what}")
        return out.astype(np.uint8)

    return remap


def carve(names: list[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Assign each name to a split with a seeded shuffle; the rest goes to train."""
    order = np.random.default_rng(seed).permutation(len(names))
    out: dict[str, str] = {}
    start = 0
    for split, frac in fractions.items():
        n = round(frac * len(names))
        if frac > 0 and len(names) >= 3:
            n = max(n, 1)
        for i in order[start : start + n]:
            out[names[i]] = split
        start += n
    for i in order[start:]:
        out[names[i]] = "train"
    return out


def limit_records(records: list[Record], limit: int | None) -> list[Record]:
    if limit is None:
        return records
    kept: list[Record] = []
    for split in SPLITS:
        kept += [r for r in records if r.split == split][:limit]
    return kept


def index_summary(data: SegData) -> dict[str, object]:
    """Counts per split and the label values seen: what `segtune check` prints."""
    counts = {s: int(len(idx)) for s, idx in data.splits.items()}
    values, pixels = np.unique(data.masks, return_counts=True)
    seen = {}
    for v, n in zip(values.tolist(), pixels.tolist(), strict=True):
        label = "ignore" if v == IGNORE_INDEX else data.classes[v] if v < data.num_classes else f"?{v}"
        seen[label] = round(n / data.masks.size, 4)
    return {"images": len(data.names), "splits": counts, "classes": data.classes, "pixel_share": seen}
