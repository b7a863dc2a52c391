"""Replay a search over recorded learning curves, on a simulated clock, with segtune's own search logic.

A table of curves (benchmarks/record_curves.py: every epoch's validation value and seconds of a set of
configurations trained once to the end) stands in for training. The replay drives the real pieces of
`segtune run`: the searcher (`OptunaStoreSearcher`: the sampler `run` would build, the space, the
starting points, the budget), the rung policy (`Rungs`, the very object `RungScheduler` asks) and the
end-of-trial rule (`outcome.outcome`, the recorder's too). Only Ray and the training are simulated: a
trial's epoch e returns the recorded value of e and advances its slot's clock by the recorded seconds.

Which recorded curve a suggestion gets: the nearest recorded configuration (Gower distance over the
space's parameters: a differing choice counts 1, a numeric gap its share of the range, on a log scale
where the range is). Every strategy goes through the same lookup, so none is favoured, and random
search over the space lands on recorded configurations as a random draw of the table would.
"""

from __future__ import annotations

import gzip
import heapq
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from segtune import space
from segtune.config import TrialConfig
from segtune.search import store
from segtune.search.ray_trials import EPOCHS_KEY, HIDDEN_PREFIX, TRIAL_KEY
from segtune.search.scheduling import defaults
from segtune.search.scheduling.rungs import Rungs
from segtune.search.scheduling.searcher import OptunaStoreSearcher, make_sampler, queue_first_trials
from segtune.search.store import outcome
from segtune.search.store.budget import Budget
from segtune.spec import StudySpec, validate


@dataclass(frozen=True)
class Curve:
    id: int
    source: str  # "hand" (a hand-picked configuration) or "random"
    params: dict[str, Any]
    values: tuple[float | None, ...]  # the validation metric after each epoch
    seconds: tuple[float, ...]  # train + validation seconds of each epoch
    failed: str | None = None
    failed_after_s: float = 0.0

    def final(self, max_epochs: int) -> float | None:
        """What the trial is worth when it runs to the end: its best epoch (as a COMPLETE trial is valued)."""
        if self.failed or len(self.values) < max_epochs:
            return None
        return max((v for v in self.values if v is not None), default=None)


class CurveTable:
    def __init__(self, header: dict[str, Any], curves: list[Curve]):
        self.header, self.curves = header, curves
        self.max_epochs = int(header["max_epochs"])
        self.plateau: float | None = header.get("plateau")  # the majority-class value (search/scheduling/rungs.py)
        self.space_raw = header["space"]
        self.params = space.parse_space(self.space_raw)

    @classmethod
    def load(cls, path: str | Path) -> CurveTable:
        with gzip.open(path, "rt") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        header = next(r for r in rows if r.get("kind") == "header")
        curves = [
            Curve(
                r["id"],
                r["source"],
                r["params"],
                tuple(r["val_miou"]),
                tuple(r["seconds"]),
                r.get("failed"),
                r.get("failed_after_s") or 0.0,
            )
            for r in rows
            if r.get("kind") == "curve"
        ]
        return cls(header, sorted(curves, key=lambda c: c.id))

    @classmethod
    def from_study(cls, study: optuna.Study, space_raw: dict[str, Any], max_epochs: int) -> CurveTable:
        """A study's trials as a table, in trial order: each one's parameters, its value of each epoch it ran and
        its seconds. Replaying it over the same settings must make the decisions `run` made; a replay that goes on
        past the epoch where `run` stopped a trial finds no value there, and the trial ends FAIL."""
        curves = []
        for t in sorted(study.trials, key=lambda t: t.number):
            values = tuple(t.intermediate_values[e] for e in sorted(t.intermediate_values))
            seconds = tuple(t.user_attrs.get("epoch_seconds") or [1.0] * len(values))
            source = "hand" if t.user_attrs.get("starting_point") else "random"
            short = f"run stopped it after epoch {len(values)}" if len(values) < max_epochs else None
            curves.append(Curve(t.number, source, dict(t.params), values, seconds, short))
        return cls({"max_epochs": max_epochs, "space": space_raw, "plateau": study.user_attrs.get("plateau")}, curves)

    def finals(self) -> list[float]:
        return [f for c in self.curves if (f := c.final(self.max_epochs)) is not None]

    def hand_picks(self) -> list[Curve]:
        return [c for c in self.curves if c.source == "hand"]

    def distance(self, a: dict[str, Any], b: dict[str, Any]) -> float:
        total = 0.0
        for name in set(a) | set(b):
            if name not in a or name not in b:
                total += 1.0
                continue
            p = self.params.get(name)
            x, y = a[name], b[name]
            if p is None or p.kind in ("choice", "fixed", "value") or not isinstance(x, int | float):
                total += 0.0 if x == y else 1.0
            elif p.log:
                total += abs(math.log(x) - math.log(y)) / (math.log(p.high) - math.log(p.low))
            else:
                total += abs(x - y) / (p.high - p.low)
        return total

    def nearest(self, params: dict[str, Any]) -> Curve:
        return min(self.curves, key=lambda c: (self.distance(params, c.params), c.id))


@dataclass
class Strategy:
    """How to search: the spec's search settings (``None`` leaves the spec's own default)."""

    name: str
    sampler: str = "tpe"
    scheduler: str = "asha"
    grace_period: int | str = "auto"
    reduction_factor: float | str = "auto"
    min_first_rung: int | str = "auto"
    brackets: int | str = "auto"
    n_startup_trials: int | str = "auto"
    startup: str = "stratified"  # or "random"
    starting_points: bool = False
    budget_rule: str = "finish"  # or "exact" (search/store/budget.py)
    first_rung: str = "auto"  # plateau | grace (search/scheduling/rungs.py)
    promotion: bool | str = "auto"
    prior: str = "auto"  # race | first: how the hand picks run when they are the starting points
    near_incumbent: float | str = "auto"
    prior_judged_at: float | str = "auto"  # a raced list's milestone, as a share of max_epochs
    transfer_from: list[dict[str, Any]] | None = (
        None  # another study's winners, run first (search/scheduling/transfer.py)
    )

    def search_section(self, trials: int, max_epochs: int, seed: int, budget_epochs: int) -> dict[str, Any]:
        grace = min(self.grace_period, max_epochs) if isinstance(self.grace_period, int) else self.grace_period
        return {
            "sampler": self.sampler,
            "scheduler": self.scheduler,
            "trials": trials,
            "max_epochs": max_epochs,
            "grace_period": grace,
            "reduction_factor": self.reduction_factor,
            "min_first_rung": self.min_first_rung,
            "brackets": self.brackets,
            "n_startup_trials": self.n_startup_trials,
            "startup": self.startup,
            "seed": seed,
            "budget_epochs": budget_epochs,
            "budget_rule": self.budget_rule,
            "first_rung": self.first_rung,
            "promotion": self.promotion,
            "prior": self.prior,
            "near_incumbent": self.near_incumbent,
            "prior_judged_at": self.prior_judged_at,
        }


@dataclass
class ReplayResult:
    strategy: str
    seed: int
    study_name: str = ""
    incumbent: list[tuple[float, int, float]] = field(default_factory=list)  # (sim s, trial-epochs, best COMPLETE)
    states: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # simulated wall time of the whole search
    epochs: int = 0
    events: list[tuple[int, int, float | None, bool]] = field(default_factory=list)  # (trial, epoch, value, stop)

    def time_to(self, target: float) -> float | None:
        return next((t for t, _, best in self.incumbent if best >= target), None)

    def epochs_to(self, target: float) -> int | None:
        """The trial-epochs spent when a complete trial first reached ``target`` (None: never)."""
        return next((used for _, used, best in self.incumbent if best >= target), None)

    def best_at(self, epochs: int) -> float | None:
        """The best COMPLETE value once ``epochs`` trial-epochs were spent (what `export` could return)."""
        reached = [best for _, used, best in self.incumbent if used <= epochs]
        return reached[-1] if reached else None


@dataclass(order=True)
class _Event:
    time: float
    seq: int
    number: int = field(compare=False)


def replay_spec(table: CurveTable, strategy: Strategy, trials: int, seed: int, budget_epochs: int) -> StudySpec:
    raw = {
        "study": "replay",
        "dataset": {"name": "synthetic"},
        "space": table.space_raw,
        "search": strategy.search_section(trials, table.max_epochs, seed, budget_epochs),
    }
    return validate(raw, source="replay", check_root=False)


def replay(
    table: CurveTable,
    strategy: Strategy,
    seed: int,
    slots: int = 2,
    budget_epochs: int = 120,
    storage: optuna.storages.BaseStorage | str | None = None,
    trial_overhead_s: float = 0.0,
    trials: int | None = None,
) -> ReplayResult:
    """One simulated search: ``slots`` trials side by side until ``budget_epochs`` trial-epochs are spent (or
    ``trials`` trials were started)."""
    spec = replay_spec(table, strategy, trials=10_000, seed=seed, budget_epochs=budget_epochs)
    chosen = defaults.resolve(spec.search, slots)
    study = optuna.create_study(storage=storage, sampler=make_sampler(spec, chosen), direction="maximize")
    budget = Budget(
        budget_epochs,
        first_rung=chosen.grace_period if strategy.scheduler == "asha" else table.max_epochs,
        rule=spec.search.budget_rule,
        max_epochs=table.max_epochs,
    )
    rungs = Rungs.from_settings(table.max_epochs, chosen, table.plateau)
    searcher = OptunaStoreSearcher(
        "",
        study.study_name,
        f"replay-{seed}",
        spec,
        budget=budget,
        study=study,
        settings=chosen,
        rungs=rungs,
        trials=trials,  # as `run` tells it search.trials: new trials, then promotions while trials run
    )
    protected = searcher.protected
    points = [c.params for c in table.hand_picks()] if strategy.starting_points else []
    transferred = [(p, "another table") for p in strategy.transfer_from or []]
    queue_first_trials(study, spec, chosen, points, transferred)
    result = ReplayResult(strategy.name, seed, study.study_name)
    running: dict[int, tuple[Curve, list[float | None]]] = {}  # trial number -> (curve, values so far)
    paused: dict[int, tuple[Curve, list[float | None]]] = {}  # the same, of trials a rung paused
    events: list[_Event] = []
    clock, seq, best = 0.0, 0, -math.inf
    states = {s: 0 for s in ("COMPLETE", "PRUNED", "FAIL")}

    planned: dict[int, int] = {}
    ray_ids: dict[int, str] = {}  # trial number -> the id its last start was suggested under

    def start(now: float) -> bool:
        nonlocal seq
        ray_id = f"replay-{seq}"
        suggestion = searcher.suggest(ray_id)
        if not isinstance(suggestion, dict):
            return False
        number = suggestion[TRIAL_KEY]
        ray_ids[number] = ray_id
        if number in paused:  # promoted: it goes on from the epoch after its pause
            running[number] = paused.pop(number)
            curve, seen = running[number]
            heapq.heappush(events, _Event(now + trial_overhead_s + curve.seconds[len(seen)], seq, number))
            seq += 1
            return True
        # an exact budget's last trials run a shorter schedule: approximated by the full one's first epochs
        planned[number] = int(suggestion.get(EPOCHS_KEY, table.max_epochs))
        config = TrialConfig.from_dict({k: v for k, v in suggestion.items() if not k.startswith(HIDDEN_PREFIX)})
        curve = table.nearest(space.active_params(table.params, config))
        running[number] = (curve, [])
        first = curve.failed_after_s if curve.failed and not curve.seconds else curve.seconds[0]
        heapq.heappush(events, _Event(now + trial_overhead_s + first, seq, number))
        seq += 1
        return True

    while len(running) < slots and start(clock):
        pass
    while events:
        event = heapq.heappop(events)
        clock = event.time
        curve, seen = running[event.number]
        epoch = len(seen) + 1
        if curve.failed and epoch > len(curve.values):  # it diverged here: FAIL, as the recorder writes it
            study.tell(event.number, state=TrialState.FAIL)
            rungs.leave(event.number)
            states["FAIL"] += 1
            budget.end(event.number)
            del running[event.number]
            searcher.on_trial_complete(ray_ids[event.number])
        else:
            value = curve.values[epoch - 1]
            seen.append(value)
            budget.epoch(event.number)
            if value is not None:  # what the recorder writes: one value per epoch
                store.trial_handle(study, event.number).report(value, step=epoch)
            shielded, schedule = event.number in protected, planned[event.number]  # as RungScheduler asks
            stop = strategy.scheduler == "asha" and rungs.stop(event.number, epoch, value, shielded, schedule)
            result.events.append((event.number, epoch, value, stop))
            if stop and event.number in rungs.paused:  # stays in the study, RUNNING, until promoted or the end
                store.trial_handle(study, event.number).set_user_attr(store.PAUSED, True)  # as the recorder writes
                paused[event.number] = running.pop(event.number)
                budget.end(event.number)
                searcher.on_trial_complete(ray_ids[event.number])
            elif stop or epoch >= planned[event.number]:
                rungs.ended(event.number)
                top = max((v for v in seen if v is not None), default=None)
                state = outcome.tell(study, event.number, epoch, planned[event.number], top)
                states[state.name] += 1
                budget.end(event.number)
                del running[event.number]
                searcher.on_trial_complete(ray_ids[event.number])
                if state == TrialState.COMPLETE and top is not None and top > best:
                    best = top
                    result.incumbent.append((clock, budget.used, best))
            else:
                more = curve.seconds[epoch] if epoch < len(curve.seconds) else curve.failed_after_s
                heapq.heappush(events, _Event(clock + more, seq, event.number))
                seq += 1
        while len(running) < slots and start(clock):
            pass
    for number, (_, seen) in paused.items():  # the search is over: paused trials nobody promoted end PRUNED
        top = max((v for v in seen if v is not None), default=None)
        states[outcome.tell(study, number, len(seen), planned[number], top).name] += 1
    result.states, result.seconds, result.epochs = states, clock, budget.used
    return result
