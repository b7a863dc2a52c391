"""Warm slots: every slot's worker process is up before the search asks Optuna for its first trial.

Tune starts a trial's worker process only for a trial it already holds, and a new worker takes
about 5 s on a 2-core machine: Ray's worker, then torch, smp, albumentations and Ray Tune imported,
the decoded data fetched from the object store, and on a GPU a CUDA context. Ray never hands an
actor a pre-started process. Asked first, each slot's first trial would wait those seconds after its
ask, and its time in the store would hold its worker's start-up.

So the searcher first hands Tune one warm-up trial per slot (no Optuna trial, nothing stored): its
worker starts and does the one-off work (:func:`segtune.search.nodes.worker_process.warm_up`). Once every
slot's worker is up, the searcher asks Optuna, and Tune's actor reuse gives each warm worker to a
real trial.

The hand-over needs an order Tune does not keep by itself: Tune caches a finished trial's worker
only for a trial already waiting for one (beyond a single spare), and a warm-up that ended before
the others started would be handed to a waiting *warm-up*, whose own new worker Tune then throws
away. So each warm-up waits at a :class:`Gate` that opens when the searcher has handed out as many
real trials as there are warm-ups, every one of them waiting in Tune by then.

This does not make a run shorter: the workers' start moves before the first ask, where Ray's own
start-up already is, and ``benchmarks/trial_overhead.py`` reports it with the run's start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import ray
from ray import tune
from ray.tune.progress_reporter import TrialProgressCallback
from ray.tune.search import Searcher

from segtune.search.ray_trials import error_reason

WARMUP_KEY = "_segtune_warmup"  # in a warm-up trial's Ray config: which slot it warms (no Optuna trial)
WARMUP_PREFIX = "warmup_"  # its Tune folder in the run's folder, removed when the run ends
PATIENCE_S = 120.0  # a warm-up Ray cannot place (the cluster shrank): ask anyway, with the workers that are up


def is_warmup(config: dict[str, Any]) -> bool:
    return WARMUP_KEY in config


@ray.remote(num_cpus=0)
class Gate:
    """Where the warm-ups wait until their workers have real trials to go to (an async actor: every
    ``wait`` is answered once ``open`` is called)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()

    async def wait(self) -> bool:
        await self._open.wait()
        return True

    async def open(self) -> None:
        self._open.set()


def wait_at(gate: Any) -> None:
    """In a warm-up: return once the gate opens, or after :data:`PATIENCE_S` (the driver may be gone)."""
    if gate is None:
        return
    with contextlib.suppress(ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
        ray.get(gate.wait.remote(), timeout=PATIENCE_S)


class WarmSlots(tune.Callback):
    """Hands out one warm-up trial per slot, tells the searcher when to start asking Optuna, and opens the
    warm-ups' gate once that many real trials are waiting.

    A Tune callback (it sees the warm-ups' workers start) that the searcher consults: both live in the
    driver, and Tune keeps the objects it was given.
    """

    def __init__(self, count: int, gate: Any, out: Any):
        self.count, self.gate, self.out = count, gate, out
        self.handed = 0
        self.trials_handed = 0
        self.opened = False
        self.settled: set[str] = set()  # Ray trial ids of warm-ups whose worker started, or failed to
        self.first_handed: float | None = None
        self.last_settled: float | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks into the run folder
        return {**self.__dict__, "out": None, "gate": None}

    def next_config(self) -> dict[str, Any] | None:
        """The next warm-up trial's config, or None once every slot has one."""
        if self.handed >= self.count:
            return None
        if self.handed == 0:
            self.first_handed = time.monotonic()
            print(
                f"starting {self.count} trial worker(s): torch, smp, albumentations and the data, once per slot",
                file=self.out,
                flush=True,
            )
        self.handed += 1
        return {WARMUP_KEY: self.handed - 1}

    @property
    def ready(self) -> bool:
        """Every slot's worker is up (or failed to start), or the slots that could start have waited long enough
        for the rest."""
        if self.handed < self.count:
            return False
        if len(self.settled) >= self.count:
            return True
        return self.last_settled is not None and time.monotonic() - self.last_settled > PATIENCE_S

    def trial_handed(self) -> None:
        """The searcher handed Tune a real trial: with one for every warm worker, let the warm-ups end."""
        self.trials_handed += 1
        if self.trials_handed == self.count:
            self.open_gate()

    def open_gate(self) -> None:
        if self.gate is not None and not self.opened:
            self.gate.open.remote()
            self.opened = True

    def _settle(self, trial: Any, what: str) -> None:
        if not is_warmup(trial.config) or trial.trial_id in self.settled:
            return
        self.settled.add(trial.trial_id)
        self.last_settled = time.monotonic()
        if what:
            print(f"trial worker {trial.config[WARMUP_KEY]} {what}", file=self.out, flush=True)
        if len(self.settled) == self.count and self.first_handed is not None:
            print(
                f"{self.count} trial worker(s) up in {self.last_settled - self.first_handed:.1f} s: "
                "asking Optuna for trials",
                file=self.out,
                flush=True,
            )

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._settle(trial, "")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._settle(trial, f"could not start: {error_reason(trial)[:200]}")


class WarmFirst(Searcher):
    """Tune's searcher: the warm-ups of :class:`WarmSlots` first, then, once the slots' workers are up, the
    configurations of ``searcher`` (segtune's Optuna searcher, maybe behind a ConcurrencyLimiter, which never
    sees the warm-ups: they would count against ``search.max_concurrent``)."""

    def __init__(self, searcher: Searcher, slots: WarmSlots):
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher, self.slots = searcher, slots
        self.warmups: set[str] = set()

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        warm_up = self.slots.next_config()
        if warm_up is not None:
            self.warmups.add(trial_id)
            return warm_up
        if not self.slots.ready:
            return None  # Tune asks again next step
        config = self.searcher.suggest(trial_id)
        if isinstance(config, dict):
            self.slots.trial_handed()
        elif config == Searcher.FINISHED:  # nothing more to run: the warm-ups need not wait
            self.slots.open_gate()
        return config

    def get_state(self) -> dict[str, Any]:  # Tune saves a wrapper's state beside the wrapped searcher's
        return {"warmups": sorted(self.warmups)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.warmups = set(state["warmups"])

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.warmups:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.warmups:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)


class TuneLines(TrialProgressCallback):
    """Tune's own per-trial lines, less the one it prints for a trial that reported nothing ("Trial warmup_0
    completed. Last result:"), whatever the verbosity. Given to Tune, it stands in for the one Tune adds."""

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not is_warmup(trial.config):
            super().on_trial_complete(iteration, trials, trial, **info)
