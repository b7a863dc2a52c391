"""The search's progress lines: one when a trial starts or ends, and a heartbeat while trials run."""

from __future__ import annotations

import time
from typing import Any

from ray import tune

from segtune.search.ray_trials import EPOCHS_KEY, FINISHING_KEY, PROMOTED_KEY, TRIAL_KEY, error_reason, is_optuna_trial
from segtune.search.store.recorder import StoreRecorder
from segtune.spec import UNCOUNTED_TRIALS


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
        paused = len(self.recorder.rungs.paused) if self.recorder.rungs is not None else 0
        done = c.complete + c.pruned + c.failed + paused  # a paused trial is done unless a later result promotes it
        best = f"{c.best:.4f} (trial {c.best_trial})" if c.best_trial is not None else "-"
        elapsed = time.monotonic() - self.started
        of = "" if self.total >= UNCOUNTED_TRIALS else f"/{self.total}"  # a fit's search: the clock bounds it
        text = (
            f"[{int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {done}{of} done: "
            f"{len(self.running)} running, " + (f"{paused} paused, " if paused else "") + f"{c.complete} complete, "
            f"{c.pruned} pruned, {c.failed} failed | best {self.metric} {best}"
        )
        if self.recorder.budget.epochs is not None:
            text += f" | budget {self.recorder.budget.text()}"
        if self.recorder.clock is not None and self.recorder.clock.seconds is not None:
            text += f" | time {self.recorder.clock.text()}"
        print(text + (f" | {event}" if event else ""), file=self.out, flush=True)
        self.last_print = time.monotonic()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not is_optuna_trial(trial):  # a slot's warm-up (search/nodes/warmup.py) prints its own lines
            return
        self.running[trial.trial_id] = 0
        promoted = trial.config.get(PROMOTED_KEY)
        if promoted is not None and trial.config.get(FINISHING_KEY):
            number = trial.config[TRIAL_KEY]
            self.line(f"trial {number} goes on from epoch {promoted}: too few epochs left for a new trial, it finishes")
            return
        if promoted is not None:
            self.line(f"trial {trial.config[TRIAL_KEY]} promoted: later results rank it in the top at epoch {promoted}")
            return
        self.line(f"trial {trial.config[TRIAL_KEY]} started: {_short_params(trial.config)}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if is_optuna_trial(trial) and "failed" not in result:
            self.running[trial.trial_id] = int(result.get("epoch", 0))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if is_optuna_trial(trial):
            self.line(
                f"trial {trial.config[TRIAL_KEY]}: its worker or node was lost; Tune runs it again from its state"
            )

    def _ended(self, trial: Any, how: str) -> None:
        if not is_optuna_trial(trial):
            return
        epochs = self.running.pop(trial.trial_id, 0)
        self.line(f"trial {trial.config[TRIAL_KEY]} {how} after {epochs} epoch(s)")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        failed = self.recorder.failure_of(trial) if is_optuna_trial(trial) else None
        if failed is not None:
            self._ended(trial, f"FAILED ({failed[:120]})")
            return
        if not is_optuna_trial(trial):
            return
        number, rungs = trial.config[TRIAL_KEY], self.recorder.rungs
        planned = int(trial.config.get(EPOCHS_KEY, self.recorder.max_epochs))
        if rungs is not None and number in rungs.paused:
            self._ended(trial, "paused (later results may promote it)")
        else:
            self._ended(trial, "complete" if self.running.get(trial.trial_id, 0) >= planned else "pruned")
        while self.recorder.pauses_ended:
            self.line(self.recorder.pauses_ended.pop(0))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, f"FAILED ({error_reason(trial)[:120]})")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.running and time.monotonic() - self.last_print > self.heartbeat_s:
            epochs = ", ".join(str(e) for e in self.running.values())
            self.line(f"epochs so far of running trials: {epochs}")


def _short_params(config: dict[str, Any]) -> str:
    keys = ("arch", "encoder", "loss", "augment", "optimizer", "lr", "batch_size", "schedule")
    return " ".join(f"{k}={config[k]:.2g}" if isinstance(config[k], float) else f"{k}={config[k]}" for k in keys)
