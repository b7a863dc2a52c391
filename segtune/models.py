"""Trial config -> nn.Module: any smp architecture x any smp encoder, or a user's ``module:Class``."""

from __future__ import annotations

import functools
import importlib
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn as nn

from segtune.errors import SegtuneError

# smp keys its architectures in lower case; users write them as smp's class names (Unet, DeepLabV3Plus).
ARCHITECTURES: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}


def _import_attr(name: str) -> Any:
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def check_arch(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"must be an architecture name, got {name!r}"
    if name in ARCHITECTURES:
        return None
    if ":" in name:
        try:
            _import_attr(name)
            return None
        except (ImportError, AttributeError) as e:
            return f"cannot import {name!r}: {e}"
    return f"unknown architecture {name!r} (known: {', '.join(ARCHITECTURES)}, or package.module:Class)"


def check_encoder(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"must be an encoder name, got {name!r}"
    if name in smp.encoders.encoders:
        return None
    if name.startswith("tu-"):
        import timm

        return None if timm.is_model(name[3:]) else f"unknown timm encoder {name!r}"
    return f"unknown encoder {name!r} (see smp.encoders.get_encoder_names(), or tu-<timm model>)"


def build_model(config: dict[str, Any], num_classes: int) -> nn.Module:
    """Build the network a trial config names. Pretrained weights must already be on disk (offline first)."""
    arch = config["arch"]
    if arch not in ARCHITECTURES:
        return _import_attr(arch)(in_channels=3, classes=num_classes)
    try:
        return ARCHITECTURES[arch](
            encoder_name=config["encoder"],
            encoder_weights=config.get("encoder_weights"),
            in_channels=3,
            classes=num_classes,
        )
    except (OSError, ConnectionError) as e:
        if config.get("encoder_weights"):
            raise SegtuneError(
                f"encoder_weights: {config['encoder_weights']} weights for {config['encoder']} are not on this "
                f"machine ({type(e).__name__}); put them in the Hugging Face cache (~/.cache/huggingface/hub) or "
                "the torch hub cache ($TORCH_HOME/hub/checkpoints), run SEGTUNE_DOWNLOAD_WEIGHTS=1 segtune check SPEC "
                "once with network, or use encoder_weights: null"
            ) from None
        raise


@functools.lru_cache(maxsize=256)
def pairing_problem(arch: str, encoder: str) -> str | None:
    """Why smp cannot build ``arch`` on ``encoder`` (UnetPlusPlus on mit_b0, say); None when it can.

    Built on the meta device (no memory, milliseconds) where the encoder allows it, else on the CPU.
    """
    config = {"arch": arch, "encoder": encoder, "encoder_weights": None}
    try:
        with torch.device("meta"):
            build_model(config, 2)
        return None
    except Exception as e:  # noqa: BLE001 - smp raises assorted types for unsupported pairings
        if "meta" not in str(e):
            return str(e).strip().splitlines()[0][:200]
    try:
        build_model(config, 2)
        return None
    except Exception as e:  # noqa: BLE001
        return str(e).strip().splitlines()[0][:200]
