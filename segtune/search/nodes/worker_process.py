"""A worker process that serves task after task on a slot (a search's trials: search/trial/trainable.py; the fits of
search/fits/worker.py): readied once, its memory given back after each task, its device the GPU Ray gave it."""

from __future__ import annotations

import contextlib
import ctypes
import gc

import ray
import torch

from segtune.training.device import trial_device

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
    """A slot's warm-up (search/nodes/warmup.py, search/fits/worker.py): the imports are done by now (loading the
    trainable's or the fit worker's module) and the data is fetched (Tune's ``with_parameters`` did, to call the
    trainable; Ray, to construct the fit worker); settle the worker, and on a GPU create the CUDA context its trials
    share."""
    settle_worker()
    _, device = assigned_device()
    if device.type == "cuda":
        torch.zeros(1, device=device)
