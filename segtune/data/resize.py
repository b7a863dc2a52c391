"""How a picture becomes the model's input, the same from training to serving (retrain, predict, ONNX).

``pad`` (the default) fits the picture inside ``height x width`` keeping its aspect ratio and pads the
bottom and right up to a multiple of 32 (what the encoders need); the padding is labelled ignore, so it
costs nothing in the loss or the metrics. A prediction is cropped back to the picture's part and
resized to the original size. ``squash`` stretches every picture to ``height x width`` (segtune's only
behaviour before; studies made then keep it). ``image_size: 320`` means the long side; ``[h, w]`` a box.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from segtune.data.labels import IGNORE_INDEX

MODES = ("pad", "squash")


@dataclass(frozen=True)
class ResizePolicy:
    height: int
    width: int
    mode: str = "pad"
    multiple: int = 32

    @classmethod
    def from_spec(cls, image_size: int | list[int] | tuple[int, int], mode: str = "pad") -> ResizePolicy:
        if isinstance(image_size, int):
            return cls(image_size, image_size, mode)
        return cls(int(image_size[0]), int(image_size[1]), mode)

    @classmethod
    def from_checkpoint(cls, payload: dict[str, Any]) -> ResizePolicy:
        """A checkpoint's policy; checkpoints written before policies were recorded were squashed S x S."""
        if isinstance(payload.get("resize"), dict):
            return cls(**payload["resize"])
        size = int(payload["image_size"])
        return cls(size, size, "squash")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def canvas(self) -> tuple[int, int]:
        """(H, W) of the model's input: the box rounded up to the encoders' multiple."""
        return (
            math.ceil(self.height / self.multiple) * self.multiple,
            math.ceil(self.width / self.multiple) * self.multiple,
        )

    def content(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) a picture of ``height x width`` takes inside the canvas."""
        if self.mode == "squash":
            return self.height, self.width
        scale = min(self.height / height, self.width / width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def image(self, im: Image.Image) -> tuple[np.ndarray, tuple[int, int]]:
        """An RGB picture -> (canvas uint8 H x W x 3, the content's (h, w) at its top left)."""
        h, w = self.content(im.height, im.width)
        canvas = np.zeros((*self.canvas, 3), np.uint8)
        canvas[:h, :w] = np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR, reducing_gap=2.0))
        return canvas, (h, w)

    def mask(self, mk: Image.Image) -> np.ndarray:
        """A mask picture of raw values -> its content's size, nearest-neighbour (labels stay labels). Not yet
        on the canvas: raw values become classes first (a raw 255 may be a class), then :meth:`pad`."""
        h, w = self.content(mk.height, mk.width)
        return np.asarray(mk.resize((w, h), Image.NEAREST), dtype=np.uint8)

    def pad(self, labels: np.ndarray) -> np.ndarray:
        """Class indices of the content -> the canvas, the padding labelled ignore."""
        canvas = np.full(self.canvas, IGNORE_INDEX, np.uint8)
        canvas[: labels.shape[0], : labels.shape[1]] = labels
        return canvas

    def restore(self, logits: torch.Tensor, content: tuple[int, int], original: tuple[int, int]) -> torch.Tensor:
        """Logits over the canvas (N, C, H, W) -> logits of the original picture (N, C, h0, w0): the content
        cropped out, then interpolated back (argmax after, never before)."""
        h, w = content
        return F.interpolate(logits[..., :h, :w], size=tuple(original), mode="bilinear", align_corners=False)
