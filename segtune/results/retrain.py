"""`segtune retrain`: one configuration, trained with the same `fit` the trials use, scored on the test split.

It trains on a slot of the Ray cluster with the spec's ``resources`` (a trial's: search/fits/), and is scored there;
the driver writes metrics.json, the model file and the overlays. ``--device`` trains in this process instead, as
before."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from segtune.config import METRIC_LABELS, METRICS, TrainSettings
from segtune.data import SegData, build_dataset
from segtune.data.overlay import strip
from segtune.errors import DataError
from segtune.results.predict import TorchPredictor, full_resolution_note, predict_canvases, split_metrics
from segtune.search.fits import FitJob, FitOutcome, runner
from segtune.spec import RetrainSpec
from segtune.training import checkpoint
from segtune.training.device import pick_device
from segtune.training.metrics import json_safe
from segtune.training.models import build_model
from segtune.training.weights import weights_dir


def test_scores(model: torch.nn.Module, data: SegData, device: torch.device, settings: TrainSettings) -> dict:
    """Where the model trained: the test split at each picture's original size (what published figures use) and at
    the training size."""
    predictor = TorchPredictor([model], data.classes, data.resize, device, precision=settings.precision)
    return {
        "full": split_metrics(predictor, data, "test", full_resolution=True),
        "canvas": split_metrics(predictor, data, "test", full_resolution=False),
    }


def retrain(
    spec: RetrainSpec,
    out_dir: Path,
    train_on: str = "train",
    overlays: int = 6,
    out: Any = None,
    device: str | None = None,
    address: str | None = None,
) -> dict:
    """Train on a slot of the Ray cluster at ``address`` (default: a private local one) with the spec's
    ``resources``, as a trial would; with ``device``, in this process on that device, as before."""
    out = out or sys.stdout
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

    def show(job: FitJob, row: dict[str, Any]) -> None:
        value = row[metric] if row[metric] is not None else float("nan")
        print(
            f"  epoch {row['epoch']}/{spec.epochs}: train loss {row['train_loss']:.4f}, {METRIC_LABELS[metric]} "
            f"{value:.4f} ({row['epoch_seconds']:.1f} s)",
            file=out,
            flush=True,
        )

    here = pick_device(device)  # this process's own work: the overlays (and, with --device, everything)
    workers = spec.train.loader_workers if spec.train.loader_workers != "auto" else (2 if here.type == "cuda" else 0)
    settings = TrainSettings(
        precision=spec.train.precision,
        channels_last=spec.train.channels_last,
        loader_workers=workers,
        metric=metric,
        weights_dir=str(weights_dir()),
        checkpoint_every=spec.train.checkpoint_every,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    job = FitJob(
        number=0,
        label=f"{cfg.arch} / {cfg.encoder}",
        config=cfg,
        epochs=spec.epochs,
        train=data.splits[train_split],
        val=data.splits["val"],
        destination=str((out_dir / checkpoint.FILENAME).resolve()),
        seed=spec.seed,
        keep="best" if train_on == "train" else "last",  # val trained on cannot pick an epoch: the last one
        evaluate=test_scores,
    )
    fitted: list[FitOutcome] = []
    with runner(data, settings, out_dir, 1, spec.resources, spec.train, address, 1, device, out) as fits:
        fits.run([job], lambda _, outcome: fitted.append(outcome), show)
    result = fitted[0]
    test, at_training_size = result.evaluation["full"], result.evaluation["canvas"]
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
        **{k: (result.best if train_on == "train" else result.last)[k] for k in METRICS},
        "val_resolution": "training size (the canvas), as the search's trials score it",
        "provenance": spec.provenance,
    }
    metrics = json_safe(metrics)  # a class absent from the test split has no IoU: null, not NaN
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
    model = build_model(cfg.replace(encoder_weights=None), data.num_classes)
    model.load_state_dict(torch.load(job.destination, map_location="cpu", weights_only=True)["state_dict"])
    checkpoint.save(
        out_dir / checkpoint.FILENAME,
        model,
        cfg,
        data.classes,
        data.resize,
        metrics=metrics,
        dataset=spec.dataset.model_dump(mode="json"),
    )  # export-model checks on its pictures
    predictor = TorchPredictor([model], data.classes, data.resize, here, precision=spec.train.precision)
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
