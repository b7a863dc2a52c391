"""Generated scenes of coloured shapes on textured backgrounds: a learnable task with no files.

Each foreground class has its own shape and hue range, so a small network can tell them apart
within a few epochs; useful for smoke tests and for trying segtune without any data.
"""

from __future__ import annotations

import numpy as np

from segtune.data.base import SPLITS, SegData, carve
from segtune.spec import SyntheticSpec


def _scene(rng: np.random.Generator, size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = rng.normal(110, 25, (size, size, 3)).clip(0, 255)
    mask = np.zeros((size, size), dtype=np.uint8)
    for cls in range(1, num_classes):
        for _ in range(rng.integers(1, 3)):
            cy, cx = rng.uniform(0.15, 0.85, 2) * size
            r = rng.uniform(0.08, 0.2) * size
            if cls % 2:
                region = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            else:
                region = (abs(yy - cy) < r) & (abs(xx - cx) < r * 0.7)
            hue = np.array([(cls * 97) % 256, (cls * 53 + 80) % 256, (cls * 151 + 40) % 256], dtype=np.float32)
            image[region] = (hue + rng.normal(0, 20, 3)).clip(0, 255)
            mask[region] = cls
    return image.astype(np.uint8), mask


def build_synthetic(spec: SyntheticSpec) -> SegData:
    rng = np.random.default_rng(spec.seed)
    pairs = [_scene(rng, spec.image_size, spec.num_classes) for _ in range(spec.num_images)]
    names = [f"synthetic_{i:04d}" for i in range(spec.num_images)]
    assignment = carve(names, {"val": spec.split.val, "test": spec.split.test}, spec.split.seed)
    splits = {s: np.array([i for i, n in enumerate(names) if assignment[n] == s], dtype=np.int64) for s in SPLITS}
    if spec.limit:
        splits = {s: idx[: spec.limit] for s, idx in splits.items()}
    classes = ["background"] + [f"class_{c}" for c in range(1, spec.num_classes)]
    return SegData(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), splits, classes, names)
