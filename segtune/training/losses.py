"""Trial config -> loss. Names: ce, bce, dice, focal, tversky, lovasz, and sums of them such as dice+focal.

Every loss takes logits (N, C, H, W) and integer targets (N, H, W) where IGNORE_INDEX marks
pixels that count for nothing (the trimap border in pets-binary, padding from augmentation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn as nn

from segtune.config import TrialConfig
from segtune.data.labels import IGNORE_INDEX

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _ce(config: TrialConfig) -> nn.Module:
    weights = config.class_weights
    weight = torch.tensor(weights, dtype=torch.float32) if weights else None
    return nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE_INDEX)


class BinaryCE(nn.Module):
    """BCE on the foreground logit of a two-class output (lesion vs skin), as binary models are trained.

    With logits (z0, z1), sigmoid(z1 - z0) is the softmax probability of class 1, so the model keeps
    one output per class like every other loss expects, and ``predict`` needs no special case.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != IGNORE_INDEX
        margin = (logits[:, 1] - logits[:, 0])[valid]
        if margin.numel() == 0:
            return logits.sum() * 0.0
        return nn.functional.binary_cross_entropy_with_logits(margin, (target[valid] == 1).float())


BINARY_ONLY = ("bce",)

LOSSES: dict[str, Callable[[TrialConfig], nn.Module]] = {
    "ce": _ce,
    "bce": lambda c: BinaryCE(),
    "dice": lambda c: smp.losses.DiceLoss("multiclass", ignore_index=IGNORE_INDEX),
    "focal": lambda c: smp.losses.FocalLoss("multiclass", gamma=c.focal_gamma, ignore_index=IGNORE_INDEX),
    "tversky": lambda c: smp.losses.TverskyLoss(
        "multiclass", alpha=c.tversky_alpha, beta=1 - c.tversky_alpha, ignore_index=IGNORE_INDEX
    ),
    "lovasz": lambda c: smp.losses.LovaszLoss("multiclass", ignore_index=IGNORE_INDEX),
}


def check_loss(name: Any, num_classes: int | None = None) -> str | None:
    if not isinstance(name, str) or not name:
        return f"must be a loss name, got {name!r}"
    parts = [part.strip() for part in name.split("+")]
    unknown = [part for part in parts if part not in LOSSES]
    if unknown:
        return f"unknown loss {unknown[0]!r} (known: {', '.join(LOSSES)}, or sums such as dice+focal)"
    binary = [part for part in parts if part in BINARY_ONLY]
    if binary and num_classes is not None and num_classes != 2:
        return f"{binary[0]} needs exactly 2 classes (the dataset has {num_classes}); use ce for more"
    return None


class SumLoss(nn.Module):
    """Unweighted sum of several losses (dice+focal is the usual one)."""

    def __init__(self, parts: list[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(part(logits, target) for part in self.parts)  # type: ignore[return-value]


def build_loss(config: TrialConfig) -> nn.Module:
    parts = [LOSSES[name.strip()](config) for name in config.loss.split("+")]
    return parts[0] if len(parts) == 1 else SumLoss(parts)
