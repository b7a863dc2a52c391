"""Validation metrics from one torchmetrics confusion matrix: mIoU, Dice, pixel accuracy, per-class IoU.

mIoU and Dice are macro averages over the classes that occur in the target or the prediction
(a class absent from both has no defined IoU and is left out, as in the usual benchmarks);
pixels labelled IGNORE_INDEX are excluded from everything.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from segtune.data.labels import IGNORE_INDEX


class SegMetrics:
    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        # validate_args off: the loop's own tensors need no per-batch checking (it costs a host sync each)
        self.confusion = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, validate_args=False).to(
            device
        )

    def update(self, logits_or_preds: torch.Tensor, target: torch.Tensor) -> None:
        preds = logits_or_preds.argmax(1) if logits_or_preds.dim() == 4 else logits_or_preds
        self.confusion.update(preds, target)

    def compute(self) -> dict[str, float | list[float]]:
        return metrics_from_confusion(self.confusion.compute().double().cpu())

    def reset(self) -> None:
        self.confusion.reset()


def _nanmean(values: list[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return sum(present) / len(present) if present else float("nan")


def metrics_from_confusion(cm: torch.Tensor) -> dict[str, float | list[float]]:
    """cm[i, j] = pixels of true class i predicted as j."""
    tp = cm.diag()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    union = tp + fp + fn
    iou = [float(t / u) if u > 0 else float("nan") for t, u in zip(tp, union, strict=True)]
    dice = [float(2 * t / (u + t)) if u > 0 else float("nan") for t, u in zip(tp, union, strict=True)]
    total = cm.sum()
    return {
        "miou": _nanmean(iou),
        "dice": _nanmean(dice),
        "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
        "iou_per_class": iou,
    }


def json_safe(value: Any) -> Any:
    """Metrics as strict JSON can hold them: NaN and infinities (a class absent from a split) become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
