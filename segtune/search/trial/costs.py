"""What a trial's model costs to run: latency, parameters, FLOPs. Measured once per trial, before it trains.

- ``params_m``: parameters, in millions.
- ``gflops``: one forward pass at the canvas size, counted by PyTorch's own flop counter
  (``torch.utils.flop_counter``), which counts a multiply-add as 2 FLOPs.
- ``latency_ms``: the median of repeated forward passes at batch 1, after warm-up, with the trial's own
  threads, on the device the trial runs on (named beside it: a cluster of mixed GPUs is not compared
  blindly). Measured before the trial trains, in a quiet moment of its node (search/nodes/quiet.py: the node's
  other trials wait between steps meanwhile), and kept for the node, so every trial there stores the same
  latency for one model. Beside it: ``latency_quiet`` (false when the node did not go quiet in time, with
  ``latency_quiet_reason``) and, when timed by this trial, ``latency_quiet_wait_s``.

The node keeps a figure under what it measured (:func:`node_key`): the model (architecture, encoder, classes), the
canvas, the precision, the device, the trial's threads, and the code that built and timed it (segtune's source,
torch, smp, timm); a figure expires (``SEGTUNE_COST_TTL_S``) and a search can measure afresh
(``SEGTUNE_COST_REFRESH=1``).

Params and FLOPs are cached per architecture, encoder, size and device in the worker process, so a reused
worker counts each model once.
"""

from __future__ import annotations

import functools
import hashlib
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import segtune
from segtune.config import TrialConfig
from segtune.search.nodes.quiet import NodeQuiet
from segtune.training.models import build_model

WARMUP, REPEATS = 3, 15
MEASURED_DTYPE = torch.float32  # latency is timed at fp32, whatever precision the trial trains at
_cache: dict[tuple[Any, ...], dict[str, float]] = {}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return "cpu"


def gflops(model: nn.Module, example: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(example)
    return counter.get_total_flops() / 1e9


def latency_ms(model: nn.Module, example: torch.Tensor) -> float:
    sync = torch.cuda.synchronize if example.device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        for _ in range(WARMUP):
            model(example)
        sync()
        times = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            model(example)
            sync()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


@functools.cache
def code_hash() -> str:
    """What built and timed a model, as a short hash: segtune's own source and the versions of the libraries that
    make the model (a figure measured by other code is measured again)."""
    digest = hashlib.sha256()
    package = Path(segtune.__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    for name in ("torch", "segmentation-models-pytorch", "timm"):
        try:
            digest.update(f"{name}={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=none".encode())
    return digest.hexdigest()[:16]


def node_key(config: TrialConfig, num_classes: int, canvas: tuple[int, int], device: torch.device) -> str:
    """The node's name for one latency figure: everything the figure depends on."""
    parts = {
        "model": f"{config.arch}/{config.encoder}/{num_classes} classes",
        "canvas": f"{canvas[0]}x{canvas[1]}",
        "precision": str(MEASURED_DTYPE).removeprefix("torch."),
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "code": code_hash(),
    }
    return "|".join(f"{k}={v}" for k, v in parts.items())


def measure(
    config: TrialConfig,
    num_classes: int,
    canvas: tuple[int, int],
    device: torch.device,
    names: list[str],
    node: NodeQuiet | None = None,
) -> dict[str, Any]:
    """The costs ``names`` of ``config``'s model (randomly initialised: costs do not depend on weights); the
    latency timed in a quiet moment of ``node`` and kept for it (without ``node``: timed as is, for tests)."""
    key = (config.arch, config.encoder, num_classes, canvas, device_name(device))
    known = _cache.setdefault(key, {})
    found = {n: known[n] for n in names if n in known}
    extra: dict[str, Any] = {}
    timed_key = node_key(config, num_classes, canvas, device)  # threads too: one model is two figures on 1 and 2
    if "latency_ms" in names and node is not None and (timed := node.known(timed_key)) is not None:
        found["latency_ms"], extra["latency_quiet"] = timed["latency_ms"], True  # kept only when timed in quiet
    missing = [n for n in names if n not in found]
    if missing:
        model = build_model(config.replace(encoder_weights=None), num_classes).to(device, MEASURED_DTYPE).eval()
        example = torch.zeros(1, 3, *canvas, device=device, dtype=MEASURED_DTYPE)
        if "params_m" in missing:
            found["params_m"] = known["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 4)
        if "gflops" in missing:
            found["gflops"] = known["gflops"] = round(gflops(model, example), 4)
        if "latency_ms" in missing and node is None:
            found["latency_ms"] = round(latency_ms(model, example), 3)
        elif "latency_ms" in missing:
            timed, moment = node.cached(timed_key, lambda: {"latency_ms": round(latency_ms(model, example), 3)})
            found["latency_ms"] = timed["latency_ms"]
            extra["latency_quiet"] = moment.quiet
            if moment.reason is not None:  # timed beside the node's training: the figure says so
                extra["latency_quiet_reason"] = moment.reason
            extra["latency_quiet_wait_s"] = round(moment.waited_s, 3)  # what the quiet moment cost
        del model
    return {**{n: found[n] for n in names}, **extra, "cost_device": key[-1]}
