"""The Ray trainable: one trial = one `fit`, reporting every epoch to Tune.

Trials run in reused worker processes (Tune's actor reuse), so a trial leaves nothing behind: `fit`
sets its own seeds, threads and cuDNN flags, and the trial frees its model and the GPU cache when
it ends. The best weights are written straight into the trial's folder of ``results_dir`` when
they improve (atomically), instead of being copied through Tune's checkpoint storage every time.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import socket
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from segtune.config import TrainSettings, TrialConfig
from segtune.data import SegData
from segtune.search.costs import measure
from segtune.search.quiet import NodeQuiet
from segtune.search.recorder import TRIAL_KEY
from segtune.search.warmup import WARMUP_KEY, WARMUP_PREFIX, is_warmup, wait_at
from segtune.training import checkpoint
from segtune.training.device import trial_device
from segtune.training.loop import fit
from segtune.training.metrics import json_safe

LOADED_AT = time.time()  # when this worker process had imported torch, smp and Ray Tune (this module's imports)


def trial_dirname(number: int) -> str:
    """The folder of Optuna trial ``number`` inside the run's folder (Tune's trial folder too)."""
    return f"trial_{number:04d}"


def tune_trial_name(config: dict[str, Any]) -> str:
    """Tune's name and folder for a Ray trial: the Optuna trial's, or ``warmup_N`` for slot N's warm-up."""
    if is_warmup(config):
        return f"{WARMUP_PREFIX}{config[WARMUP_KEY]}"
    return trial_dirname(int(config[TRIAL_KEY]))


def resident_mb() -> float:
    """This process's resident memory (Linux), to see that a reused worker does not grow trial after trial."""
    try:
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return round(kb / 1024, 1)
    except (OSError, StopIteration, ValueError):
        return float("nan")


_settled = False


def settle_worker() -> None:
    """Once per worker process, before its first trial: move everything imported so far (torch, smp, Ray:
    about half a million objects) out of the garbage collector's sight. A full collection then costs
    milliseconds instead of 0.3 s, and the collection after each trial only looks at that trial's objects."""
    global _settled
    if not _settled:  # no collection first: it would cost the 0.3 s once more, for little import-time garbage
        gc.freeze()
        _settled = True


def release_memory() -> None:
    """After a trial: free its objects (tracebacks of a stopped trial hold its frames in cycles), the GPU
    cache, and the heap pages glibc keeps for reuse (without the trim a reused worker's resident
    memory grows trial after trial)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def assigned_device() -> tuple[list[str], torch.device]:
    """The GPUs Ray gave this worker, and the device its trials train on: a GPU only when Ray gave one."""
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    return gpu_ids, trial_device(gpu_ids, torch.cuda.is_available())


def warm_up() -> None:
    """A slot's warm-up (search/warmup.py): the imports are done by now (loading this module) and the data is
    fetched (Tune's ``with_parameters`` did, to call the trainable); settle the worker, and on a GPU create the
    CUDA context its trials share."""
    settle_worker()
    _, device = assigned_device()
    if device.type == "cuda":
        torch.zeros(1, device=device)


def train_trial(
    config: dict[str, Any], data: SegData, settings: TrainSettings, max_epochs: int, run_dir: str, gate: Any = None
) -> None:
    """One trial: `fit` the configuration, report every epoch to Tune, keep the best weights on disk. A slot's
    warm-up instead readies the worker and waits at ``gate`` until real trials wait for it."""
    if is_warmup(config):
        warm_up()
        wait_at(gate)
        return
    number = int(config[TRIAL_KEY])
    settle_worker()
    rss_start = resident_mb()  # what the worker holds before this trial builds anything: flat if nothing leaks
    cfg = TrialConfig.from_dict({k: v for k, v in config.items() if k != TRIAL_KEY})
    metric = settings.metric
    folder = Path(run_dir) / trial_dirname(number)
    best: dict[str, Any] = {}
    host = socket.gethostname()
    node_id = ray.get_runtime_context().get_node_id()
    gpu_ids, device = assigned_device()
    measured: dict[str, Any] = {}

    def on_epoch(epoch: int, row: dict[str, Any], model: torch.nn.Module) -> None:
        nonlocal best
        value = row[metric] if not math.isnan(row[metric]) else -1.0
        if not best or value > best[metric]:
            best = dict(row)
            checkpoint.save(
                folder / checkpoint.FILENAME,
                model,
                cfg,
                data.classes,
                data.resize,
                epoch=epoch,
                metrics=json_safe(row),
                trial=number,
            )
        report = {k: json_safe(v) for k, v in row.items()}
        report.update({f"best_{k}": json_safe(v) for k, v in best.items()})
        report.update(
            hostname=host,
            node_id=node_id,
            checkpoint=str(folder),
            rss_mb=resident_mb(),
            rss_start_mb=rss_start,
            worker_loaded_at=LOADED_AT,
            gpu_ids=gpu_ids,
            device=str(device),
            **{f"cost_{k}": v for k, v in measured.items()},
        )
        tune.report(report)

    # a study that times its models: every trial's steps hold the node's timing off (search/quiet.py)
    node = NodeQuiet() if "latency_ms" in settings.costs else None
    guard = node.step if node is not None else contextlib.nullcontext
    try:
        if settings.costs:  # before training, with the trial's own threads (search.objectives / constraints)
            if settings.threads:
                torch.set_num_threads(settings.threads)
            measured.update(measure(cfg, data.num_classes, data.canvas, device, list(settings.costs), node))
        fit(cfg, data, max_epochs, on_epoch, device=device, settings=settings, seed=number, step_guard=guard)
    finally:  # the worker serves the next trial: free this one's memory
        if node is not None:
            node.close()
        release_memory()
