"""Named augmentation pipelines (albumentations) working on uint8 HWC images of the study's size.

``strength`` in [0, 1] scales every magnitude, so a search can tune how hard to augment.
Normalisation is not here: it runs on the device in the training loop, on whole batches.
Padding introduced by geometric transforms is labelled IGNORE_INDEX so it costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import albumentations as A

from segtune.data.labels import IGNORE_INDEX

Size = tuple[int, int]  # (height, width) of the canvas


def _none(size: Size, s: float) -> A.Compose | None:
    return None


def _flip(size: Size, s: float) -> A.Compose:
    """Horizontal flips only: what most hand-written notebooks start from."""
    return A.Compose([A.HorizontalFlip(p=0.5)])


def _light(size: Size, s: float) -> A.Compose:
    return A.Compose(
        [
            A.RandomResizedCrop(size=size, scale=(1 - 0.6 * s, 1.0), ratio=_ratio(size, 0.8, 1.25)),
            A.HorizontalFlip(p=0.5),
        ]
    )


def _strong(size: Size, s: float) -> A.Compose:
    return A.Compose(
        [
            A.RandomResizedCrop(size=size, scale=(1 - 0.8 * s, 1.0), ratio=_ratio(size, 0.75, 1.33)),
            A.HorizontalFlip(p=0.5),
            A.Affine(
                scale=(1 - 0.25 * s, 1 + 0.25 * s),
                translate_percent=(-0.1 * s, 0.1 * s),
                rotate=(-30 * s, 30 * s),
                fill=0,
                fill_mask=IGNORE_INDEX,
                p=0.7,
            ),
            A.ColorJitter(brightness=0.4 * s, contrast=0.4 * s, saturation=0.4 * s, hue=0.05 * s, p=0.8),
            A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.1, 0.1 + 1.5 * s), p=0.3),
        ]
    )


def _ratio(size: Size, low: float, high: float) -> tuple[float, float]:
    """Crop aspect ratios around the canvas's own (w / h), so a 4:3 canvas is not cropped square."""
    aspect = size[1] / size[0]
    return low * aspect, high * aspect


PIPELINES: dict[str, Callable[[Size, float], A.Compose | None]] = {
    "none": _none,
    "flip": _flip,
    "light": _light,
    "strong": _strong,
}


def build_augment(name: str, strength: float, size: Size, seed: int | None = None) -> A.Compose | None:
    """The pipeline ``name``; with ``seed``, it draws the same augmentations every time. Albumentations keeps
    its own random state, which the global seeds (``random``, NumPy, torch) do not touch."""
    pipeline = PIPELINES[name](size, strength)
    if pipeline is not None and seed is not None:
        pipeline.set_random_seed(seed)
    return pipeline
