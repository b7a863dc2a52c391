"""The one training loop: ``fit(config, data, epochs, on_epoch)``, used by search trials and by retrain.

It knows nothing of Ray or Optuna: it takes a plain config dict (see ``config.DEFAULTS``), the
decoded :class:`SegData`, and a callback called after every epoch with that epoch's validation
metrics. The callback returns True to stop early.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from segtune.config import MEDIAN_FREQUENCY
from segtune.data.base import SegData
from segtune.data.labels import IGNORE_INDEX
from segtune.training.augment import build_augment
from segtune.training.losses import build_loss
from segtune.training.metrics import SegMetrics
from segtune.training.models import build_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

EpochCallback = Callable[[int, dict[str, Any], nn.Module], bool | None]


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: the trial cannot recover, so it stops at once."""


class ArrayDataset(Dataset):
    """Samples from the shared decoded arrays; augmentation runs per sample on uint8 HWC."""

    def __init__(self, data: SegData, split: str, transform: Any = None):
        self.images, self.masks = data.images, data.masks
        self.indices = data.splits[split]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = self.indices[i]
        image, mask = self.images[j], self.masks[j]
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return image, torch.from_numpy(np.ascontiguousarray(mask)).long()


@dataclass
class FitResult:
    best: dict[str, Any]  # validation metrics of the best epoch
    best_epoch: int
    best_state: dict[str, torch.Tensor]  # on the CPU
    model: nn.Module | None = None  # as trained to the last epoch run
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_run: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Normalizer(nn.Module):
    """uint8 NCHW -> float normalised with ImageNet statistics, on the device, once per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def median_frequency_weights(data: SegData, split: str = "train") -> list[float]:
    """w_c = median(f) / f_c over the classes' pixel frequencies in ``split`` (Eigen & Fergus; SegNet on CamVid).
    A class absent from the split gets weight 0: no pixel of it can be wrong."""
    masks = data.masks[data.splits[split]]
    counts = np.bincount(masks[masks != IGNORE_INDEX].ravel(), minlength=data.num_classes)[: data.num_classes]
    freq = counts / max(1, counts.sum())
    present = freq[freq > 0]
    median = float(np.median(present)) if present.size else 1.0
    return [round(median / f, 4) if f > 0 else 0.0 for f in freq.tolist()]


def _optimizer(config: dict[str, Any], params: Any) -> torch.optim.Optimizer:
    name, lr, wd = config["optimizer"], config["lr"], config["weight_decay"]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    momentum = config["momentum"]
    return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=momentum, nesterov=momentum > 0)


def _scheduler(config: dict[str, Any], opt: torch.optim.Optimizer, total_steps: int) -> Any:
    if config["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
    if config["schedule"] == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config["lr"], total_steps=max(2, total_steps))
    return None


def loader(
    data: SegData, split: str, batch_size: int, train: bool, config: dict[str, Any], workers: int, device: torch.device
) -> DataLoader:
    transform = build_augment(config["augment"], config["aug_strength"], data.image_size) if train else None
    ds = ArrayDataset(data, split, transform)
    return DataLoader(
        ds,
        batch_size=min(batch_size, max(1, len(ds))),
        shuffle=train,
        drop_last=train and len(ds) > batch_size,  # a batch of one breaks BatchNorm
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: DataLoader, num_classes: int, device: torch.device, precision: str = "bf16"
) -> dict[str, Any]:
    """Metrics of ``model`` over a loader, with the same normalisation as training."""
    norm = Normalizer().to(device)
    metrics = SegMetrics(num_classes, device)
    model.eval()
    use_amp = device.type == "cuda" and precision == "bf16"
    for images, masks in batches:
        images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(norm(images))
        metrics.update(logits.float(), masks)
    return metrics.compute()


def fit(
    config: dict[str, Any],
    data: SegData,
    epochs: int,
    on_epoch: EpochCallback | None = None,
    device: str | torch.device | None = None,
    settings: dict[str, Any] | None = None,
    train_split: str = "train",
    val_split: str = "val",
    seed: int = 0,
) -> FitResult:
    """Train ``config`` on ``data`` for up to ``epochs``, validating after each one.

    ``settings`` holds what is not a hyperparameter: precision (bf16|fp32), channels_last,
    loader_workers. Raises NonFiniteLoss as soon as the loss is NaN or infinite.
    """
    settings = settings or {}
    dev = pick_device(device)
    torch.manual_seed(seed)
    precision = settings.get("precision", "bf16")
    use_amp = dev.type == "cuda" and precision == "bf16"
    workers = int(settings.get("loader_workers", 0) or 0)
    memory_format = torch.channels_last if settings.get("channels_last") and dev.type == "cuda" else None

    model = build_model(config, data.num_classes).to(dev)
    if memory_format is not None:
        model = model.to(memory_format=memory_format)
    if config.get("class_weights") == MEDIAN_FREQUENCY:
        config = {**config, "class_weights": median_frequency_weights(data, train_split)}
    criterion = build_loss(config).to(dev)
    norm = Normalizer().to(dev)
    train_batches = loader(data, train_split, config["batch_size"], True, config, workers, dev)
    val_batches = loader(data, val_split, config["batch_size"] * 2, False, config, workers, dev)
    opt = _optimizer(config, model.parameters())
    accum = max(1, int(config.get("accum_steps", 1)))  # effective batch = batch_size x accum_steps
    updates_per_epoch = math.ceil(len(train_batches) / accum)
    sched = _scheduler(config, opt, epochs * updates_per_epoch)

    result = FitResult(best={}, best_epoch=0, best_state={})
    best_value = -math.inf
    started = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        losses = []
        for step, (images, masks) in enumerate(train_batches):
            images, masks = images.to(dev, non_blocking=True), masks.to(dev, non_blocking=True)
            x = norm(images)
            if memory_format is not None:
                x = x.contiguous(memory_format=memory_format)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = criterion(model(x).float(), masks)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(
                    f"loss is {loss.item()} at epoch {epoch} step {step + 1} "
                    f"(lr={config['lr']:.3g}, loss={config['loss']})"
                )
            (loss / accum).backward()
            if (step + 1) % accum == 0 or step + 1 == len(train_batches):
                opt.step()
                opt.zero_grad(set_to_none=True)
                if sched is not None:
                    sched.step()
            losses.append(loss.detach())
        train_loss = float(torch.stack(losses).mean()) if losses else float("nan")
        val = evaluate(model, val_batches, data.num_classes, dev, precision)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            **{f"val_{k}": v for k, v in val.items()},
            "epoch_seconds": time.perf_counter() - epoch_start,
        }
        result.history.append(row)
        result.epochs_run = epoch
        value = row["val_miou"] if not math.isnan(row["val_miou"]) else -1.0
        if value > best_value:
            best_value = value
            result.best, result.best_epoch = row, epoch
            result.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if on_epoch is not None and on_epoch(epoch, row, model):
            result.stopped_early = epoch < epochs
            break
    result.seconds = time.perf_counter() - started
    result.model = model
    return result
