"""Tune callbacks on the driver: StoreRecorder writes each trial's truth into the store."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune

from segtune.objectives import COSTS, violations
from segtune.search import store
from segtune.search.ray_trials import (
    EPOCHS_KEY,
    LOST,
    NO_WORKER,
    RESUME_KEY,
    TRIAL_KEY,
    error_reason,
    is_optuna_trial,
)
from segtune.search.store import outcome
from segtune.search.store.budget import Budget, Clock
from segtune.search.store.pauses import Pauses
from segtune.search.store.resume import INTERRUPTED
from segtune.search.store.uploads import ModelLostWithItsNode, Uploads
from segtune.search.store.writer import StoreWriter
from segtune.training.metrics import json_safe


@dataclass
class Counts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    best: float = -math.inf
    best_trial: int | None = None


class StoreRecorder(Pauses, Uploads, tune.Callback):
    """Writes each Ray trial's truth into its Optuna trial: per-epoch values, final state, metrics.

    The callbacks run in Tune's loop, which a trial's report waits on: they read what Tune knows and hand
    the store calls to the ``writer`` (search/store/writer.py), which makes them in order on its own thread. A
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
        artifacts: str | None = None,
        states: str | None = None,
        rungs: Any = None,
        keep_free_gb: float | None = None,
        clock: Clock | None = None,
    ):
        self._storage_url, self._study_name = storage_url, study_name
        self.max_epochs, self.metric = max_epochs, metric
        self.objectives = objectives or [metric]
        self.costs = [o for o in self.objectives if o in COSTS]
        self.constraints = constraints or {}
        self.multi = len(self.objectives) > 1
        self.writer = writer or StoreWriter()
        self.budget = budget or Budget()
        self.clock = clock  # search.time_budget: every epoch's seconds tell it how long the next ones take
        self.artifacts = artifacts  # where every trial's files go (search/store/artifacts.py); None: nowhere
        self.states = states  # the run's folder of resumable states, on the driver's disk
        self.rungs = rungs  # the rung policy (search/scheduling/rungs.py): which ended trials are only paused
        self.keep_free_gb = keep_free_gb  # below it on the states' disk, paused trials end (_keep_disk_free)
        self.pauses_ended: list[str] = []  # what the progress lines say of pauses ended for disk (drained there)
        self._artifact_store: Any = None  # opened on the writer's thread
        self._study: optuna.Study | None = None  # used on the writer's thread only
        # per Optuna trial number (a promoted trial is a new Ray trial of the same Optuna trial):
        self._epoch_seconds: dict[int, list[float]] = {}  # seconds of each epoch so far
        self._epoch_values: dict[int, list[float | None]] = {}  # the metric of each epoch (multi-objective)
        self._last: dict[int, dict[str, Any]] = {}  # its last epoch's result
        self._failed: dict[int, str] = {}  # the error it reported (its own: never retried)
        self._nodes: dict[int, list[str]] = {}  # the nodes it trained on, in order
        self._restarts: dict[int, int] = {}
        self._wall: dict[int, float] = {}  # wall seconds of its earlier Ray trials (before a pause or a restart)
        self._ended: set[str] = set()  # Ray trial ids whose end is recorded
        self.lost_models: list[str] = []  # trials that ended FAIL (interrupted) when their model's node was lost
        self.counts = Counts()

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = store.load_study(store.open_storage(self._storage_url), self._study_name)
        return self._study

    def __getstate__(self) -> dict[str, Any]:
        return {**store.pickle_state(self), "_artifact_store": None}

    def failure_of(self, trial: Any) -> str | None:
        """The error a trial reported as its outcome (search/trial/trainable.py), if it did."""
        return self._failed.get(trial.config[TRIAL_KEY])

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
        if "failed" in result:  # the trial's own error, as its last result: recorded when it ends
            self._failed[trial.config[TRIAL_KEY]] = str(result["failed"])
            return
        last = self._last.get(trial.config[TRIAL_KEY])
        if last is not None and epoch <= int(last["epoch"]):
            return  # restarted from an older state: an epoch recorded already (the first value stays)
        self._last[trial.config[TRIAL_KEY]] = result
        self.budget.epoch(number)  # one trial-epoch (search.budget_epochs)
        if self.clock is not None:
            self.clock.record(float(result.get("epoch_seconds", 0.0)))
        value = result.get(self.metric)
        attrs: dict[str, Any] = {}
        reported = None
        seconds = self._epoch_seconds.setdefault(trial.config[TRIAL_KEY], [])
        values = self._epoch_values.setdefault(trial.config[TRIAL_KEY], [])
        carried: dict[int, float] = {}
        if result.get("resumed_history") and not seconds:  # a --resume re-run: the epochs before its state
            seconds += [round(float(r.get("epoch_seconds", 0.0)), 3) for r in result["resumed_history"]]
            values += [json_safe(r.get(self.metric)) for r in result["resumed_history"]]
            # the state may be newer than the dead driver's last write: its epochs the store never got come from
            # the state's own history (the searcher carried over those it had; Optuna keeps a step's first value)
            carried = {
                int(r["epoch"]): float(r[self.metric])
                for r in result["resumed_history"]
                if not self.multi and r.get(self.metric) is not None and math.isfinite(r[self.metric])
            }
        if self.multi:  # Optuna refuses report() in a multi-objective study: one value per epoch goes here
            values.append(json_safe(value))
            attrs["epoch_values"] = list(values)
        elif value is not None and math.isfinite(value):
            reported = float(value)
        attrs["epochs_run"] = epoch
        seconds.append(round(float(result.get("epoch_seconds", 0.0)), 3))
        attrs["epoch_seconds"] = list(seconds)  # train + validation of each epoch: a trial's training time
        if result.get("state_epoch"):  # its newest resumable state (search/nodes/keeper.py), on the driver's disk
            attrs.update(state_epoch=result["state_epoch"], state_folder=self.states)
        excess: dict[str, float] = {}
        nodes = self._nodes.setdefault(trial.config[TRIAL_KEY], [])
        if not nodes or nodes[-1] != result.get("node_id"):  # where it runs: `status`, a stuck or lost node
            nodes.append(result.get("node_id"))
            attrs.update(
                node_id=result.get("node_id"),
                node_ip=result.get("node_ip"),
                node_hostname=result.get("hostname"),
                worker_pid=result.get("pid"),
                worker_rss_start_mb=json_safe(result.get("rss_start_mb")),
                worker_loaded_at=result.get("worker_loaded_at"),  # was it up before the ask?
                gpu_ids=result.get("gpu_ids", []),  # the GPUs Ray gave it
                device=result.get("device"),
            )
            if len(nodes) > 1:
                attrs["nodes"] = list(nodes)
            else:
                attrs["train_started_at"] = result.get("started_at")
        if len(nodes) == 1 and len(seconds) == 1:
            # the model's costs (search.objectives / constraints), and how far over each limit it is: Optuna's
            # constraint values, written here because the study that tells has no sampler to write them
            costs = {k.removeprefix("cost_"): v for k, v in result.items() if k.startswith("cost_")}
            attrs.update(costs)
            excess = dict(zip(self.constraints, violations(costs, self.constraints), strict=True))
        self.writer.submit(lambda: self._write_epoch(number, epoch, reported, attrs, excess, carried))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Its worker or node died and Tune runs it again, elsewhere if need be, from its newest state: the Optuna
        trial stays one trial, RUNNING, and says where it moved."""
        if not is_optuna_trial(trial):
            return
        number = trial.config[TRIAL_KEY]
        restarts = self._restarts[number] = self._restarts.get(number, 0) + 1
        self._wall[number] = self._wall.get(number, 0.0) + float((self._last.get(number) or {}).get("time_total_s", 0))
        lost = self._where(trial)
        self.writer.submit(lambda: self._write_attrs(number, {"restarts": restarts, "lost_node": lost}))

    def _where(self, trial: Any) -> str:
        last = self._last.get(trial.config[TRIAL_KEY]) or {}
        return f"{last.get('hostname', '?')} ({last.get('node_ip') or last.get('node_id', '?')})"

    def _write_attrs(self, number: int, attrs: dict[str, Any]) -> None:
        handle = store.trial_handle(self.study, number)
        for k, v in attrs.items():
            handle.set_user_attr(k, v)

    def _write_epoch(
        self,
        number: int,
        epoch: int,
        value: float | None,
        attrs: dict[str, Any],
        excess: dict[str, float],
        carried: dict[int, float],
    ) -> None:
        handle = store.trial_handle(self.study, number)
        for earlier, earlier_value in sorted(carried.items()):
            handle.report(earlier_value, step=earlier)
        if value is not None:  # a resumed trial's repeated epoch: Optuna keeps the first (segtune/environment.py)
            handle.report(value, step=epoch)
        for k, v in attrs.items():
            handle.set_user_attr(k, v)
        for name, over in excess.items():
            handle.set_constraint(name, over)

    def _finish_attrs(self, trial: Any) -> dict[str, Any]:
        last = self._last.get(trial.config[TRIAL_KEY]) or {}
        earlier = self._wall.get(trial.config[TRIAL_KEY], 0.0)  # a paused or restarted trial ran in pieces
        attrs = {
            "epochs_run": last.get("epoch", 0),
            "wall_time_s": round(earlier + float(last.get("time_total_s", 0.0)), 2),
        }  # where it ran (node_*) is written with its first epoch, ray_trial_id when it was suggested
        for key in ("val_miou", "val_dice", "val_pixel_acc", "val_iou_per_class", "epoch"):
            if f"best_{key}" in last:
                attrs["best_epoch" if key == "epoch" else key] = json_safe(last[f"best_{key}"])
        if last.get("checkpoint"):
            attrs["checkpoint"] = last["checkpoint"]
        judged = self.rungs.judged.get(trial.config[TRIAL_KEY]) if self.rungs is not None else None
        if judged is not None:  # where a rung first compared it with others, and why there
            attrs["first_judged_epoch"], attrs["first_judged_why"] = judged
        if last.get("started_at") is not None:  # when its last epoch ended, and its worker's memory by then
            attrs["train_ended_at"] = round(last["started_at"] + last.get("epoch_seconds", 0.0), 3)
            attrs["worker_rss_mb"] = json_safe(last.get("rss_mb"))
        return attrs

    def _forget(self, number: int) -> None:
        """The trial ended for good (not paused): its running lists go."""
        for d in (self._epoch_seconds, self._epoch_values, self._nodes, self._last, self._restarts, self._wall):
            d.pop(number, None)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not is_optuna_trial(trial):
            return
        number = trial.config[TRIAL_KEY]
        self._ended.add(trial.trial_id)
        self.budget.end(number)
        failed = self._failed.get(trial.config[TRIAL_KEY])
        if failed is not None:
            self._record_failure(trial, failed)
            return
        files = self._files(trial)
        attrs = self._finish_attrs(trial)
        last = self._last.get(number, {})
        if self.rungs is not None and number in self.rungs.paused:  # stays RUNNING: later results may promote it
            self._wall[number] = attrs["wall_time_s"]
            attrs.update(paused=True, paused_at_epoch=attrs["epochs_run"])
            if files is not None:
                attrs.update(files_at=list(files))  # where its files are, for its end (prune_paused)
            self.writer.submit(lambda: self._write_attrs(number, attrs))
            self._keep_disk_free()
            return
        if self.rungs is not None:
            self.rungs.ended(number)
        self._forget(number)
        if trial.config.get(RESUME_KEY):  # the dead trial's state it went on from: done with
            attrs["resumed_state"] = trial.config[RESUME_KEY]
        costs = [last.get(f"cost_{c}") for c in self.costs] if self.multi else None
        planned = int(trial.config.get(EPOCHS_KEY, self.max_epochs))  # COMPLETE: it ran every epoch it planned
        state, values = outcome.outcome(attrs["epochs_run"], planned, attrs.get(self.metric), costs)
        if state == TrialState.COMPLETE:
            self.counts.complete += 1
        else:  # stopped at a rung (or by a stopper): Optuna's PRUNED, valued at its last epoch
            self.counts.pruned += 1
        best = attrs.get(self.metric)
        if best is not None and best > self.counts.best:
            self.counts.best, self.counts.best_trial = best, number
        self.writer.submit(lambda: self._write_end(number, attrs, state, values, files))

    def _files(self, trial: Any) -> tuple[str, str, bool] | None:
        """Where a trial's files are: its folder, the node holding it, whether the driver's disk is that disk."""
        last = self._last.get(trial.config[TRIAL_KEY]) or {}
        if self.artifacts is None or not last.get("checkpoint"):
            return None
        return last["checkpoint"], str(last.get("node_id")), bool(last.get("shared_with_driver"))

    def _write_end(
        self,
        number: int,
        attrs: dict[str, Any],
        state: TrialState,
        values: list[float] | None,
        files: tuple[str, str, bool] | None = None,
    ) -> None:
        keep_states = False
        if files is not None:
            try:
                self._upload(number, *files, best_epoch=attrs.get("best_epoch"))
            except store.StoreUnavailable:
                raise
            except ModelLostWithItsNode as e:  # like a trial cut short: --resume runs it again, from its state
                attrs = {**attrs, "fail_reason": f"{INTERRUPTED}: {e}"}
                state, values, keep_states = TrialState.FAIL, None, True
                self.lost_models.append(f"trial {number}: ended FAIL ({INTERRUPTED}): {e}")
            except Exception as e:  # noqa: BLE001 - never a silent gap: a model that is not stored fails its trial
                attrs = {**attrs, "fail_reason": f"its model could not be stored in the artifact store: {str(e)[:300]}"}
                state, values = TrialState.FAIL, None
        handle = store.trial_handle(self.study, number)
        for k, v in attrs.items():
            handle.set_user_attr(k, v)
        self.study.tell(number, values, state=state)
        if self.states is not None and not keep_states:  # nothing will go on from its state (often a few 100 MB)
            for path in Path(self.states).glob(f"trial_{number:04d}.*"):  # its states and best files
                path.unlink(missing_ok=True)
        if attrs.get("resumed_state"):
            Path(attrs["resumed_state"]).unlink(missing_ok=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not is_optuna_trial(trial):
            return
        self._ended.add(trial.trial_id)
        self.budget.end(trial.config[TRIAL_KEY])
        reason = self._failed.get(trial.config[TRIAL_KEY]) or error_reason(trial)
        if any(word in reason for word in LOST):  # its process or node died, and no restart was left
            reason = f"its node {self._where(trial)} or worker process was lost: {reason}"
        self._record_failure(trial, reason)

    def _record_failure(self, trial: Any, reason: str) -> None:
        number = trial.config[TRIAL_KEY]
        if self.rungs is not None:  # a prior member that failed: the rest of the list no longer waits for it
            self.rungs.leave(number)
        attrs = {**self._finish_attrs(trial), "fail_reason": reason}
        self._forget(number)
        self.counts.failed += 1
        self.writer.submit(lambda: self._write_end(number, attrs, TrialState.FAIL, None))
