"""Running a list of fits: side by side on the cluster's slots (:class:`ClusterFits`), or one after another in this
process (:class:`ProcessFits`, ``--device``). Both print a line when each fit starts, hand each outcome to the caller
as it comes (``on_done``: `finish` writes finish.json then), and may pass every epoch's row on (``on_epoch``).

On the cluster the driver only orchestrates: the data goes into Ray's object store once, one warm worker per slot
(search/fits/worker.py) serves fit after fit, and a worker or node lost mid-fit costs at most
``train.checkpoint_every`` epochs: the fit runs again on another worker from its newest state on the driver's disk,
as a trial does (search/nodes/keeper.py). Every model file lands on the driver's disk (through Ray when the worker's
node does not share it), never only on a node that could be lost.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch

from segtune.config import TrainSettings
from segtune.data import SegData
from segtune.errors import SegtuneError
from segtune.search.fits.job import FitJob, FitOutcome, run_job
from segtune.search.fits.slots import SlotPlan
from segtune.search.fits.worker import FitWorker
from segtune.search.nodes.files import write_atomic
from segtune.search.nodes.keeper import STATES, TOKEN_FILE, start_keeper, write_token

MAX_RESTARTS = 3  # times a fit runs again after its worker or node was lost (as Tune does a trial's)
POLL_S = 2.0  # how often the driver looks at the running fits' epochs, when the caller shows them
HEARTBEAT_S = 60.0  # a line saying what runs, this often, while nothing else is printed
# the first fits wait this long at most for every slot's worker, as a search's warm-ups do (search/nodes/warmup.py's
# PATIENCE_S; not imported: that module brings Ray Tune, which a fit's worker does without)
PATIENCE_S = 120.0

DoneCallback = Callable[[FitJob, FitOutcome], None]
SlotCall = Callable[..., Any]  # fn(data, device, settings, *args), run where the fits run
EpochCallback = Callable[[FitJob, dict[str, Any]], None]

# Ray's word that a worker (its process, its node, or an object it held) is gone: the fit runs again elsewhere.
LOST = (
    ray.exceptions.RayActorError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.ObjectLostError,
    ray.exceptions.LocalRayletDiedError,
)


class ProcessFits:
    """One fit after another in this process, on ``device``: how `finish` and `retrain` ran before the cluster."""

    def __init__(self, data: SegData, settings: TrainSettings, device: torch.device, out: Any = None):
        self.data, self.settings, self.device, self.out = data, settings, device, out or sys.stdout

    def where(self) -> str:
        return f"this process, one at a time on {self.device}"

    def run(self, jobs: list[FitJob], on_done: DoneCallback, on_epoch: EpochCallback | None = None) -> None:
        for job in jobs:
            print(f"  started {job.label} here ({self.device})", file=self.out, flush=True)
            show = (lambda row, job=job: on_epoch(job, row)) if on_epoch is not None else None
            on_done(job, run_job(job, self.data, self.device, self.settings, None, show))

    def call(self, fn: SlotCall, *args: Any) -> Any:
        """``fn(data, device, settings, *args)`` here."""
        return fn(self.data, self.device, self.settings, *args)

    def close(self) -> None:
        pass


@dataclass
class Slot:
    """A worker actor and what the driver knows of it."""

    handle: Any
    info: dict[str, Any] = field(default_factory=dict)  # from its ``ready``: host, pid, device
    job: FitJob | None = None
    shown: int = 0  # epochs of its job passed to on_epoch

    def where(self) -> str:
        return f"{self.info.get('host', '?')} (worker pid {self.info.get('pid', '?')}, {self.info.get('device', '?')})"


class ClusterFits:
    """Fits side by side on the Ray cluster's slots. The caller connected to Ray; ``folder`` (on the driver's disk)
    receives the resumable states (``states/``) and the driver's token."""

    def __init__(self, data: SegData, plan: SlotPlan, folder: Path, out: Any = None, heartbeat_s: float = HEARTBEAT_S):
        self.plan, self.settings, self.out = plan, plan.settings, out or sys.stdout
        self.folder = Path(folder)
        self.heartbeat_s = heartbeat_s
        self.token = write_token(self.folder)  # a worker that reads it back shares the driver's disk
        self.keeper = start_keeper(self.folder / STATES) if self.settings.checkpoint_every else None
        self.data_ref = ray.put(data)  # decoded once, in the object store once, for every slot
        self.slots: list[Slot] = []
        self.spare: Slot | None = None  # a warm worker kept after the fits, for :meth:`call`

    def where(self) -> str:
        return f"the Ray cluster, {self.plan.text()}"

    def _start(self) -> Slot:
        options = {"num_cpus": self.plan.resources["cpu"], "num_gpus": self.plan.resources["gpu"]}
        handle = FitWorker.options(**options).remote(
            self.data_ref, self.settings, str(self.folder), self.token, self.keeper
        )
        slot = Slot(handle)
        self.slots.append(slot)
        return slot

    def _drop(self, slot: Slot) -> None:
        with contextlib.suppress(Exception):
            ray.kill(slot.handle)
        if slot in self.slots:
            self.slots.remove(slot)

    def run(self, jobs: list[FitJob], on_done: DoneCallback, on_epoch: EpochCallback | None = None) -> None:
        if not jobs:
            return
        queue = collections.deque(jobs)
        restarts: collections.Counter[int] = collections.Counter()
        starting: dict[Any, Slot] = {}
        running: dict[Any, Slot] = {}
        idle: list[Slot] = []
        began = time.monotonic()
        for _ in range(min(self.plan.slots, len(queue))):
            slot = self._start()
            starting[slot.handle.ready.remote()] = slot
        print(
            f"starting {len(starting)} worker(s), {self.plan.text()}: torch, smp and the data, once per slot",
            file=self.out,
            flush=True,
        )
        up = done = failed_starts = 0
        first_batch, first_up, warm = len(starting), None, False
        last_line = time.monotonic()
        while queue or running:
            # the first fits wait until every slot's worker is up (as a search's first trials do: warmup.py), so they
            # start side by side; a slot that is not up after PATIENCE_S is not waited for
            if not warm and (up >= first_batch or not starting or time.monotonic() - (first_up or 1e18) > PATIENCE_S):
                warm = True
                print(f"{up} worker(s) up in {time.monotonic() - began:.1f} s", file=self.out, flush=True)
            while warm and idle and queue:
                slot, job = idle.pop(0), queue.popleft()
                slot.job, slot.shown = job, 0
                running[slot.handle.run.remote(job)] = slot
                again = f", again after its worker was lost ({restarts[job.number]})" if restarts[job.number] else ""
                print(f"  started {job.label} on {slot.where()}{again}", file=self.out, flush=True)
                last_line = time.monotonic()
            for slot in list(idle) if not queue else []:  # nothing left for it: its resources go back to the cluster
                idle.remove(slot)
                self._drop(slot)
            if not starting and not running:
                if queue:
                    raise SegtuneError("no worker could be started on the Ray cluster for the fits left")
                break
            ready, _ = ray.wait([*starting, *running], num_returns=1, timeout=POLL_S)
            for ref in ready:
                if ref in starting:
                    slot = starting.pop(ref)
                    try:
                        slot.info = ray.get(ref)
                    except LOST as e:  # its node went, or it could not start (torch, CUDA): another, a few times
                        self._drop(slot)
                        failed_starts += 1
                        if failed_starts > MAX_RESTARTS + self.plan.slots:
                            raise SegtuneError(f"{failed_starts} workers could not start: {reason(e)}") from None
                        if queue:
                            fresh = self._start()
                            starting[fresh.handle.ready.remote()] = fresh
                        print(f"  a worker could not start ({reason(e)})", file=self.out, flush=True)
                        continue
                    up += 1
                    first_up = first_up or time.monotonic()
                    idle.append(slot)
                    continue
                slot = running.pop(ref)
                job = slot.job
                assert job is not None
                try:
                    outcome: FitOutcome = ray.get(ref)
                except LOST as e:
                    self._lost(job, slot, e, restarts)
                    queue.appendleft(job)
                    fresh = self._start()
                    starting[fresh.handle.ready.remote()] = fresh
                    continue
                except ray.exceptions.RayTaskError as e:  # the fit's own error (a NaN, out of memory, a bug)
                    cause = e.cause if isinstance(getattr(e, "cause", None), Exception) else e
                    raise cause from None
                if on_epoch is not None:
                    self._show(slot, on_epoch)
                self._land(job, outcome)
                outcome.restarts = restarts[job.number]
                slot.job = None
                idle.append(slot)
                done += 1
                on_done(job, outcome)  # the caller records it (finish.json) before its states go
                self._forget(job)
                last_line = time.monotonic()
            if on_epoch is not None and sum(self._show(slot, on_epoch) for slot in running.values()):
                last_line = time.monotonic()
            if time.monotonic() - last_line >= self.heartbeat_s:
                self._heartbeat(running, len(starting), done, len(jobs), began)
                last_line = time.monotonic()
        for slot in idle:  # the last to end stays warm for a call after the fits (:meth:`call`)
            if self.spare is None:
                self.spare = slot
            else:
                self._drop(slot)

    def _lost(self, job: FitJob, slot: Slot, error: Exception, restarts: collections.Counter[int]) -> None:
        restarts[job.number] += 1
        self._drop(slot)
        if restarts[job.number] > MAX_RESTARTS:
            raise SegtuneError(
                f"{job.label}: its worker was lost {restarts[job.number]} times, the last on {slot.where()} "
                f"({reason(error)}); its newest state stays in {self.folder / STATES}: run the same command again"
            )
        print(
            f"  {job.label}: its worker on {slot.where()} was lost ({reason(error)}); it goes on from its newest state "
            "on another worker",
            file=self.out,
            flush=True,
        )

    def _land(self, job: FitJob, outcome: FitOutcome) -> None:
        """The model on the driver's disk (sent through Ray when its node does not share it)."""
        if outcome.model_bytes is not None:
            write_atomic(Path(job.destination), outcome.model_bytes)
            outcome.model_bytes = None

    def _forget(self, job: FitJob) -> None:
        """A fit's states, once its outcome is the caller's."""
        for path in (self.folder / STATES).glob(f"trial_{job.number:04d}.*"):
            path.unlink(missing_ok=True)

    def _show(self, slot: Slot, on_epoch: EpochCallback) -> int:
        """The epochs a running fit finished since the last look, to ``on_epoch``."""
        job = slot.job
        assert job is not None
        try:
            rows = ray.get(slot.handle.epochs.remote(job.number, slot.shown), timeout=30)
        except (ray.exceptions.GetTimeoutError, *LOST):
            return 0  # a lost worker is seen where its run's result is
        for row in rows:
            on_epoch(job, row)
        slot.shown += len(rows)
        return len(rows)

    def _heartbeat(self, running: dict[Any, Slot], starting: int, done: int, total: int, began: float) -> None:
        parts = []
        for slot in running.values():
            job = slot.job
            assert job is not None
            try:
                rows = ray.get(slot.handle.epochs.remote(job.number, 0), timeout=10)
                epoch = rows[-1]["epoch"] if rows else 0
            except (ray.exceptions.GetTimeoutError, *LOST):
                epoch = "?"
            parts.append(f"{job.label} at epoch {epoch}/{job.epochs}")
        minutes = (time.monotonic() - began) / 60
        if starting:  # a worker not up yet: Ray starts it, or waits for the cluster's resources to free
            parts.append(f"{starting} worker(s) starting")
        running_text = "; ".join(parts)
        print(f"  ... {done} of {total} done, {minutes:.1f} min: {running_text}", file=self.out, flush=True)

    def call(self, fn: SlotCall, *args: Any) -> Any:
        """``fn(data, device, settings, *args)`` on a slot's worker (a module-level function, pickled by name): work
        after the fits that belongs on a slot, not in the driver (finish: the ensemble on the test split). A lost
        worker is replaced and the call made again."""
        for attempt in range(MAX_RESTARTS + 1):
            slot, self.spare = self.spare or self._start(), None
            try:
                if not slot.info:
                    slot.info = ray.get(slot.handle.ready.remote())
                return ray.get(slot.handle.call.remote(fn, *args))
            except LOST as e:
                self._drop(slot)
                if attempt == MAX_RESTARTS:
                    raise SegtuneError(f"{getattr(fn, '__name__', fn)}: its worker was lost {attempt + 1} times") from e
                print(f"  its worker on {slot.where()} was lost ({reason(e)}); once more", file=self.out, flush=True)
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(getattr(e, "cause", None), Exception) else e
                raise cause from None
            finally:
                if slot in self.slots and self.spare is None:
                    self.spare = slot  # still warm, for the next call
        raise AssertionError("unreachable")

    def close(self) -> None:
        """The workers and the keeper go; the states of fits that did not end stay (the next run goes on from them)."""
        for slot in list(self.slots):
            self._drop(slot)
        if self.keeper is not None:
            with contextlib.suppress(Exception):
                ray.kill(self.keeper)
        (self.folder / TOKEN_FILE).unlink(missing_ok=True)
        states = self.folder / STATES
        if states.is_dir() and not any(states.iterdir()):
            shutil.rmtree(states, ignore_errors=True)


def reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160] if text else ''}"
