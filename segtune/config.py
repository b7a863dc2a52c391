"""The trial configuration: every parameter a trial is built from, and its default."""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    "arch": "Unet",
    "encoder": "resnet34",
    "encoder_weights": None,
    "loss": "ce",
    "class_weights": None,
    "tversky_alpha": 0.5,
    "focal_gamma": 2.0,
    "augment": "light",
    "aug_strength": 0.5,
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "momentum": 0.9,
    "schedule": "cosine",
    "batch_size": 8,
    "accum_steps": 1,
}
MEDIAN_FREQUENCY = "median_frequency"  # class_weights from the train masks, as SegNet weighs CamVid
