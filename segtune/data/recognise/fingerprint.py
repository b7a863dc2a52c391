"""`segtune init`, second half: measure a recognised dataset (data/recognise/) as segtune will read it.

The fingerprint decodes the dataset with the builders `check` and `run` use (at a small size) and measures
what the spec's decisions rest on: pictures per split, sizes and aspect ratios, the share of each class's
pixels and how many pictures hold it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segtune.data.base import SPLITS
from segtune.data.labels import IGNORE_INDEX
from segtune.data.recognise.layout import Layout


@dataclass
class Fingerprint:
    images: int
    splits: dict[str, int]
    sizes: list[tuple[int, int]]  # (h, w) of every image
    classes: list[str]
    pixel_share: dict[str, float]  # of the labelled pixels (ignore left out)
    images_with: dict[str, int]
    ignore_share: float
    train_with: dict[str, int] | None = None  # train pictures holding each class (None: not measured)

    @property
    def median_size(self) -> tuple[int, int]:
        return int(statistics.median(h for h, _ in self.sizes)), int(statistics.median(w for _, w in self.sizes))

    @property
    def aspect(self) -> float:
        return statistics.median(w / h for h, w in self.sizes)


def _sizes(paths: list[Path]) -> list[tuple[int, int]]:
    out = []
    for p in paths:
        try:
            with Image.open(p) as im:
                out.append((im.height, im.width))
        except (OSError, UnidentifiedImageError):
            continue
    return out


def fingerprint(layout: Layout) -> Fingerprint:
    """Read the dataset as segtune will (the builders, at a small size) and measure it."""
    from segtune.data import build_dataset
    from segtune.spec import validate

    spec = validate(
        {
            "study": "init",
            "dataset": {**layout.dataset, "image_size": 64, "skip_bad_files": True, "allow_missing_classes": True},
        },
        source="init",
    )
    data = build_dataset(spec.dataset)
    pictures = [m[:h, :w] for m, (h, w) in zip(data.masks, data.content, strict=True)]  # the padding left out
    counts = sum(np.bincount(m.ravel(), minlength=256) for m in pictures)
    labelled = counts[: data.num_classes].sum()
    share = {c: float(counts[i] / max(1, labelled)) for i, c in enumerate(data.classes)}
    with_class = {c: int(sum((m == i).any() for m in pictures)) for i, c in enumerate(data.classes)}
    ignore = float(counts[IGNORE_INDEX] / counts.sum())
    train = set(data.splits["train"].tolist())
    in_train = {
        c: int(sum((m == i).any() for j, m in enumerate(pictures) if j in train)) for i, c in enumerate(data.classes)
    }
    return Fingerprint(
        len(data.names),
        {s: len(data.splits[s]) for s in SPLITS},
        _sizes(_image_paths(layout, spec)),
        data.classes,
        share,
        with_class,
        ignore,
        in_train,
    )


def _image_paths(layout: Layout, spec: object) -> list[Path]:
    """The images' files, for their sizes (headers only)."""
    ds = spec.dataset  # type: ignore[attr-defined]
    if layout.kind == "folder":
        from segtune.data.folder import index_records
    elif layout.kind == "oxford_pets":
        from segtune.data.oxford_pets import index_records
    elif layout.kind == "voc":
        from segtune.data.voc import index_records
    else:
        from segtune.data.camvid import index_records
    return [r.image for r in index_records(ds)[0]]  # camvid's returns its layout third
