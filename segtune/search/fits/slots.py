"""What each fit asks of the cluster, and how many run side by side: the trials' rules (search/nodes/resources.py),
with one difference where fewer fits than a CPU cluster's cores would leave cores idle."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from segtune.config import TrainSettings
from segtune.search.nodes.resources import live_nodes, slot_resources, slot_share, trial_slots
from segtune.spec import ResourcesSpec, TrainSpec


@dataclass(frozen=True)
class SlotPlan:
    resources: dict[str, float]  # what each fit's worker asks Ray for: {"cpu": C, "gpu": G}
    slots: int  # fits side by side
    settings: TrainSettings  # what each fit trains with: the caller's, with the slot's threads, loader workers, cap

    def text(self) -> str:
        return f"{self.slots} slot(s) of {self.resources['cpu']:g} CPU / {self.resources['gpu']:g} GPU"


def plan_slots(
    asked: ResourcesSpec, train: TrainSpec, settings: TrainSettings, jobs: int, most: int | None, out: Any
) -> SlotPlan:
    """A trial's resources (``asked``: the study's ``resources:``), at most ``most`` fits at once (None: as many as the
    cluster holds) and never more than ``jobs``.

    On a CPU-only cluster with ``cpus_per_trial: auto`` a trial gets 1 CPU (a search runs many); a fit gets the largest
    node's CPUs divided by the fits that run at once, when that is more: `retrain`'s one model trains on the whole
    machine, as it did in the driver's process, and `finish`'s 15 on 16 cores take one core each. A GPU fit packs as a
    trial does (``gpus_per_trial``, the CPUs that go with it)."""
    resources = slot_resources(asked, out)
    at_once = max(1, min(trial_slots(resources), jobs, most or jobs))
    if resources["gpu"] == 0 and asked.cpus_per_trial == "auto":
        largest = max((cpus for cpus, _ in live_nodes()), default=1.0)
        resources["cpu"] = float(max(resources["cpu"], math.floor(largest / at_once)))
        at_once = max(1, min(trial_slots(resources), at_once))
    share = slot_share(train, resources)
    settings = settings.replace(
        threads=share.threads, loader_workers=share.loader_workers, gpu_memory_fraction=share.gpu_memory_fraction
    )
    return SlotPlan(resources, at_once, settings)
