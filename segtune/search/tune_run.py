"""One run of a study as a Tune experiment: the pieces it is made of, and how it ends.

The searcher asks Optuna (with the budget, the rungs' promotions and a concurrency limit), warm slots start every
worker before the first ask, the rung scheduler pauses and stops, the recorder writes each trial's truth through
its writer thread, and the trainable carries the decoded data. :meth:`TuneRun.end` leaves the store consistent
whatever stopped the run: paused trials nobody promoted end PRUNED, unfinished ones FAIL with the reason.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from segtune.config import TrainSettings
from segtune.data import SegData
from segtune.search import store
from segtune.search.interrupt import Interrupt, SearchInterrupted
from segtune.search.nodes.keeper import start_keeper, write_token
from segtune.search.nodes.warmup import WARMUP_PREFIX, Gate, TuneLines, WarmFirst, WarmSlots
from segtune.search.progress import Progress
from segtune.search.ray_trials import TRIAL_KEY
from segtune.search.scheduling import defaults
from segtune.search.scheduling.rungs import RungScheduler
from segtune.search.scheduling.searcher import OptunaStoreSearcher
from segtune.search.scheduling.study_policy import study_rungs
from segtune.search.store.budget import Budget, Clock
from segtune.search.store.recorder import StoreRecorder
from segtune.search.store.writer import StoreWriter
from segtune.search.trial.trainable import STATES, train_trial, tune_trial_name
from segtune.spec import StudySpec

MAX_RESTARTS = 3  # times Tune runs a trial again after its worker or node was lost
MAX_PROMOTIONS = 4  # times one trial may be paused and promoted (one per rung at most)


class TimeLimit(tune.Stopper):
    """search.time_budget's last word: a trial whose next epoch would end past the deadline stops after this one
    (the searcher already shortened its schedule to fit; this catches an estimate that was short)."""

    def __init__(self, clock: Clock):
        self.clock = clock

    def __call__(self, trial_id: str, result: dict) -> bool:
        return "epoch_seconds" in result and self.clock.cut(float(result["epoch_seconds"]))

    def stop_all(self) -> bool:
        return False


@dataclass
class TuneRun:
    """A study's Tune run and the parts the driver keeps a hand on while it runs and after."""

    study: optuna.Study
    run_id: str
    run_dir: Path
    tuner: tune.Tuner
    writer: StoreWriter
    interrupt: Interrupt
    budget: Budget
    recorder: StoreRecorder
    rungs: Any
    warm: WarmSlots | None
    keeper: Any

    @classmethod
    def build(
        cls,
        spec: StudySpec,
        study: optuna.Study,
        run_id: str,
        data: SegData,
        storage_url: str,
        artifacts_where: str,
        settings: TrainSettings,
        resources: dict[str, float],
        slots: int,
        trials: int,
        chosen: defaults.SearchSettings,
        out: Any,
        stopper: Any = None,
    ) -> TuneRun:
        search = spec.search
        budget = Budget(
            search.budget_epochs,
            used=sum(int(t.user_attrs.get("epochs_run", 0)) for t in study.trials),
            first_rung=chosen.grace_period if search.scheduler == "asha" else search.max_epochs,
            rule=search.budget_rule,
            max_epochs=search.max_epochs,
        )
        clock = Clock(search.time_budget) if search.time_budget is not None else None
        writer = StoreWriter()  # the recorder's store writes, off Tune's loop (search/store/writer.py)
        interrupt = Interrupt(study, run_id, out, writer)
        writer.on_outage = interrupt.store_outage
        stoppers = [interrupt, *([TimeLimit(clock)] if clock is not None else []), *([stopper] if stopper else [])]
        stopper = tune.stopper.CombinedStopper(*stoppers) if len(stoppers) > 1 else interrupt
        rungs = study_rungs(study, spec, chosen, data, run_id) if search.scheduler == "asha" else None
        asker = OptunaStoreSearcher(
            storage_url,
            study.study_name,
            run_id,
            spec,
            on_outage=interrupt.store_outage,
            budget=budget,
            settings=chosen,
            before_ask=writer.landed,
            rungs=rungs,
            trials=trials,
            clock=clock,
        )
        searcher: Searcher = asker
        if search.max_concurrent:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=search.max_concurrent)
        # a worker process per slot, up before the first ask (search/nodes/warmup.py); pointless without reuse
        warm = None
        if spec.resources.reuse_workers:
            warm = WarmSlots(min(slots, trials, search.max_concurrent or slots), Gate.remote(), out)
            searcher = WarmFirst(searcher, warm)
        scheduler = FIFOScheduler()
        if rungs is not None:
            scheduler = RungScheduler(rungs, search.metric, protected=asker.protected, trial_key=TRIAL_KEY)
        results_dir = Path(spec.results_dir).expanduser().resolve()
        run_name = f"{study.study_name}_{run_id}"
        run_dir = results_dir / run_name
        # a trial that reads the token back writes where the driver reads (search/nodes/keeper.py)
        token = write_token(run_dir)
        states = run_dir / STATES
        keeper = start_keeper(states) if settings.checkpoint_every else None
        recorder = StoreRecorder(
            storage_url,
            study.study_name,
            search.max_epochs,
            search.metric,
            writer=writer,
            budget=budget,
            objectives=search.objective_names,
            constraints=search.constraints,
            artifacts=artifacts_where,
            states=str(states),
            rungs=rungs,
            keep_free_gb=search.keep_free_gb,
            clock=clock,
        )
        progress = Progress(recorder, trials, search.metric, out)
        gate = warm.gate if warm is not None else None
        trainable = tune.with_resources(
            tune.with_parameters(
                train_trial,
                data=data,
                settings=settings,
                max_epochs=search.max_epochs,
                run_dir=str(run_dir),
                gate=gate,
                keeper=keeper,
                token=token,
            ),
            resources,
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=search.metric,
                mode="max",
                search_alg=searcher,
                scheduler=scheduler,
                # the searcher ends the search (search.trials new trials, then promotions): this only bounds it
                num_samples=trials * (1 + MAX_PROMOTIONS) + (warm.count if warm is not None else 0),
                reuse_actors=spec.resources.reuse_workers,  # a worker process serves trial after trial
                trial_name_creator=lambda t: tune_trial_name(t.config),
                trial_dirname_creator=lambda t: tune_trial_name(t.config),
            ),
            run_config=tune.RunConfig(
                name=run_name,
                storage_path=str(results_dir),
                callbacks=[recorder, progress] + ([warm, TuneLines(search.metric)] if warm is not None else []),
                verbose=0,
                stop=stopper,
                # a lost worker or node: Tune runs the trial again from its newest state (its own errors are results)
                failure_config=tune.FailureConfig(max_failures=MAX_RESTARTS if keeper is not None else 0),
            ),
        )
        return cls(study, run_id, run_dir, tuner, writer, interrupt, budget, recorder, rungs, warm, keeper)

    def end(self) -> int:
        """After Tune stopped, however it stopped: land what is queued, end the paused trials PRUNED and the unfinished
        ones FAIL with the reason, give the signal handlers back, and stop the run's actors. The trials marked FAIL."""
        with contextlib.suppress(Exception):  # fit raised: land what is queued, and raise fit's error
            self.writer.close()
        # a trial Ray never finished (driver interrupted, experiment stopped) must not stay RUNNING
        interrupt = self.interrupt
        reason = interrupt.reason() if interrupt.event.is_set() else "stopped: the search ended before this trial did"
        try:  # after an outage, once: its window has passed already, and --resume marks them as well
            with store.one_try() if interrupt.outage is not None else contextlib.nullcontext():
                self.recorder.prune_paused(self.run_id)  # the search is over: paused trials nobody promoted end PRUNED
                failed = store.fail_unfinished(self.study, self.run_id, reason)
        except store.StoreUnavailable as e:  # still down: --resume marks them when it answers again
            interrupt.store_outage(e)
            failed = 0
        interrupt.restore()
        for actor in (self.warm.gate if self.warm is not None else None, self.keeper):
            if actor is not None:
                with contextlib.suppress(Exception):  # cleanup: never hide why the search ended
                    ray.kill(actor)
        if self.warm is not None:
            for folder in self.run_dir.glob(f"{WARMUP_PREFIX}*"):  # Tune's files of the warm-ups
                shutil.rmtree(folder, ignore_errors=True)
        return failed

    def raise_or_report(self, failed: int, out: Any) -> None:
        """What the user must know once the run ended: budget overshoot, models lost with their node, and an outage
        or an interruption, raised."""
        if self.budget.overshoot():
            print(self.budget.overshoot(), file=out, flush=True)
        for line in self.recorder.lost_models:
            print(f"{line}; the same command with --resume runs it again", file=out, flush=True)
        if self.interrupt.outage is not None:
            raise store.StoreUnavailable(
                f"{self.interrupt.outage}; the search stopped. Run the same command with --resume once the store "
                "answers: finished trials are kept, interrupted ones run again"
            )
        if self.interrupt.event.is_set():
            raise SearchInterrupted(self.study, self.interrupt.signal_name, failed)
