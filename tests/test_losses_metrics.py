"""Losses and metrics against values computed by hand on a 4-pixel image, ignore index included.

Target [0, 0, 1, ignore]; prediction (as near one-hot logits) [0, 1, 1, 0]. On the three pixels
that count: class 0 has 1 true positive, 1 false negative; class 1 has 1 true positive, 1 false
positive; class 2 occurs nowhere.
"""

from __future__ import annotations

import math

import pytest
import torch

from segtune.config import TrialConfig
from segtune.data.labels import IGNORE_INDEX
from segtune.training.losses import build_loss
from segtune.training.metrics import SegMetrics

TARGET = torch.tensor([[[0, 0, 1, IGNORE_INDEX]]])
PRED = [0, 1, 1, 0]


def logits(margin: float = 20.0, classes: int = 2) -> torch.Tensor:
    out = torch.full((1, classes, 1, 4), -margin)
    for i, c in enumerate(PRED):
        out[0, c, 0, i] = margin
    return out


def loss(name: str, x: torch.Tensor, **cfg) -> float:
    return float(build_loss(TrialConfig(loss=name, **cfg))(x, TARGET))


def test_cross_entropy_skips_ignored_pixels_and_uses_class_weights() -> None:
    # one wrong pixel of three, logit gap 40: 40/3; the ignored (wrong-ish) pixel adds nothing
    assert loss("ce", logits()) == pytest.approx(40 / 3, rel=1e-5)
    # weighted: sum(w_t * nll) / sum(w_t) over counted pixels = (1*0 + 1*40 + 3*0) / (1 + 1 + 3)
    assert loss("ce", logits(), class_weights=[1.0, 3.0]) == pytest.approx(40 / 5, rel=1e-5)


def test_dice_tversky_focal_lovasz_by_hand() -> None:
    # Dice per class: 2*1/(1+2) = 2/3 for both classes -> loss 1/3
    assert loss("dice", logits()) == pytest.approx(1 / 3, abs=1e-4)
    # Tversky alpha=0.3 (false positives), beta=0.7 (false negatives):
    # class 0: 1/(1 + 0.7) ; class 1: 1/(1 + 0.3) ; loss = mean(1 - score)
    expected = ((1 - 1 / 1.7) + (1 - 1 / 1.3)) / 2
    assert loss("tversky", logits(), tversky_alpha=0.3) == pytest.approx(expected, abs=1e-4)
    # smp's multiclass focal loss is one-vs-rest sigmoid focal, averaged: with zero logits every
    # term is (1 - 0.5)^2 * ln 2
    assert loss("focal", torch.zeros(1, 2, 1, 4)) == pytest.approx(0.25 * math.log(2), rel=1e-5)
    assert loss("dice+focal", logits()) == pytest.approx(loss("dice", logits()) + loss("focal", logits()), rel=1e-6)
    assert loss("lovasz", logits(margin=20.0)) == pytest.approx(0.5, abs=1e-4)  # mean of 1 - IoU, IoU = 1/2 each


def test_metrics_by_hand_with_an_absent_class() -> None:
    m = SegMetrics(num_classes=3)
    m.update(logits(classes=3), TARGET)
    out = m.compute()
    assert out["iou_per_class"][:2] == pytest.approx([0.5, 0.5])  # TP / (TP + FP + FN) = 1 / 2
    assert math.isnan(out["iou_per_class"][2])  # class 2 occurs nowhere: no IoU, not in the mean
    assert out["miou"] == pytest.approx(0.5)
    assert out["dice"] == pytest.approx(2 / 3)
    assert out["pixel_acc"] == pytest.approx(2 / 3)  # the ignored pixel would have been wrong


def test_metrics_accumulate_over_batches_like_torchmetrics() -> None:
    """segtune counts its own confusion matrix (torchmetrics costs a trial worker 0.8 s of start-up); it must
    count exactly what torchmetrics counts, ignored pixels left out, from logits or from class ids."""
    from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

    g = torch.Generator().manual_seed(0)
    ours, ref = SegMetrics(4), MulticlassJaccardIndex(4, average="macro", ignore_index=IGNORE_INDEX)
    ref_cm = MulticlassConfusionMatrix(4, ignore_index=IGNORE_INDEX)
    for batch in range(3):
        target = torch.randint(0, 4, (2, 8, 8), generator=g)
        target[:, 0] = IGNORE_INDEX
        pred = torch.randint(0, 4, (2, 8, 8), generator=g)
        scores = torch.nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float()
        ours.update(scores if batch % 2 else pred, target)
        ref.update(pred, target)
        ref_cm.update(pred, target)
    assert torch.equal(ours.confusion, ref_cm.compute())
    assert ours.compute()["miou"] == pytest.approx(float(ref.compute()), abs=1e-6)
    ours.reset()
    assert int(ours.confusion.sum()) == 0
