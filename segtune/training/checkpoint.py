"""One checkpoint format for trials and retrains: weights plus everything needed to rebuild the model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from segtune.config import TrialConfig
from segtune.data.resize import ResizePolicy
from segtune.errors import SegtuneError
from segtune.training.models import build_model, refuse_code

FILENAME = "model.pt"
REQUIRED = ("state_dict", "config", "classes", "image_size")


def save(
    path: Path,
    model: nn.Module | dict[str, torch.Tensor],
    config: TrialConfig,
    classes: list[str],
    resize: ResizePolicy,
    **extra: Any,
) -> Path:
    state = model.state_dict() if isinstance(model, nn.Module) else model
    # weights only, no pretrained download when rebuilding: the checkpoint holds every tensor
    payload = {
        "state_dict": state,
        "config": config.replace(encoder_weights=None).to_dict(),
        "classes": list(classes),
        "resize": resize.to_dict(),
        "image_size": max(resize.canvas),
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # a reader never sees half a file
    torch.save(payload, partial)
    os.replace(partial, path)
    return path


def load(
    path: str | Path, device: str | torch.device = "cpu", trust_code: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """The model in eval mode and the checkpoint's metadata; a clear error when they do not fit together.

    ``weights_only`` keeps the file itself from running code, but a config whose architecture is a
    ``package.module:Class`` would import that module: refused unless ``trust_code`` (``--trust-code``).
    """
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise SegtuneError(f"{path}: no such checkpoint") from None
    except Exception as e:  # noqa: BLE001 - pickle and zip errors alike mean "not a checkpoint"
        raise SegtuneError(f"{path}: not a segtune checkpoint ({type(e).__name__})") from None
    missing = [k for k in REQUIRED if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise SegtuneError(f"{path}: not a segtune checkpoint (missing {', '.join(missing)})")
    config = TrialConfig.from_dict(payload["config"], where=f"{path}: config")
    refuse_code(config.arch, trust_code, str(path))
    model = build_model(config, len(payload["classes"]))
    try:
        result = model.load_state_dict(payload["state_dict"], strict=False)
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e)[:200])
        raise SegtuneError(f"{path}: weights do not match its config: {first}") from None
    if result.missing_keys or result.unexpected_keys:
        keys = (result.missing_keys or result.unexpected_keys)[:2]
        raise SegtuneError(
            f"{path}: weights do not match its config ({config.arch} / {config.encoder}, "
            f"{len(result.missing_keys)} missing and {len(result.unexpected_keys)} unexpected tensors, e.g. {keys})"
        )
    return model.to(device).eval(), payload
