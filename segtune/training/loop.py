"""The one training loop: ``fit(config, data, epochs, on_epoch)``, used by search trials and by retrain.

It knows nothing of Ray or Optuna: it takes a typed :class:`TrialConfig`, the decoded
:class:`SegData`, :class:`TrainSettings`, and a callback called after every epoch with that epoch's
validation metrics. The callback returns True to stop early.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from segtune.config import MEDIAN_FREQUENCY, TrainSettings, TrialConfig
from segtune.data.base import SegData
from segtune.data.labels import IGNORE_INDEX
from segtune.training.augment import build_augment
from segtune.training.device import pick_device, precision_for
from segtune.training.losses import build_loss
from segtune.training.metrics import SegMetrics
from segtune.training.models import build_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

EpochCallback = Callable[[int, dict[str, Any], nn.Module], bool | None]
StateCallback = Callable[[int, dict[str, Any]], None]  # (epoch, a resumable snapshot of the training at its end)
StepGuard = Callable[[], AbstractContextManager[Any]]  # around each step: a search holds its node's timing off


CHECK_EVERY = 16  # steps between looks at the loss on the host (each look waits for the device)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: the trial cannot recover, so it stops (within CHECK_EVERY steps)."""


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
        return image, torch.from_numpy(np.ascontiguousarray(mask))  # uint8: widened on the device


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


def _optimizer(config: TrialConfig, params: Any) -> torch.optim.Optimizer:
    name, lr, wd = config.optimizer, config.lr, config.weight_decay
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    momentum = config.momentum
    return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=momentum, nesterov=momentum > 0)


def _scheduler(config: TrialConfig, opt: torch.optim.Optimizer, total_steps: int) -> Any:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(2, total_steps))
    return None


def _seed_worker_augment(worker_id: int) -> None:
    """In a loader worker: its own augmentation draws, from the seed torch gave it (the loader's base seed,
    drawn from the seeded global generator, plus the worker's id), not a copy of its siblings' state."""
    info = torch.utils.data.get_worker_info()
    if info is not None and info.dataset.transform is not None:
        info.dataset.transform.set_random_seed(info.seed % 2**32)


def loader(
    data: SegData,
    split: str,
    batch_size: int,
    train: bool,
    config: TrialConfig,
    workers: int,
    device: torch.device,
    seed: int | None = None,
) -> DataLoader:
    transform = build_augment(config.augment, config.aug_strength, data.canvas, seed) if train else None
    ds = ArrayDataset(data, split, transform)
    return DataLoader(
        ds,
        batch_size=min(batch_size, max(1, len(ds))),
        shuffle=train,
        drop_last=train and len(ds) > batch_size,  # a batch of one breaks BatchNorm
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=_seed_worker_augment if workers > 0 else None,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: DataLoader,
    num_classes: int,
    device: torch.device,
    precision: str = "auto",
    step_guard: StepGuard = nullcontext,
) -> dict[str, Any]:
    """Metrics of ``model`` over a loader, with the normalisation and the precision of training."""
    norm = Normalizer().to(device)
    metrics = SegMetrics(num_classes, device)
    model.eval()
    plan = precision_for(precision, device)
    for images, masks in batches:
        with step_guard():
            images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True).long()
            with plan.autocast(device):
                logits = model(norm(images))
            metrics.update(logits.float(), masks)
    return metrics.compute()


def fit(
    config: TrialConfig,
    data: SegData,
    epochs: int,
    on_epoch: EpochCallback | None = None,
    device: str | torch.device | None = None,
    settings: TrainSettings | None = None,
    train_split: str = "train",
    val_split: str = "val",
    seed: int = 0,
    step_guard: StepGuard = nullcontext,
    on_state: StateCallback | None = None,
    state_every: int = 1,
    resume: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``config`` on ``data`` for up to ``epochs``, validating after each one.

    The epoch that scores best on ``settings.metric`` is kept (``FitResult.best_state``). Raises
    NonFiniteLoss when the loss turns NaN or infinite, naming the epoch and step, and a CUDA
    OutOfMemoryError that names the batch size. ``step_guard`` is entered around every training and validation
    step (a search's trials hold their node's model timing off with it; search/nodes/quiet.py).

    Resumable: every ``state_every`` epochs but the last, before ``on_epoch``, ``on_state`` gets a snapshot
    (weights, optimizer, scheduler, scaler, the best epoch so far and the history: :func:`snapshot`); ``resume``
    (such a snapshot) continues from the epoch after it. Each epoch draws from its own seed (``seed`` and the
    epoch: shuffling, augmentations), so a resumed run trains exactly as the uninterrupted one would (loader
    workers aside).
    """
    settings = settings or TrainSettings()
    dev = pick_device(device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    # every source of randomness, so a trial in a reused worker draws exactly what it would in a fresh one
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    plan = precision_for(settings.precision, dev)
    if dev.type == "cuda":
        # every batch has one shape (images are decoded to one size): let cuDNN pick its fastest kernels
        torch.backends.cudnn.benchmark = True
        if settings.gpu_memory_fraction is not None:  # a neighbour's OOM stays the neighbour's
            torch.cuda.set_per_process_memory_fraction(settings.gpu_memory_fraction, dev)
    workers = settings.loader_workers
    memory_format = torch.channels_last if settings.channels_last and dev.type == "cuda" else None

    model = build_model(config, data.num_classes, weights_dir=settings.weights_dir).to(dev)
    if memory_format is not None:
        model = model.to(memory_format=memory_format)
    if config.class_weights == MEDIAN_FREQUENCY:
        config = config.replace(class_weights=median_frequency_weights(data, train_split))
    criterion = build_loss(config).to(dev)
    norm = Normalizer().to(dev)
    train_batches = loader(data, train_split, config.batch_size, True, config, workers, dev, seed)
    val_batches = loader(data, val_split, config.batch_size * 2, False, config, workers, dev)
    opt = _optimizer(config, model.parameters())
    scaler = torch.amp.GradScaler(dev.type, enabled=plan.scaler)
    accum = max(1, config.accum_steps)  # effective batch = batch_size x accum_steps
    updates_per_epoch = math.ceil(len(train_batches) / accum)
    sched = _scheduler(config, opt, epochs * updates_per_epoch)

    result = FitResult(best={}, best_epoch=0, best_state={})
    best_value = -math.inf
    first = 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        if sched is not None and resume.get("scheduler") is not None:
            sched.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        result.best, result.best_epoch, result.history = resume["best"], resume["best_epoch"], list(resume["history"])
        result.epochs_run, best_value = resume["epoch"], resume["best_value"]
        first = resume["epoch"] + 1
    started = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    for epoch in range(first, epochs + 1):
        epoch_start, started_at = time.perf_counter(), time.time()
        seed_epoch(seed, epoch, train_batches)
        model.train()
        loss_sum = torch.zeros((), device=dev)
        first_bad = torch.full((), -1, dtype=torch.long, device=dev)  # the first step whose loss was not finite
        steps = len(train_batches)
        for step, (images, masks) in enumerate(train_batches):
            with step_guard():
                x, y = norm(images.to(dev, non_blocking=True)), masks.to(dev, non_blocking=True).long()
                if memory_format is not None:
                    x = x.contiguous(memory_format=memory_format)
                try:
                    with plan.autocast(dev):
                        loss = criterion(model(x).float(), y)
                    scaler.scale(loss / accum).backward()
                except torch.cuda.OutOfMemoryError as e:
                    raise out_of_memory(e, config, dev) from None
                # no host sync per step: the check stays on the device, and the host looks every CHECK_EVERY steps
                first_bad = torch.where(~torch.isfinite(loss.detach()) & (first_bad < 0), step, first_bad)
                if (step + 1) % CHECK_EVERY == 0 or step + 1 == steps:
                    check_finite(first_bad, epoch, config)
                if (step + 1) % accum == 0 or step + 1 == steps:
                    scaler.step(opt)
                    scaler.update()
                    opt.zero_grad(set_to_none=True)
                    if sched is not None:
                        sched.step()
                loss_sum += loss.detach()
        train_loss = float(loss_sum / steps) if steps else float("nan")
        val = evaluate(model, val_batches, data.num_classes, dev, settings.precision, step_guard)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            **{f"val_{k}": v for k, v in val.items()},
            "epoch_seconds": time.perf_counter() - epoch_start,  # train + validation
            "started_at": started_at,  # wall clock: when this epoch's first training step began
        }
        result.history.append(row)
        result.epochs_run = epoch
        value = row[settings.metric] if not math.isnan(row[settings.metric]) else -1.0
        if value > best_value:
            best_value = value
            result.best, result.best_epoch = row, epoch
            if settings.keep_best_state:
                result.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        # the state first: a trial stopped (or paused) at this epoch's report can go on from it
        if on_state is not None and epoch < epochs and epoch % max(1, state_every) == 0:
            on_state(epoch, snapshot(epoch, model, opt, sched, scaler, result, best_value))
        if on_epoch is not None and on_epoch(epoch, row, model):
            result.stopped_early = epoch < epochs
            break
    result.seconds = time.perf_counter() - started
    result.model = model
    return result


def seed_epoch(seed: int, epoch: int, batches: DataLoader) -> None:
    """Epoch ``epoch``'s own draws (the shuffle, the augmentations, dropout): the same whether the run went
    through or was resumed there. Loader worker processes seed theirs from torch's generator
    (``_seed_worker_augment``)."""
    epoch_seed = seed * 100_003 + epoch
    random.seed(epoch_seed)
    np.random.seed(epoch_seed % 2**32)
    torch.manual_seed(epoch_seed)
    transform = batches.dataset.transform
    if transform is not None:
        transform.set_random_seed(epoch_seed % 2**32)


def snapshot(
    epoch: int,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    scaler: torch.amp.GradScaler,
    result: FitResult,
    best_value: float,
) -> dict[str, Any]:
    """Everything a run needs to go on after ``epoch``, on the CPU and copied (training goes on meanwhile)."""

    def cpu(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.detach().to("cpu", copy=True)
        if isinstance(value, dict):
            return {k: cpu(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(cpu(v) for v in value)
        return copy.deepcopy(value)

    return {
        "epoch": epoch,
        "model": cpu(model.state_dict()),
        "optimizer": cpu(opt.state_dict()),
        "scheduler": sched.state_dict() if sched is not None else None,
        "scaler": scaler.state_dict(),
        "best": copy.deepcopy(result.best),
        "best_epoch": result.best_epoch,
        "best_value": best_value,
        "history": copy.deepcopy(result.history),
    }


def check_finite(first_bad: torch.Tensor, epoch: int, config: TrialConfig) -> None:
    """Looks at the device's record of the first step whose loss was not finite (one host sync)."""
    at = int(first_bad)
    if at >= 0:
        raise NonFiniteLoss(
            f"loss is not finite at epoch {epoch} step {at + 1} (lr={config.lr:.3g}, loss={config.loss})"
        )


def out_of_memory(error: torch.cuda.OutOfMemoryError, config: TrialConfig, device: torch.device) -> Exception:
    """The same error, saying which batch size did not fit (the trial ends FAIL with it as its reason)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else "out of memory"
    return torch.cuda.OutOfMemoryError(
        f"CUDA out of memory at batch size {config.batch_size} x {config.accum_steps} accumulation step(s) on "
        f"{device} ({config.arch} / {config.encoder}): {first[:200]}"
    )
