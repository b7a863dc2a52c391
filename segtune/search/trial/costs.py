"""What a trial's model costs to run: latency, parameters, FLOPs. Measured once per trial, before it trains.

- ``params_m``: parameters, in millions.
- ``gflops``: one forward pass at the canvas size, counted by PyTorch's own flop counter
  (``torch.utils.flop_counter``), which counts a multiply-add as 2 FLOPs.
- ``latency_ms``: the median of repeated forward passes at batch 1, after warm-up, with the trial's own
  threads, on the device the trial runs on (named beside it: a cluster of mixed GPUs is not compared
  blindly). Measured before the trial trains, in a quiet moment of its node (search/nodes/quiet.py: the node's
  other trials wait between steps meanwhile), and kept for the node, so every trial there stores the same
  latency for one model.

Params and FLOPs are cached per architecture, encoder, size and device in the worker process, so a reused
worker counts each model once.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.nn as nn

import segtune
from segtune.config import TrialConfig
from segtune.search.nodes.quiet import NodeQuiet
from segtune.training.models import build_model

WARMUP, REPEATS = 3, 15
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
    # the node's latency: threads and versions in its key (the same model is another figure on two threads)
    node_key = "|".join(map(str, (*key, torch.get_num_threads(), torch.__version__, segtune.__version__)))
    if "latency_ms" in names and node is not None and (timed := node.known(node_key)) is not None:
        found["latency_ms"] = timed["latency_ms"]
    missing = [n for n in names if n not in found]
    extra: dict[str, Any] = {}
    if missing:
        model = build_model(config.replace(encoder_weights=None), num_classes).to(device).eval()
        example = torch.zeros(1, 3, *canvas, device=device)
        if "params_m" in missing:
            found["params_m"] = known["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 4)
        if "gflops" in missing:
            found["gflops"] = known["gflops"] = round(gflops(model, example), 4)
        if "latency_ms" in missing and node is None:
            found["latency_ms"] = round(latency_ms(model, example), 3)
        elif "latency_ms" in missing:
            waited = node.waited_s
            timed = node.cached(node_key, lambda: {"latency_ms": round(latency_ms(model, example), 3)})
            found["latency_ms"] = timed["latency_ms"]
            extra["latency_quiet_wait_s"] = round(node.waited_s - waited, 3)  # what the quiet moment cost
        del model
    return {**{n: found[n] for n in names}, **extra, "cost_device": key[-1]}
