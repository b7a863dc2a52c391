"""Masks as pictures: a fixed palette, masks blended over images, and image | truth | prediction strips."""

from __future__ import annotations

import numpy as np

from segtune.data.labels import IGNORE_INDEX

# class 0 (background) stays unpainted; then distinct, colour-blind-friendly hues
PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 159, 0],
        [86, 180, 233],
        [0, 158, 115],
        [240, 228, 66],
        [0, 114, 178],
        [213, 94, 0],
        [204, 121, 167],
        [153, 153, 153],
        [128, 0, 0],
        [0, 128, 128],
        [128, 128, 0],
    ],
    dtype=np.uint8,
)


def colorize(mask: np.ndarray) -> np.ndarray:
    rgb = PALETTE[mask % len(PALETTE)]
    rgb[mask == IGNORE_INDEX] = (255, 255, 255)
    return rgb


def blend(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Paint every non-background class (and the ignore label, in white) over the image."""
    out = image.astype(np.float32)
    painted = mask != 0
    out[painted] = (1 - alpha) * out[painted] + alpha * colorize(mask)[painted]
    return out.clip(0, 255).astype(np.uint8)


def strip(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, gap: int = 4) -> np.ndarray:
    """image | truth over image | prediction over image, side by side."""
    panels = [image] + ([blend(image, truth)] if truth is not None else []) + [blend(image, pred)]
    h = image.shape[0]
    spacer = np.full((h, gap, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for p in panels:
        parts += [p, spacer]
    return np.concatenate(parts[:-1], axis=1)
