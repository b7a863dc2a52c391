"""Validation metrics from one confusion matrix: mIoU, Dice, pixel accuracy, per-class IoU.

The matrix is counted once per batch (``bincount`` on the CPU, ``index_add_`` on a GPU), the way torchmetrics'
MulticlassConfusionMatrix counts (tests/test_losses_metrics.py checks the two agree). Not torchmetrics itself:
importing it costs a trial worker 0.8 s of its start-up (after torch and smp), once per slot and run, and once
per trial without reused workers.

mIoU and Dice are macro averages over the classes that occur in the target or the prediction
(a class absent from both has no defined IoU and is left out, as in the usual benchmarks);
pixels labelled IGNORE_INDEX are excluded from everything.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from segtune.data.labels import IGNORE_INDEX


class SegMetrics:
    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)

    def update(self, logits_or_preds: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch: ``target`` holds class ids or IGNORE_INDEX (the data builders check that)."""
        preds = logits_or_preds.argmax(1) if logits_or_preds.dim() == 4 else logits_or_preds
        n = self.num_classes
        # ignored pixels go to one extra cell instead of being masked out: no data-dependent shape, so a GPU
        # counts without waiting for the host (index_add_; bincount would read the largest value back first)
        cells = torch.where(target == IGNORE_INDEX, n * n, target.long() * n + preds.long()).flatten()
        if cells.device.type == "cpu":
            counts = torch.bincount(cells, minlength=n * n + 1)
        else:
            counts = torch.zeros(n * n + 1, dtype=torch.long, device=cells.device).index_add_(
                0, cells, torch.ones_like(cells)
            )
        self.confusion += counts[: n * n].reshape(n, n)

    def compute(self) -> dict[str, float | list[float]]:
        return metrics_from_confusion(self.confusion.double().cpu())

    def reset(self) -> None:
        self.confusion.zero_()


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
