"""Trial config -> nn.Module: any smp architecture x any smp encoder, segtune's own networks (nets.py),
or a user's ``package.module:Class`` (called with ``in_channels=3, classes=N``)."""

from __future__ import annotations

import functools
import importlib
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn as nn

from segtune.config import TrialConfig
from segtune.errors import SegtuneError
from segtune.training.nets import NETS
from segtune.training.weights import WEIGHTS_ENV, encoder_state, expected_file, load_encoder

# smp keys its architectures in lower case; users write them as smp's class names (Unet, DeepLabV3Plus).
ARCHITECTURES: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}


def _import_attr(name: str) -> Any:
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def names_code(arch: str) -> bool:
    """Whether building ``arch`` imports a module of the user's (``package.module:Class``), not segtune's or smp's."""
    return arch not in ARCHITECTURES and arch not in NETS


def code_module(arch: Any) -> str | None:
    """The module building ``arch`` would import (``package.module:Class``), or None for segtune's and smp's own."""
    if isinstance(arch, str) and ":" in arch and names_code(arch):
        return arch.partition(":")[0]
    return None


def refuse_code(arch: Any, trust_code: bool, where: str) -> None:
    """A configuration that comes from a study store (or a file written from one: a retrain spec, a checkpoint)
    and names code outside segtune is refused before anything imports it, unless the user trusts whoever wrote
    it (``--trust-code``): a shared store is not a place to run code from."""
    module = code_module(arch)
    if module is not None and not trust_code:
        raise SegtuneError(
            f"{where}: its model is {arch!r}, code outside segtune that building it would import and run "
            f"(module {module}); pass --trust-code if you trust whoever wrote it"
        )


def check_arch(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"must be an architecture name, got {name!r}"
    if name in ARCHITECTURES or name in NETS:
        return None
    if ":" in name:
        try:
            _import_attr(name)
            return None
        except (ImportError, AttributeError) as e:
            return f"cannot import {name!r}: {e}"
    known = ", ".join([*ARCHITECTURES, *NETS])
    return f"unknown architecture {name!r} (known: {known}, or package.module:Class)"


def check_encoder(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"must be an encoder name, got {name!r}"
    if name in smp.encoders.encoders:
        return None
    if name.startswith("tu-"):
        import timm

        return None if timm.is_model(name[3:]) else f"unknown timm encoder {name!r}"
    return f"unknown encoder {name!r} (see smp.encoders.get_encoder_names(), or tu-<timm model>)"


def build_model(config: TrialConfig, num_classes: int, weights_dir: str | None = None) -> nn.Module:
    """Build the network a trial config names. Pretrained weights must already be on disk (offline first):
    looked up in ``weights_dir`` (default ``$SEGTUNE_WEIGHTS``), then the packages and caches (weights.py)."""
    arch, encoder, weights = config.arch, config.encoder, config.encoder_weights
    if arch in NETS:  # segtune's own networks: no encoder, trained from scratch
        return NETS[arch](in_channels=3, classes=num_classes)
    if arch not in ARCHITECTURES:
        return _import_attr(arch)(in_channels=3, classes=num_classes)
    local = encoder_state(encoder, weights, weights_dir) if weights else None
    if local is not None:  # segtune loads it, checking that it covers the whole encoder
        model = ARCHITECTURES[arch](encoder_name=encoder, encoder_weights=None, in_channels=3, classes=num_classes)
        load_encoder(model.encoder, *local)
        return model
    try:
        return ARCHITECTURES[arch](encoder_name=encoder, encoder_weights=weights, in_channels=3, classes=num_classes)
    except (OSError, ConnectionError) as e:
        if weights:
            raise SegtuneError(
                f"encoder_weights: {weights} weights for {encoder} are not on this machine ({type(e).__name__}); "
                f"put the encoder's state dict at {expected_file(encoder, weights, weights_dir)} (${WEIGHTS_ENV}), "
                "or fill the Hugging Face / torch hub caches (SEGTUNE_DOWNLOAD_WEIGHTS=1 segtune check SPEC, once, "
                "with network), or use encoder_weights: null"
            ) from None
        raise


@functools.lru_cache(maxsize=256)
def pairing_problem(arch: str, encoder: str) -> str | None:
    """Why smp cannot build ``arch`` on ``encoder`` (UnetPlusPlus on mit_b0, say); None when it can.

    Built on the meta device (no memory, milliseconds) where the encoder allows it, else on the CPU.
    """
    config = TrialConfig(arch=arch, encoder=encoder, encoder_weights=None)
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
