"""Predict masks with a trained model: on decoded arrays (reports, retrain) or on image files (`segtune predict`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from segtune.errors import DataError
from segtune.results.overlay import blend
from segtune.training import checkpoint
from segtune.training.loop import Normalizer, pick_device


@torch.no_grad()
def predict_arrays(model: nn.Module, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """uint8 (N, S, S, 3) -> class indices uint8 (N, S, S)."""
    device = next(model.parameters()).device
    norm = Normalizer().to(device)
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size].transpose(0, 3, 1, 2))).to(device)
        out.append(model(norm(x)).argmax(1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *images.shape[1:3]), np.uint8)


def _read_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: cannot read image: {e}") from None


@torch.no_grad()
def predict_files(ckpt: str | Path, images: list[str | Path], out_dir: str | Path) -> list[Path]:
    """One mask PNG (class indices) and one overlay per image, both at the image's own size."""
    paths = [Path(p) for p in images]
    pictures = [_read_rgb(p) for p in paths]  # every image is read before anything is written
    device = pick_device()
    model, meta = checkpoint.load(ckpt, device)
    size = meta["image_size"]
    norm = Normalizer().to(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, picture in zip(paths, pictures, strict=True):
        resized = np.asarray(picture.resize((size, size), Image.BILINEAR))
        x = torch.from_numpy(resized.transpose(2, 0, 1).copy()).unsqueeze(0).to(device)
        logits = model(norm(x)).float()
        logits = F.interpolate(logits, size=(picture.height, picture.width), mode="bilinear", align_corners=False)
        mask = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        mask_path = out / f"{path.stem}_mask.png"
        Image.fromarray(mask, mode="L").save(mask_path)
        Image.fromarray(blend(np.asarray(picture), mask)).save(out / f"{path.stem}_overlay.png")
        written.append(mask_path)
    return written
