"""Tune callbacks on the driver: StoreRecorder writes each trial's truth into the store, Progress prints it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import cloudpickle, tune

from segtune.objectives import COSTS, violations
from segtune.search import outcome, store
from segtune.search.budget import Budget
from segtune.search.writer import StoreWriter
from segtune.training.metrics import json_safe

TRIAL_KEY = "_segtune_trial"  # the Optuna trial number, carried in each Ray trial's config


def is_optuna_trial(trial: Any) -> bool:
    """A Ray trial that is an Optuna trial (not a slot's warm-up, which has no number and is never stored)."""
    return TRIAL_KEY in trial.config


NO_WORKER = "interrupted: Ray could not hand this trial a worker process (its reset failed)"


def pickle_state(obj: Any) -> dict[str, Any]:
    """What Tune may pickle into its experiment folder: no live store handle, no password.

    Tune writes its run config (callbacks, stopper, searcher) to disk; segtune never restores
    from it (the store is the state), but the file must not leak the store's password.
    """
    state = dict(obj.__dict__)
    state["_study"] = None
    if "_storage_url" in state:
        state["_storage_url"] = store.redact(state["_storage_url"])
    return state


def error_reason(trial: Any) -> str:
    """The exception a trial raised, as one line. Read from the trial's local error files: when Tune
    calls back, they are written there but not yet synced to where ``get_pickled_error`` looks."""
    cause = None
    try:
        with open(trial.pickled_error_file, "rb") as f:
            err = cloudpickle.load(f)
        cause = getattr(err, "cause", None) or err
    except Exception:  # noqa: BLE001 - no pickle (or not loadable): fall back to the text file
        pass
    if cause is not None:
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[-1] if text else ''}"[:500]
    try:
        with open(trial.error_file) as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1][:500] if lines else "trial raised an error"
    except (OSError, TypeError):
        return "trial raised an error (no error file)"


@dataclass
class Counts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    best: float = -math.inf
    best_trial: int | None = None


class StoreRecorder(tune.Callback):
    """Writes each Ray trial's truth into its Optuna trial: per-epoch values, final state, metrics.

    The callbacks run in Tune's loop, which a trial's report waits on: they read what Tune knows and hand
    the store calls to the ``writer`` (search/writer.py), which makes them in order on its own thread. A
    store that stays unreachable past its retry window does not abort Tune's loop: the writer tells
    ``on_outage`` (the search then stops cleanly) and the trial is left for --resume.
    """

    def __init__(
        self,
        storage_url: str,
        study_name: str,
        max_epochs: int,
        metric: str,
        writer: StoreWriter | None = None,
        budget: Budget | None = None,
        objectives: list[str] | None = None,
        constraints: dict[str, float] | None = None,
    ):
        self._storage_url, self._study_name = storage_url, study_name
        self.max_epochs, self.metric = max_epochs, metric
        self.objectives = objectives or [metric]
        self.costs = [o for o in self.objectives if o in COSTS]
        self.constraints = constraints or {}
        self.multi = len(self.objectives) > 1
        self.writer = writer or StoreWriter()
        self.budget = budget or Budget()
        self._study: optuna.Study | None = None  # used on the writer's thread only
        self._epoch_seconds: dict[str, list[float]] = {}  # Ray trial id -> seconds of each epoch so far
        self._epoch_values: dict[str, list[float | None]] = {}  # the same, the metric (multi-objective)
        self._ended: set[str] = set()  # Ray trial ids whose end is recorded
        self.counts = Counts()

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = store.load_study(store.open_storage(self._storage_url), self._study_name)
        return self._study

    def __getstate__(self) -> dict[str, Any]:
        return pickle_state(self)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Tune errors a trial whose reused worker could not be reset without telling any callback: such a trial
        never ran, so it is recorded as interrupted (--resume runs it again), never left RUNNING."""
        for trial in trials:
            if trial.status == "ERROR" and trial.trial_id not in self._ended and is_optuna_trial(trial):
                self._ended.add(trial.trial_id)
                self.budget.end(trial.config[TRIAL_KEY])
                self._record_failure(trial, NO_WORKER)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if not is_optuna_trial(trial):
            return
        number, epoch = trial.config[TRIAL_KEY], int(result["epoch"])
        self.budget.epoch(number)  # one trial-epoch (search.budget_epochs)
        value = result.get(self.metric)
        attrs: dict[str, Any] = {}
        reported = None
        if self.multi:  # Optuna refuses report() in a multi-objective study: one value per epoch goes here
            values = self._epoch_values.setdefault(trial.trial_id, [])
            values.append(json_safe(value))
            attrs["epoch_values"] = list(values)
        elif value is not None and math.isfinite(value):
            reported = float(value)
        attrs["epochs_run"] = epoch
        seconds = self._epoch_seconds.setdefault(trial.trial_id, [])
        seconds.append(round(float(result.get("epoch_seconds", 0.0)), 3))
        attrs["epoch_seconds"] = list(seconds)  # train + validation of each epoch: a trial's training time
        excess: dict[str, float] = {}
        if epoch == 1:  # where it runs: for `status`, and to find a stuck worker
            attrs.update(
                node_id=result.get("node_id"),
                node_ip=result.get("node_ip"),
                node_hostname=result.get("hostname"),
                worker_pid=result.get("pid"),
                worker_rss_start_mb=json_safe(result.get("rss_start_mb")),
                worker_loaded_at=result.get("worker_loaded_at"),  # was it up before the ask?
                train_started_at=result.get("started_at"),
                gpu_ids=result.get("gpu_ids", []),  # the GPUs Ray gave it
                device=result.get("device"),
            )
            # the model's costs (search.objectives / constraints), and how far over each limit it is: Optuna's
            # constraint values, written here because the study that tells has no sampler to write them
            costs = {k.removeprefix("cost_"): v for k, v in result.items() if k.startswith("cost_")}
            attrs.update(costs)
            excess = dict(zip(self.constraints, violations(costs, self.constraints), strict=True))
        self.writer.submit(lambda: self._write_epoch(number, epoch, reported, attrs, excess))

    def _write_epoch(
        self, number: int, epoch: int, value: float | None, attrs: dict[str, Any], excess: dict[str, float]
    ) -> None:
        handle = store.trial_handle(self.study, number)
        if value is not None:
            handle.report(value, step=epoch)
        for k, v in attrs.items():
            handle.set_user_attr(k, v)
        for name, over in excess.items():
            handle.set_constraint(name, over)

    def _finish_attrs(self, trial: Any) -> dict[str, Any]:
        last = trial.last_result or {}
        attrs = {
            "epochs_run": last.get("epoch", 0),
            "wall_time_s": round(float(last.get("time_total_s", 0.0)), 2),
        }  # where it ran (node_*) is written with its first epoch, ray_trial_id when it was suggested
        for key in ("val_miou", "val_dice", "val_pixel_acc", "val_iou_per_class", "epoch"):
            if f"best_{key}" in last:
                attrs["best_epoch" if key == "epoch" else key] = json_safe(last[f"best_{key}"])
        if last.get("checkpoint"):
            attrs["checkpoint"] = last["checkpoint"]
        if last.get("started_at") is not None:  # when its last epoch ended, and its worker's memory by then
            attrs["train_ended_at"] = round(last["started_at"] + last.get("epoch_seconds", 0.0), 3)
            attrs["worker_rss_mb"] = json_safe(last.get("rss_mb"))
        self._epoch_seconds.pop(trial.trial_id, None)
        self._epoch_values.pop(trial.trial_id, None)
        return attrs

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not is_optuna_trial(trial):
            return
        number = trial.config[TRIAL_KEY]
        self._ended.add(trial.trial_id)
        self.budget.end(number)
        attrs = self._finish_attrs(trial)
        costs = [(trial.last_result or {}).get(f"cost_{c}") for c in self.costs] if self.multi else None
        state, values = outcome.outcome(attrs["epochs_run"], self.max_epochs, attrs.get(self.metric), costs)
        if state == TrialState.COMPLETE:
            self.counts.complete += 1
        else:  # stopped at a rung (or by a stopper): Optuna's PRUNED, valued at its last epoch
            self.counts.pruned += 1
        best = attrs.get(self.metric)
        if best is not None and best > self.counts.best:
            self.counts.best, self.counts.best_trial = best, number
        self.writer.submit(lambda: self._write_end(number, attrs, state, values))

    def _write_end(self, number: int, attrs: dict[str, Any], state: TrialState, values: list[float] | None) -> None:
        handle = store.trial_handle(self.study, number)
        for k, v in attrs.items():
            handle.set_user_attr(k, v)
        self.study.tell(number, values, state=state)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not is_optuna_trial(trial):
            return
        self._ended.add(trial.trial_id)
        self.budget.end(trial.config[TRIAL_KEY])
        self._record_failure(trial, error_reason(trial))

    def _record_failure(self, trial: Any, reason: str) -> None:
        number = trial.config[TRIAL_KEY]
        attrs = {**self._finish_attrs(trial), "fail_reason": reason}
        self.counts.failed += 1
        self.writer.submit(lambda: self._write_end(number, attrs, TrialState.FAIL, None))


class Progress(tune.Callback):
    """One line when a trial starts or ends, and a heartbeat while trials run."""

    def __init__(self, recorder: StoreRecorder, total: int, metric: str, out: Any, heartbeat_s: float = 30.0):
        self.recorder, self.total, self.metric, self.out = recorder, total, metric, out
        self.heartbeat_s = heartbeat_s
        self.started = time.monotonic()
        self.last_print = 0.0
        self.running: dict[str, int] = {}  # ray trial id -> epochs reported

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks into the run folder: not the stream
        return {**self.__dict__, "out": None}

    def line(self, event: str = "") -> None:
        c = self.recorder.counts
        done = c.complete + c.pruned + c.failed
        best = f"{c.best:.4f} (trial {c.best_trial})" if c.best_trial is not None else "-"
        elapsed = time.monotonic() - self.started
        text = (
            f"[{int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {done}/{self.total} done: "
            f"{len(self.running)} running, "
            f"{c.complete} complete, {c.pruned} pruned, {c.failed} failed | best {self.metric} {best}"
        )
        if self.recorder.budget.epochs is not None:
            text += f" | budget {self.recorder.budget.text()}"
        print(text + (f" | {event}" if event else ""), file=self.out, flush=True)
        self.last_print = time.monotonic()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not is_optuna_trial(trial):  # a slot's warm-up (search/warmup.py) prints its own lines
            return
        self.running[trial.trial_id] = 0
        self.line(f"trial {trial.config[TRIAL_KEY]} started: {_short_params(trial.config)}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if is_optuna_trial(trial):
            self.running[trial.trial_id] = int(result.get("epoch", 0))

    def _ended(self, trial: Any, how: str) -> None:
        if not is_optuna_trial(trial):
            return
        epochs = self.running.pop(trial.trial_id, 0)
        self.line(f"trial {trial.config[TRIAL_KEY]} {how} after {epochs} epoch(s)")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, "complete" if self.running.get(trial.trial_id, 0) >= self.recorder.max_epochs else "pruned")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, f"FAILED ({error_reason(trial)[:120]})")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.running and time.monotonic() - self.last_print > self.heartbeat_s:
            epochs = ", ".join(str(e) for e in self.running.values())
            self.line(f"epochs so far of running trials: {epochs}")


def _short_params(config: dict[str, Any]) -> str:
    keys = ("arch", "encoder", "loss", "augment", "optimizer", "lr", "batch_size", "schedule")
    return " ".join(f"{k}={config[k]:.2g}" if isinstance(config[k], float) else f"{k}={config[k]}" for k in keys)
