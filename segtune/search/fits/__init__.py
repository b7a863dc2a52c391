"""Training beyond the search's trials (`finish`'s folds, `retrain`, the final fits) as Ray work on the cluster's slots,
with the trials' resources and packing (DESIGN.md: "Every phase trains where the search trains"). The driver only
orchestrates, and needs no GPU.

The one part of search/ besides the store that results/ uses (tests/test_layers.py): a :class:`FitJob` says what to
train on which indices and what to compute with the model where it trained; :func:`runner` gives a runner whose
``run(jobs, on_done, on_epoch)`` trains them, side by side on the cluster, or, given a ``device``, one after another in
this process as before.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from segtune.config import TrainSettings
from segtune.data import SegData
from segtune.search.fits.job import TRAIN_SPLIT, VAL_SPLIT, Evaluate, FitJob, FitOutcome
from segtune.search.fits.runners import ClusterFits, ProcessFits
from segtune.search.fits.slots import SlotPlan, plan_slots
from segtune.search.nodes.cluster import connect_ray, disconnect
from segtune.spec import ResourcesSpec, TrainSpec
from segtune.training.device import pick_device

__all__ = [
    "TRAIN_SPLIT",
    "VAL_SPLIT",
    "ClusterFits",
    "Evaluate",
    "FitJob",
    "FitOutcome",
    "ProcessFits",
    "SlotPlan",
    "runner",
]


@contextlib.contextmanager
def runner(
    data: SegData,
    settings: TrainSettings,
    folder: Path,
    jobs: int,
    resources: ResourcesSpec | None = None,
    train: TrainSpec | None = None,
    address: str | None = None,
    slots: int | None = None,
    device: str | None = None,
    out: Any = None,
) -> Iterator[ClusterFits | ProcessFits]:
    """Where ``jobs`` fits train. ``device``: in this process, on it (``settings`` as given). Else on the Ray cluster
    at ``address`` (default: ``RAY_ADDRESS``, else a private local one, left when the fits are done), each fit with a
    trial's ``resources`` and at most ``slots`` at once; ``settings`` get the slot's threads, loader workers and GPU
    memory cap (``train``). ``folder``, on the driver's disk, keeps the fits' resumable states meanwhile."""
    out = out or sys.stdout
    if device is not None:
        yield ProcessFits(data, settings, pick_device(device), out)
        return
    joined = not ray.is_initialized()  # a Ray this call starts or joins is left again at its end
    connect_ray(address)
    try:
        plan = plan_slots(resources or ResourcesSpec(), train or TrainSpec(), settings, jobs, slots, out)
        cluster = address or os.environ.get("RAY_ADDRESS") or "a local Ray cluster"
        print(f"training on {cluster}: {plan.text()}, each fit on {plan.settings.threads} thread(s)", file=out)
        on_slots = ClusterFits(data, plan, folder, out)
        try:
            yield on_slots
        finally:
            on_slots.close()
    finally:
        if joined:
            disconnect()
