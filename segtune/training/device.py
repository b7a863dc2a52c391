"""Where and in what precision a model trains: pure rules, testable without a GPU.

- A trial uses CUDA only when Ray gave it a GPU *and* CUDA is there: a zero-GPU trial on a GPU
  machine must not pile onto GPU 0, and logical GPUs on a CPU host (``ray start --num-gpus 2``,
  as the tests use) still train on the CPU.
- ``precision: auto`` is bf16 where the card has it (Ampere and newer), fp16 with a gradient
  scaler where it does not (T4, V100: where people run these notebooks), fp32 on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def trial_device(gpu_ids: Sequence[object], cuda_available: bool) -> torch.device:
    """The device of a trial that Ray gave ``gpu_ids`` (``ray.get_gpu_ids()``)."""
    return torch.device("cuda" if gpu_ids and cuda_available else "cpu")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """An explicit ``--device``, else CUDA when the machine has it (retrain, predict: no Ray there)."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Precision:
    """How a step runs: autocast to ``dtype`` (None: fp32 throughout) and whether a GradScaler is needed."""

    name: str
    dtype: torch.dtype | None
    scaler: bool

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)


def precision_for(precision: str, device: torch.device, bf16_supported: bool | None = None) -> Precision:
    """The precision a run uses on ``device``. Mixed precision is a CUDA matter: the CPU runs fp32
    whatever the spec says (CPU autocast is slower than fp32 for these models)."""
    if device.type != "cuda":
        return Precision("fp32", None, False)
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    if precision == "auto":
        precision = "bf16" if bf16_supported else "fp16"
    if precision == "bf16":
        return Precision("bf16", torch.bfloat16, False)
    if precision == "fp16":
        return Precision("fp16", torch.float16, True)  # fp16 gradients underflow without loss scaling
    return Precision("fp32", None, False)
