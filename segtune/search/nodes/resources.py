"""What each trial asks of the Ray cluster (CPUs, a GPU fraction), how many run side by side, and the settings every
trial trains with that follow from them (threads, loader workers, a GPU memory cap)."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ray
import torch

from segtune.config import TrainSettings
from segtune.errors import SpecError
from segtune.spec import ResourcesSpec, StudySpec, TrainSpec
from segtune.training.weights import weights_dir

DEFAULT_GPU_FRACTION = 0.25


def cpu_share(nodes: list[tuple[float, float]], gpus_per_trial: float) -> int:
    """``cpus_per_trial: auto``: on a GPU cluster, a node's CPUs divided by the trials its GPUs hold (the
    smallest such share over the GPU nodes, so every node can fill its GPUs); on a CPU-only cluster, 1.
    ``nodes`` holds each live node's (CPUs, GPUs)."""
    if gpus_per_trial <= 0:
        return 1
    shares = [int(cpus // math.floor(gpus / gpus_per_trial + 1e-9)) for cpus, gpus in nodes if gpus >= gpus_per_trial]
    return max(1, min(shares, default=1))


def resources_for(spec: StudySpec, out: Any) -> dict[str, float]:
    """What each trial asks Ray for, checked against the cluster: a request no node can meet is an error
    now, not a search that waits forever."""
    return slot_resources(spec.resources, out)


def slot_resources(asked: ResourcesSpec, out: Any) -> dict[str, float]:
    """What one slot asks Ray for (a trial's, or a fit's of search/fits/), from a spec's ``resources:``, checked
    against the cluster."""
    nodes = live_nodes()
    most_cpus = max((c for c, _ in nodes), default=0)
    most_gpus = max((g for _, g in nodes), default=0)
    gpus = asked.gpus_per_trial
    if gpus == "auto":
        gpus = DEFAULT_GPU_FRACTION if most_gpus > 0 else 0.0
    elif gpus > 0 and most_gpus == 0:  # a laptop: every shipped spec still runs, on CPUs
        print(f"note: resources.gpus_per_trial is {gpus} but the Ray cluster has no GPU: trials run on CPUs", file=out)
        gpus = 0.0
    elif gpus > most_gpus:
        raise SpecError(f"resources.gpus_per_trial: {gpus:g} but the largest Ray node has {most_gpus:g} GPUs")
    cpus = asked.cpus_per_trial
    if cpus == "auto":
        cpus = cpu_share(nodes, gpus)
    if cpus > most_cpus:
        raise SpecError(f"resources.cpus_per_trial: {cpus:g} but the largest Ray node has {most_cpus:g} CPUs")
    if not any(c >= cpus and g >= gpus for c, g in nodes):
        raise SpecError(
            f"resources: no Ray node has both {cpus:g} CPUs and {gpus:g} GPUs for one trial "
            f"(nodes: {', '.join(f'{c:g} CPU / {g:g} GPU' for c, g in nodes)})"
        )
    return {"cpu": float(cpus), "gpu": float(gpus)}


def live_nodes() -> list[tuple[float, float]]:
    """Each live Ray node's (CPUs, GPUs)."""
    return [(n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0)) for n in ray.nodes() if n.get("Alive")]


@dataclass(frozen=True)
class SlotShare:
    """What a slot's resources mean for the training in it: loader workers, torch threads, a GPU memory cap."""

    loader_workers: int
    threads: int
    gpu_memory_fraction: float | None


def slot_share(train: TrainSpec, resources: dict[str, float]) -> SlotShare:
    """A trial's (or a fit's) share of its node, from the spec's ``train:`` and the slot's resources."""
    workers = train.loader_workers
    if workers == "auto":  # CPU trials: workers would only steal the trial's own cores
        workers = max(0, int(resources["cpu"]) - 1) if resources["gpu"] > 0 else 0
    share = resources["gpu"] if train.cap_gpu_memory and 0 < resources["gpu"] < 1 else None
    return SlotShare(loader_workers=workers, threads=max(1, int(resources["cpu"])), gpu_memory_fraction=share)


def train_settings(spec: StudySpec, resources: dict[str, float]) -> TrainSettings:
    """The same for every trial: precision, threads, loader workers, the metric, where the weights are.

    The weights folder is resolved here, once: trials run in their own working directories, and on
    other nodes, where the driver's environment and relative paths mean nothing."""
    share = slot_share(spec.train, resources)
    return TrainSettings(
        precision=spec.train.precision,
        channels_last=spec.train.channels_last,
        loader_workers=share.loader_workers,
        threads=share.threads,
        metric=spec.search.metric,
        weights_dir=str(weights_dir()),
        gpu_memory_fraction=share.gpu_memory_fraction,
        keep_best_state=False,  # a trial writes its best weights to disk instead
        costs=tuple(spec.search.cost_names),
        checkpoint_every=spec.train.checkpoint_every,
    )


def local_cpus(spec: StudySpec) -> int | None:
    """The CPUs a private local cluster needs: enough for the trials the search runs at once (``search.max_concurrent``
    or ``search.trials``, the fewer), None for all of the machine's.

    A local cluster with more CPUs than that gives Tune room for a worker nobody needs: the slots' warm workers wait
    for their first real trials (search/nodes/warmup.py), Tune starts a new worker for each such trial while a CPU is
    free, and at the end it waits for those to finish starting only to stop them (3.7 s after the last trial of a
    one-at-a-time run here, on top of a worker's imports at its start). CPU trials only: a GPU trial's CPU share is
    the node's CPUs over its trials (:func:`cpu_share`), which a smaller count would change."""
    at_once = min(n for n in (spec.search.max_concurrent, spec.search.trials) if n)
    gpus, cpus = spec.resources.gpus_per_trial, spec.resources.cpus_per_trial
    if gpus == "auto":
        gpus = 1.0 if torch.cuda.is_available() else 0.0
    if gpus > 0:
        return None
    per_trial = 1.0 if cpus == "auto" else float(cpus)  # auto on a CPU-only cluster: one each (cpu_share)
    return max(1, math.ceil(per_trial * at_once))


PENDING_ENV = "TUNE_MAX_PENDING_TRIALS_PG"


@contextlib.contextmanager
def pending_trials(slots: int) -> Iterator[None]:
    """How many trials Tune holds waiting for a slot, during one search: at least ``slots``, and a value in the
    environment stands if larger. Tune starts one at a time with a custom searcher unless told; with one, a slot
    freed while a trial starts (several seconds) would sit idle, and the slots' warm workers, which wait until a real
    trial waits for each (search/nodes/warmup.py), would wait out their patience (120 s). Restored afterwards: a second
    search in the same process (or a process it starts) must not take the first one's count for the user's."""
    before = os.environ.get(PENDING_ENV)
    try:
        os.environ[PENDING_ENV] = str(max(slots, int(before) if before and before.isdigit() else 0))
        yield
    finally:
        if before is None:
            os.environ.pop(PENDING_ENV, None)
        else:
            os.environ[PENDING_ENV] = before


def trial_slots(resources: dict[str, float]) -> int:
    """How many trials the cluster can run side by side with these per-trial resources."""
    cluster = ray.cluster_resources()
    slots = int(cluster.get("CPU", 1) // max(resources["cpu"], 1e-9))
    if resources["gpu"] > 0:
        slots = min(slots, int(cluster.get("GPU", 0) // resources["gpu"]))
    return max(1, slots)
