"""`segtune retrain`: one configuration, trained with the same `fit` the trials use, scored on the test split."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from segtune.config import METRIC_LABELS, METRICS, TrainSettings
from segtune.data import build_dataset
from segtune.data.overlay import strip
from segtune.errors import DataError
from segtune.results.predict import TorchPredictor, full_resolution_note, predict_canvases, split_metrics
from segtune.spec import RetrainSpec
from segtune.training import checkpoint
from segtune.training.device import pick_device
from segtune.training.loop import fit
from segtune.training.metrics import json_safe
from segtune.training.models import build_model
from segtune.training.weights import weights_dir


def retrain(
    spec: RetrainSpec,
    out_dir: Path,
    train_on: str = "train",
    overlays: int = 6,
    out: Any = None,
    device: str | None = None,
) -> dict:
    out = out or sys.stdout
    dev = pick_device(device)
    data = build_dataset(spec.dataset, full_res=("test",))
    if len(data.splits["test"]) == 0:
        raise DataError("dataset: the test split is empty; nothing to evaluate the retrained model on")
    train_split = "train"
    if train_on == "train+val":
        data.splits["train+val"] = np.concatenate([data.splits["train"], data.splits["val"]])
        train_split = "train+val"
    cfg = spec.trial_config()
    metric = spec.metric
    print(
        f"retraining {cfg.arch} / {cfg.encoder} on {train_split} ({len(data.splits[train_split])} images) "
        f"for {spec.epochs} epochs" + (f", seed {spec.seed}" if spec.seed else ""),
        file=out,
        flush=True,
    )

    def show(epoch: int, row: dict[str, Any], model: torch.nn.Module) -> None:
        print(
            f"  epoch {epoch}/{spec.epochs}: train loss {row['train_loss']:.4f}, {METRIC_LABELS[metric]} "
            f"{row[metric]:.4f} ({row['epoch_seconds']:.1f} s)",
            file=out,
            flush=True,
        )

    workers = spec.train.loader_workers if spec.train.loader_workers != "auto" else (2 if dev.type == "cuda" else 0)
    settings = TrainSettings(
        precision=spec.train.precision,
        channels_last=spec.train.channels_last,
        loader_workers=workers,
        metric=metric,
        weights_dir=str(weights_dir()),
    )
    result = fit(cfg, data, spec.epochs, show, device=dev, settings=settings, train_split=train_split, seed=spec.seed)
    if train_on == "train":  # keep the epoch that validated best, as the trials did
        model = build_model(cfg.replace(encoder_weights=None), data.num_classes)
        model.load_state_dict(result.best_state)
    else:  # val was trained on, so it cannot pick an epoch: keep the last one
        assert result.model is not None
        model = result.model
    predictor = TorchPredictor([model], data.classes, data.resize, dev, precision=spec.train.precision)
    test = split_metrics(predictor, data, "test", full_resolution=True)  # what published figures use
    at_training_size = split_metrics(predictor, data, "test", full_resolution=False)
    metrics = {
        "test_miou": test["miou"],
        "test_dice": test["dice"],
        "test_pixel_acc": test["pixel_acc"],
        "test_iou_per_class": dict(zip(data.classes, test["iou_per_class"], strict=True)),
        "test_resolution": full_resolution_note(data),
        "test_at_training_size": {
            "resolution": f"{data.canvas[0]}x{data.canvas[1]} canvas ({data.resize.mode}), padding ignored",
            "miou": at_training_size["miou"],
            "dice": at_training_size["dice"],
            "pixel_acc": at_training_size["pixel_acc"],
        },
        "test_images": len(data.splits["test"]),
        "train_on": train_split,
        "seed": spec.seed,
        "epochs": result.epochs_run,
        "best_val_epoch": result.best_epoch if train_on == "train" else None,
        "metric": metric,  # picked the best epoch (train_on: train)
        **{k: (result.best if train_on == "train" else result.history[-1])[k] for k in METRICS},
        "val_resolution": "training size (the canvas), as the search's trials score it",
        "provenance": spec.provenance,
    }
    metrics = json_safe(metrics)  # a class absent from the test split has no IoU: null, not NaN
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
    checkpoint.save(
        out_dir / checkpoint.FILENAME,
        model,
        cfg,
        data.classes,
        data.resize,
        metrics=metrics,
        dataset=spec.dataset.model_dump(mode="json"),
    )  # export-model checks on its pictures
    idx = data.splits["test"][:overlays]
    preds = predict_canvases(predictor, data.images[idx])
    (out_dir / "overlays").mkdir(exist_ok=True)
    for j, i in enumerate(idx):
        h, w = data.content[i]  # the picture's part of the canvas, without the padding
        picture = strip(data.images[i][:h, :w], data.masks[i][:h, :w], preds[j][:h, :w])
        Image.fromarray(picture).save(out_dir / "overlays" / f"{data.names[i]}.png")
    print(
        f"test mIoU {test['miou']:.4f}, Dice {test['dice']:.4f}, pixel accuracy {test['pixel_acc']:.4f} "
        f"on {len(data.splits['test'])} images at their original size (at the training size: mIoU "
        f"{at_training_size['miou']:.4f})",
        file=out,
    )
    print(
        f"wrote {out_dir / checkpoint.FILENAME}, {out_dir / 'metrics.json'}, {len(idx)} overlays in "
        f"{out_dir / 'overlays'}",
        file=out,
    )
    return metrics
