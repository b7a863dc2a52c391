"""The typed trial configuration and training settings: what `fit` is built from.

:class:`TrialConfig` holds every parameter a trial is built from (the spec's ``space`` keys), each
with its documented default; it is made once, from the sampled parameters of a trial or the
``config`` section of a retrain spec, so a missing key takes its default and an unknown key is a
one-line error. :class:`TrainSettings` holds what is not a hyperparameter (precision, threads,
where the pretrained weights are, which metric picks the best epoch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from segtune.errors import SpecError

MEDIAN_FREQUENCY = "median_frequency"  # class_weights from the train masks, as SegNet weighs CamVid
METRICS = ("val_miou", "val_dice", "val_pixel_acc")  # what a study can rank by (search.metric)
METRIC_LABELS = {"val_miou": "val mIoU", "val_dice": "val Dice", "val_pixel_acc": "val pixel accuracy"}


@dataclass(frozen=True)
class TrialConfig:
    """One trial's hyperparameters. Field names are the spec's ``space`` keys."""

    arch: str = "Unet"
    encoder: str = "resnet34"
    encoder_weights: str | None = None
    loss: str = "ce"
    class_weights: list[float] | str | None = None  # a weight per class, MEDIAN_FREQUENCY, or None
    tversky_alpha: float = 0.5
    focal_gamma: float = 2.0
    augment: str = "light"
    aug_strength: float = 0.5
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    batch_size: int = 8
    accum_steps: int = 1

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "config") -> TrialConfig:
        """Build from a mapping: missing keys take their defaults; an unknown key is a SpecError naming it."""
        unknown = [k for k in values if k not in PARAMETERS]
        if unknown:
            raise SpecError(f"{where}.{unknown[0]}: unknown parameter (known: {', '.join(PARAMETERS)})")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrialConfig:
        return dataclasses.replace(self, **changes)


PARAMETERS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrialConfig))
DEFAULTS: dict[str, Any] = TrialConfig().to_dict()


@dataclass(frozen=True)
class TrainSettings:
    """What a training run needs besides its hyperparameters; the same for every trial of a study."""

    precision: str = "auto"  # auto | bf16 | fp16 | fp32 (training.device.precision_for); CUDA only, fp32 on CPU
    channels_last: bool = False
    loader_workers: int = 0
    threads: int | None = None  # torch threads (a trial's CPU share); None leaves torch's default
    metric: str = "val_miou"  # picks the best epoch, whose weights are kept
    weights_dir: str | None = None  # pretrained encoder files, resolved once in the driver (absolute)
    gpu_memory_fraction: float | None = None  # a trial's cap of its GPU's memory (its share of the GPU)
    keep_best_state: bool = True  # a copy of the best epoch's weights in memory (trials write theirs to disk)
    costs: tuple[str, ...] = ()  # what each trial measures before it trains (objectives.COSTS)
    checkpoint_every: int = 1  # a search's trials save a resumable state every this many epochs (0: never)

    def replace(self, **changes: Any) -> TrainSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainSettings:
        """As a study stored them (the ``train_settings`` attr); a field a later version added takes its default."""
        known = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in known}
        if "costs" in kept:
            kept["costs"] = tuple(kept["costs"])
        return cls(**kept)
