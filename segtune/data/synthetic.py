"""Generated scenes of coloured shapes on textured backgrounds: a learnable task with no files.

Each foreground class has its own shape and hue range, so a small network can tell them apart
within a few epochs; useful for smoke tests and for trying segtune without any data.
"""

from __future__ import annotations

import hashlib

import numpy as np

from segtune.data.base import SPLITS, Decode, SegData, carve
from segtune.spec import SyntheticSpec


def _scene(rng: np.random.Generator, shape: tuple[int, int], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    size = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = rng.normal(110, 25, (h, w, 3)).clip(0, 255)
    mask = np.zeros((h, w), dtype=np.uint8)
    for cls in range(1, num_classes):
        for _ in range(rng.integers(1, 3)):
            cy, cx = rng.uniform(0.15, 0.85, 2) * (h, w)  # one draw of two, as for square scenes
            r = rng.uniform(0.08, 0.2) * size
            if cls % 2:
                region = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            else:
                region = (abs(yy - cy) < r) & (abs(xx - cx) < r * 0.7)
            hue = np.array([(cls * 97) % 256, (cls * 53 + 80) % 256, (cls * 151 + 40) % 256], dtype=np.float32)
            image[region] = (hue + rng.normal(0, 20, 3)).clip(0, 255)
            mask[region] = cls
    return image.astype(np.uint8), mask


def build_synthetic(spec: SyntheticSpec, decode: Decode = Decode()) -> SegData:
    rng = np.random.default_rng(spec.seed)
    policy = spec.policy()
    pairs = [_scene(rng, policy.canvas, spec.num_classes) for _ in range(spec.num_images)]
    names = [f"synthetic_{i:04d}" for i in range(spec.num_images)]
    assignment = carve(names, {"val": spec.split.val, "test": spec.split.test}, spec.split.seed)
    splits = {s: np.array([i for i, n in enumerate(names) if assignment[n] == s], dtype=np.int64) for s in SPLITS}
    if spec.limit:
        splits = {s: idx[: spec.limit] for s, idx in splits.items()}
    splits = {s: idx if s in decode.only else idx[:0] for s, idx in splits.items()}
    classes = ["background"] + [f"class_{c}" for c in range(1, spec.num_classes)]
    masks = np.stack([p[1] for p in pairs])
    values = sorted(int(v) for v in np.unique(masks))
    images = np.stack([p[0] for p in pairs])
    digest = hashlib.sha256(
        images.tobytes() + masks.tobytes() + repr(sorted((k, v.tolist()) for k, v in splits.items())).encode()
    )
    full = {int(i): masks[i] for s in decode.full_res for i in splits[s]}  # generated at their own size already
    return SegData(
        images,
        masks,
        splits,
        classes,
        names,
        raw_values=values,
        labels_note="generated: class indices",
        fingerprint=f"{len(names)} generated scenes, sha256 {digest.hexdigest()[:16]}",
        resize=policy,
        full_masks=full,
    )
