"""When a trial stops: asynchronous successive halving (ASHA), as one pure object shared by `run` and the replay.

`run` drives it through :class:`RungScheduler` (a Ray Tune scheduler); benchmarks/replay.py drives the
same object over recorded learning curves. So the two make the same stop decisions by construction
(tests/test_replay.py checks it), and whatever the replay shows about a setting holds for `run`.

Milestones are ``grace_period * reduction_factor**k`` (as Ray's ASHA). A trial reaching a milestone is
stopped when its value is below the ``1 - 1/reduction_factor`` quantile of the values other trials
recorded there; with nothing recorded yet it goes on. Two additions over Ray's:
- ``min_first_rung``: the first milestone passes no trial before it holds that many results (the
  trial's own included); with few slots the first trials are judged too instead of running unopposed
  to the end. A trial stopped this way still leaves its value as a reference for the next ones.
- ``protected`` trials (the spec's starting points) are never stopped, and their values set the bar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler


@dataclass
class Rungs:
    max_epochs: int
    grace_period: int
    reduction_factor: float
    min_first_rung: int = 1  # 1: Ray's ASHA (a trial alone at a rung goes on)
    brackets: int = 1
    _recorded: list[list[dict[Any, float]]] = field(default_factory=list, repr=False)  # bracket -> rung -> key -> value
    _bracket_of: dict[Any, int] = field(default_factory=dict, repr=False)
    _order: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._recorded = [[{} for _ in self.milestones(s)] for s in range(self.brackets)]
        sizes = [len(self.milestones(s)) for s in range(self.brackets)]
        # brackets take trials in proportion to their rungs (as Ray's ASHA), in a fixed order
        self._order = [s for k in range(max(sizes)) for s in range(self.brackets) if k < sizes[s]] or [0]

    def milestones(self, bracket: int = 0) -> list[int]:
        """Epochs at which a trial of ``bracket`` is judged (bracket s starts at grace * rf**s)."""
        out, k = [], 0
        while True:
            epoch = self.grace_period * self.reduction_factor ** (k + bracket)
            if epoch > self.max_epochs + 1e-9:
                return out
            out.append(int(math.ceil(epoch - 1e-9)))
            k += 1

    def bracket(self, key: Any) -> int:
        if key not in self._bracket_of:
            self._bracket_of[key] = self._order[len(self._bracket_of) % len(self._order)]
        return self._bracket_of[key]

    def stop(self, key: Any, epoch: int, value: float | None, protected: bool = False) -> bool:
        """A trial reports ``value`` after ``epoch``: True when it must stop here."""
        b = self.bracket(key)
        for rung, (milestone, recorded) in enumerate(zip(self.milestones(b), self._recorded[b], strict=True)):
            if epoch != milestone or key in recorded:
                continue
            others = [v for k, v in recorded.items() if k != key]
            value = -1.0 if value is None or math.isnan(value) else value  # below any metric (they lie in [0, 1])
            recorded[key] = value
            if protected or epoch >= self.max_epochs:
                return False
            if rung == 0 and len(others) + 1 < self.min_first_rung:
                return True  # too few results to judge: stopping now costs grace epochs, not a whole trial
            if not others:
                return False
            cutoff = float(np.nanpercentile(others, (1 - 1 / self.reduction_factor) * 100))
            return value < cutoff
        return False


class RungScheduler(FIFOScheduler):
    """Ray Tune's side of :class:`Rungs`: Tune asks after every result whether the trial goes on."""

    def __init__(self, rungs: Rungs, metric: str, protected: set[int] | None = None, trial_key: str = ""):
        super().__init__()
        self.rungs, self.value_key = rungs, metric
        self.protected = protected if protected is not None else set()
        self.trial_key = trial_key

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        number = trial.config.get(self.trial_key)
        stop = self.rungs.stop(
            trial.trial_id, int(result["epoch"]), result.get(self.value_key), protected=number in self.protected
        )
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE
