"""A slot's worker: one Ray actor per slot, warm before its first fit and serving fit after fit.

It asks Ray for a trial's resources (CPUs, a GPU fraction: search/fits/slots.py), readies itself as a trial's worker
does (search/nodes/worker_process.py's ``warm_up``: the imports, the decoded data fetched once from the object store, a
CUDA context on a GPU), then runs the jobs the driver hands it. A threaded actor (two threads): one trains, the other
answers the driver's questions about the epochs done so far (the progress lines).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

import ray

from segtune.config import TrainSettings
from segtune.data import SegData
from segtune.search.fits.job import DriverDisk, FitJob, FitOutcome, run_job
from segtune.search.nodes.keeper import STATES, shared_with_driver
from segtune.search.nodes.worker_process import assigned_device, release_memory, warm_up


@ray.remote(max_concurrency=2)
class FitWorker:
    def __init__(self, data: SegData, settings: TrainSettings, folder: str, token: str, keeper: Any):
        warm_up()
        self.data, self.settings = data, settings
        self.gpu_ids, self.device = assigned_device()
        shared = shared_with_driver(Path(folder), token)  # the driver reads this node's files where they are written
        self.disk = DriverDisk(Path(folder) / STATES, keeper, shared)
        self._lock = threading.Lock()
        self._rows: dict[int, list[dict[str, Any]]] = {}

    def ready(self) -> dict[str, Any]:
        """Where this slot is: its host, process, device (the driver's start lines name them)."""
        return {
            "host": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "device": str(self.device),
            "gpu_ids": self.gpu_ids,
            "shared": self.disk.shared,
        }

    def run(self, job: FitJob) -> FitOutcome:
        rows: list[dict[str, Any]] = []
        with self._lock:
            self._rows = {job.number: rows}

        def on_epoch(row: dict[str, Any]) -> None:
            with self._lock:
                rows.append(row)

        try:
            return run_job(job, self.data, self.device, self.settings, self.disk, on_epoch)
        finally:
            release_memory()  # the worker serves the next job: free this one's model, optimizer and state

    def call(self, fn: Any, *args: Any) -> Any:
        """``fn(data, device, settings, *args)`` on this slot (:meth:`ClusterFits.call`)."""
        try:
            return fn(self.data, self.device, self.settings, *args)
        finally:
            release_memory()

    def epochs(self, number: int, since: int) -> list[dict[str, Any]]:
        """The validation rows of job ``number``'s epochs from the ``since``-th on (its resumed ones included)."""
        with self._lock:
            return list(self._rows.get(number, [])[since:])
