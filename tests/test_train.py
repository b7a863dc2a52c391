"""train.fit alone: it learns a small task, stops when told, and refuses a NaN loss at once."""

from __future__ import annotations

import pytest
import torch

from segtune.config import DEFAULTS
from segtune.data import build_dataset
from segtune.spec import SyntheticSpec
from segtune.training.loop import NonFiniteLoss, fit

torch.set_num_threads(2)
DATA = build_dataset(SyntheticSpec(name="synthetic", num_images=40, image_size=64, num_classes=3, seed=0))
CONFIG = {**DEFAULTS, "arch": "Unet", "encoder": "resnet18", "lr": 3e-3, "batch_size": 8, "augment": "light"}


def test_fit_lowers_the_loss_and_learns_the_shapes() -> None:
    epochs: list[int] = []
    result = fit(CONFIG, DATA, epochs=5, on_epoch=lambda e, row, model: epochs.append(e))
    losses = [row["train_loss"] for row in result.history]
    assert epochs == [1, 2, 3, 4, 5] and result.epochs_run == 5
    assert losses[-1] < 0.5 * losses[0]
    assert result.best["val_miou"] > 0.5  # all-background would score about 0.3 here
    assert result.best_epoch == max(result.history, key=lambda r: r["val_miou"])["epoch"]
    assert any(k.endswith("weight") for k in result.best_state)
    assert all(t.device.type == "cpu" for t in result.best_state.values())


def test_fit_stops_when_the_callback_says_so() -> None:
    result = fit({**CONFIG, "encoder": "mobilenet_v2"}, DATA, epochs=5, on_epoch=lambda e, row, model: e >= 2)
    assert result.epochs_run == 2 and result.stopped_early


def test_nan_loss_stops_the_trial_at_once() -> None:
    with pytest.raises(NonFiniteLoss, match="loss is (nan|inf)"):
        fit({**CONFIG, "lr": 1e6, "optimizer": "sgd", "schedule": "none"}, DATA, epochs=3)
