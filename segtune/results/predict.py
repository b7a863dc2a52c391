"""Predict masks with a trained model, through the resize policy it was trained with, at each picture's own size.

A :class:`Predictor` turns a batch of canvases into class probabilities; the PyTorch one may average
several models (a fold ensemble) and flipped copies (test-time augmentation), and `segtune predict`
also takes an ONNX file (results/onnx.py). Around it, the same steps for every caller: the picture is
fitted into the canvas, the probabilities are cropped back to the picture's part and resized to its
original size, and only then does argmax pick a class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, UnidentifiedImageError

from segtune.data.base import SegData
from segtune.data.overlay import blend
from segtune.data.resize import ResizePolicy
from segtune.errors import DataError
from segtune.training import checkpoint
from segtune.training.device import pick_device, precision_for
from segtune.training.loop import Normalizer
from segtune.training.metrics import SegMetrics


class Predictor(Protocol):
    classes: list[str]
    resize: ResizePolicy

    def probabilities(self, canvases: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) canvases -> float (N, C, H, W) class probabilities (on the CPU or a device)."""
        ...


class TorchPredictor:
    """One model or several (a fold ensemble: the mean of their softmax; a search ensemble: their weighted mean,
    ``weights`` one number a model, normalised here), optionally with flip TTA."""

    def __init__(
        self,
        models: list[nn.Module],
        classes: list[str],
        resize: ResizePolicy,
        device: torch.device,
        flip: bool = False,
        precision: str = "fp32",
        weights: list[float] | None = None,
    ):
        self.models = [m.to(device).eval() for m in models]
        given = [1.0] * len(self.models) if weights is None else [float(w) for w in weights]
        if len(given) != len(self.models) or min(given, default=1.0) <= 0:
            raise ValueError(f"weights: one positive number a model ({len(self.models)}), got {weights}")
        self.weights = [w / sum(given) for w in given]
        self.classes, self.resize, self.device, self.flip = classes, resize, device, flip
        self.norm = Normalizer().to(device)
        self.plan = precision_for(precision, device)

    @torch.no_grad()
    def probabilities(self, canvases: np.ndarray) -> torch.Tensor:
        x = self.norm(torch.from_numpy(np.ascontiguousarray(canvases.transpose(0, 3, 1, 2))).to(self.device))
        total = None
        for model, weight in zip(self.models, self.weights, strict=True):
            views = [(x, False), (x.flip(-1), True)] if self.flip else [(x, False)]
            for view, flipped in views:
                with self.plan.autocast(self.device):
                    p = model(view).float().softmax(1)
                p = (p.flip(-1) if flipped else p) * weight
                total = p if total is None else total + p
        assert total is not None
        return total / (2 if self.flip else 1)


def load_predictor(path: str | Path, device: str | None = None, trust_code: bool = False) -> Predictor:
    """A checkpoint (model.pt, or a trial's folder) or an ONNX file, ready to predict."""
    path = Path(path)
    if path.suffix == ".onnx":
        from segtune.results.onnx import OnnxPredictor

        return OnnxPredictor(path)
    dev = pick_device(device)
    model, meta = checkpoint.load(path, dev, trust_code=trust_code)
    return TorchPredictor([model], meta["classes"], ResizePolicy.from_checkpoint(meta), dev)


def predict_picture(predictor: Predictor, picture: Image.Image) -> np.ndarray:
    """One RGB picture -> class indices uint8 at its own size."""
    canvas, content = predictor.resize.image(picture)
    probs = predictor.probabilities(canvas[None])
    full = predictor.resize.restore(
        torch.as_tensor(probs, dtype=torch.float32), content, (picture.height, picture.width)
    )
    return full.argmax(1)[0].to(torch.uint8).cpu().numpy()


def predict_canvases(predictor: Predictor, canvases: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Class indices on the canvas (the training size): uint8 (N, H, W, 3) -> uint8 (N, H, W)."""
    out = [
        predictor.probabilities(canvases[i : i + batch_size]).argmax(1).to(torch.uint8).cpu().numpy()
        for i in range(0, len(canvases), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, *canvases.shape[1:3]), np.uint8)


def split_metrics(predictor: Predictor, data: SegData, split: str, full_resolution: bool = True) -> dict[str, Any]:
    """Metrics over a split: at each picture's original size (its full-resolution mask, the probabilities
    resized back before argmax), or on the training-size canvas."""
    metrics = SegMetrics(data.num_classes, "cpu")
    indices = data.splits[split]
    for start in range(0, len(indices), 8):
        idx = indices[start : start + 8]
        probs = torch.as_tensor(predictor.probabilities(data.images[idx]), dtype=torch.float32).cpu()
        for j, i in enumerate(idx):
            if full_resolution:
                pred = data.resize.restore(probs[j : j + 1], tuple(data.content[i]), tuple(data.original[i]))
                metrics.update(pred.argmax(1), torch.from_numpy(data.full_masks[int(i)]).long()[None])
            else:
                metrics.update(probs[j : j + 1].argmax(1), torch.from_numpy(data.masks[i]).long()[None])
    return metrics.compute()


def full_resolution_note(data: SegData, split: str = "test") -> str:
    """What "full resolution" means for a split's metrics, in words (metrics.json, finish.json)."""
    note = "original: each test mask at its own size, predictions resized back before argmax"
    resized = len(set(data.resized_masks) & set(data.splits[split].tolist()))
    if resized:  # dataset.mask_resize: those masks' own size was another; they are scored at their picture's
        note += (
            f"; {resized} {split} masks were stored at another size than their picture and are resized to it "
            "nearest-neighbour (dataset.mask_resize), so they are scored at their picture's size"
        )
    return note


def _read_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: cannot read image: {e}") from None


def predict_files(
    model_path: str | Path,
    images: list[str | Path],
    out_dir: str | Path,
    trust_code: bool = False,
    device: str | None = None,
) -> list[Path]:
    """One mask PNG (class indices) and one overlay per image, both at the image's own size."""
    paths = [Path(p) for p in images]
    pictures = [_read_rgb(p) for p in paths]  # every image is read before anything is written
    predictor = load_predictor(model_path, device, trust_code)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, picture in zip(paths, pictures, strict=True):
        mask = predict_picture(predictor, picture)
        mask_path = out / f"{path.stem}_mask.png"
        Image.fromarray(mask, mode="L").save(mask_path)
        Image.fromarray(blend(np.asarray(picture), mask)).save(out / f"{path.stem}_overlay.png")
        written.append(mask_path)
    return written
