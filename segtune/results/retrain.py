"""`segtune retrain`: one configuration, trained with the same `train.fit` the trials use, scored on the test split."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from segtune.data import build_dataset
from segtune.errors import DataError
from segtune.results.overlay import strip
from segtune.results.predict import predict_arrays
from segtune.spec import RetrainSpec
from segtune.training import checkpoint
from segtune.training.loop import evaluate, fit, loader, pick_device
from segtune.training.models import build_model


def retrain(spec: RetrainSpec, out_dir: Path, train_on: str = "train", overlays: int = 6, out: Any = None) -> dict:
    out = out or sys.stdout
    data = build_dataset(spec.dataset)
    if len(data.splits["test"]) == 0:
        raise DataError("dataset: the test split is empty; nothing to evaluate the retrained model on")
    train_split = "train"
    if train_on == "train+val":
        data.splits["train+val"] = np.concatenate([data.splits["train"], data.splits["val"]])
        train_split = "train+val"
    cfg = spec.config
    print(f"retraining {cfg['arch']} / {cfg['encoder']} on {train_split} ({len(data.splits[train_split])} images) "
          f"for {spec.epochs} epochs", file=out, flush=True)  # fmt: skip

    def show(epoch: int, row: dict[str, Any], model: torch.nn.Module) -> None:
        print(f"  epoch {epoch}/{spec.epochs}: train loss {row['train_loss']:.4f}, val mIoU {row['val_miou']:.4f} "
              f"({row['epoch_seconds']:.1f} s)", file=out, flush=True)  # fmt: skip

    settings = {**spec.train.model_dump(), "loader_workers": 0}
    result = fit(cfg, data, spec.epochs, show, settings=settings, train_split=train_split, seed=0)
    device = pick_device()
    if train_on == "train":  # keep the epoch that validated best, as the trials did
        model = build_model({**cfg, "encoder_weights": None}, data.num_classes)
        model.load_state_dict(result.best_state)
        model.to(device)
    else:  # val was trained on, so it cannot pick an epoch: keep the last one
        assert result.model is not None
        model = result.model
    test = evaluate(model, loader(data, "test", 16, False, cfg, 0, device), data.num_classes, device)
    metrics = {
        "test_miou": test["miou"],
        "test_dice": test["dice"],
        "test_pixel_acc": test["pixel_acc"],
        "test_iou_per_class": dict(zip(data.classes, test["iou_per_class"], strict=True)),
        "test_images": len(data.splits["test"]),
        "train_on": train_split,
        "epochs": result.epochs_run,
        "best_val_epoch": result.best_epoch if train_on == "train" else None,
        "val_miou": result.best["val_miou"] if train_on == "train" else result.history[-1]["val_miou"],
        "provenance": spec.provenance,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metrics, indent=2, default=lambda v: None)
    (out_dir / "metrics.json").write_text(text)
    checkpoint.save(out_dir / checkpoint.FILENAME, model, cfg, data.classes, data.image_size,
                    metrics=json.loads(text))  # fmt: skip
    idx = data.splits["test"][:overlays]
    preds = predict_arrays(model.eval(), data.images[idx])
    (out_dir / "overlays").mkdir(exist_ok=True)
    for j, i in enumerate(idx):
        picture = strip(data.images[i], data.masks[i], preds[j])
        Image.fromarray(picture).save(out_dir / "overlays" / f"{data.names[i]}.png")
    print(f"test mIoU {test['miou']:.4f}, Dice {test['dice']:.4f}, pixel accuracy {test['pixel_acc']:.4f} "
          f"on {len(data.splits['test'])} images", file=out)  # fmt: skip
    print(f"wrote {out_dir / checkpoint.FILENAME}, {out_dir / 'metrics.json'}, {len(idx)} overlays in "
          f"{out_dir / 'overlays'}", file=out)  # fmt: skip
    return metrics
