"""When a trial stops: asynchronous successive halving (ASHA), as one pure object shared by `run` and the replay.

`run` drives it through :class:`RungScheduler` (a Ray Tune scheduler) and the searcher (promotions);
benchmarks/replay.py drives the same object over recorded learning curves. So the two make the same decisions by
construction (tests/test_replay.py checks it), and whatever the replay shows about a setting holds for `run`.

Milestones are ``grace_period * reduction_factor**k`` (as Ray's ASHA). A trial reaching a milestone is
stopped when its value is below the ``1 - 1/reduction_factor`` quantile of the values other trials
recorded there; with nothing recorded yet it goes on. Additions over Ray's:
- ``min_first_rung``: the first milestone passes no trial before it holds that many results (the
  trial's own included); with few slots the first trials are judged too instead of running unopposed
  to the end. A trial stopped this way still leaves its value as a reference for the next ones.
- ``protected`` trials (the spec's one starting point) are never stopped, and their values set the bar.
- ``prior`` trials (a person's list of starting points, ``search.prior: race``) are protected up to the milestone
  nearest a third of ``max_epochs`` and judged like any trial from there: a person's picks differ by less than
  an epoch's noise early on (a pretrained encoder starts lower and overtakes by epoch 3-5 in both recorded tables),
  so the list races once its members' values mean something. There the list is judged together: with promotion a
  member waits (paused) until every member has a value at that rung, so none passes alone on one slot; a member
  that fails leaves the list (:meth:`leave`).
- ``plateau``: the value of predicting the majority class everywhere (its share of the pixels over the number of
  classes: 0.31 for classes of 93%, 6% and 1%). A trial whose value has not yet left it (by ``PLATEAU_MARGIN``) is
  not judged at that milestone, since curves on the plateau differ by noise; it is judged at the first milestone
  where it has, and at the latest at the milestone nearest a third of ``max_epochs``.
- ``promote``: a stop is a pause. A paused trial keeps its value at its rung, and when later results show it ranks
  in the top ``1/reduction_factor`` there (ASHA's promotion), :meth:`Rungs.promote` hands it back to run on from its
  state. Paused trials that nobody promotes end the search PRUNED; on a driver short of disk the least promising
  end sooner (:meth:`Rungs.end_least_promising`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

PLATEAU_MARGIN = 0.02  # mIoU above the majority-class plateau before a trial's value means more than noise


@dataclass
class Rungs:
    max_epochs: int
    grace_period: int
    reduction_factor: float
    min_first_rung: int = 1  # 1: Ray's ASHA (a trial alone at a rung goes on)
    brackets: int = 1
    plateau: float | None = None  # the majority-class value; None: every milestone judges
    promote: bool = False  # a stop is a pause, which later results may undo
    prior: set[Any] = field(default_factory=set)  # a person's list: judged from a third of the way (above)
    _recorded: list[list[dict[Any, float]]] = field(default_factory=list, repr=False)  # bracket -> rung -> key -> value
    _bracket_of: dict[Any, int] = field(default_factory=dict, repr=False)
    _order: list[int] = field(default_factory=list, repr=False)
    judged: dict[Any, tuple[int, str]] = field(default_factory=dict, repr=False)  # key -> (epoch, why): first judgement
    paused: dict[Any, tuple[int, int, int]] = field(default_factory=dict, repr=False)  # key -> (bracket, rung, epoch)

    def __post_init__(self) -> None:
        self._recorded = [[{} for _ in self.milestones(s)] for s in range(self.brackets)]
        sizes = [len(self.milestones(s)) for s in range(self.brackets)]
        # brackets take trials in proportion to their rungs (as Ray's ASHA), in a fixed order
        self._order = [s for k in range(max(sizes)) for s in range(self.brackets) if k < sizes[s]] or [0]

    @classmethod
    def from_settings(cls, max_epochs: int, settings: Any, plateau: float | None, promote: bool = True) -> Rungs:
        """The rung policy of resolved search settings (search/scheduling/defaults.py), as `run` and the replay build
        it: ``plateau`` is the data's majority-class value (used when the settings judge from the plateau);
        ``promote`` False where a trial cannot go on from a state."""
        return cls(
            max_epochs,
            settings.grace_period,
            settings.reduction_factor,
            min_first_rung=settings.min_first_rung,
            brackets=settings.brackets,
            plateau=plateau if settings.plateau else None,
            promote=settings.promote and promote,
        )

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

    def third(self, bracket: int = 0) -> int:
        """The milestone nearest a third of ``max_epochs``: where every trial is judged, on the plateau or of the
        prior (``max_epochs`` when there is no milestone)."""
        return min(self.milestones(bracket), key=lambda m: (abs(m - self.max_epochs / 3), m), default=self.max_epochs)

    def _on_plateau(self, epoch: int, value: float, bracket: int = 0) -> bool:
        """Not judged here: still on the majority-class plateau, before the milestone nearest a third of the epochs
        (where every trial is judged, whether its curve has begun or not)."""
        if self.plateau is None or value > self.plateau + PLATEAU_MARGIN:
            return False
        return epoch < self.third(bracket)

    def stop(self, key: Any, epoch: int, value: float | None, protected: bool = False) -> bool:
        """A trial reports ``value`` after ``epoch``: True when it must stop here (a pause, with ``promote``)."""
        b = self.bracket(key)
        value = -1.0 if value is None or math.isnan(value) else value  # below any metric (they lie in [0, 1])
        protected = protected or (key in self.prior and epoch < self.third(b))
        for rung, (milestone, recorded) in enumerate(zip(self.milestones(b), self._recorded[b], strict=True)):
            if epoch != milestone or key in recorded:
                continue
            if not protected and epoch < self.max_epochs and self._on_plateau(epoch, value, b):
                return False  # curves on the plateau differ by noise: judged at a later milestone
            others = [v for k, v in recorded.items() if k != key]
            recorded[key] = value
            if key not in self.judged:
                self.judged[key] = (epoch, self._why(rung, epoch, value))
            if protected or epoch >= self.max_epochs:
                return False
            if key in self.prior and self.promote and epoch == self.third(b) and self._list_unjudged(b, recorded):
                return self._halt(key, b, rung, epoch)  # the list is judged together: it waits for the rest here
            if rung == 0 and len(others) + 1 < self.min_first_rung:
                return self._halt(key, b, rung, epoch)  # too few results to judge: costs grace epochs, not a trial
            if not others:
                return False
            cutoff = float(np.nanpercentile(others, (1 - 1 / self.reduction_factor) * 100))
            return self._halt(key, b, rung, epoch) if value < cutoff else False
        return False

    def _list_unjudged(self, bracket: int, recorded: dict[Any, float]) -> bool:
        """Members of the prior (in ``bracket``) with no value yet at the rung ``recorded`` holds (the one a third of
        the way, where the list is first judged): with one slot the first member there would otherwise pass alone."""
        return any(self.bracket(k) == bracket and k not in recorded for k in self.prior)

    def _why(self, rung: int, epoch: int, value: float) -> str:
        if self.plateau is None:
            return f"rung {rung + 1} at epoch {epoch}"
        if value > self.plateau + PLATEAU_MARGIN:
            return f"rung {rung + 1} at epoch {epoch}: {value:.3f} has left the plateau {self.plateau:.3f}"
        return f"rung {rung + 1} at epoch {epoch}: still on the plateau {self.plateau:.3f} about a third of the way"

    def _halt(self, key: Any, bracket: int, rung: int, epoch: int) -> bool:
        if self.promote:
            self.paused[key] = (bracket, rung, epoch)
        return True

    def record(self, key: Any, values: dict[int, float], paused: bool = False, protected: bool = False) -> None:
        """What an earlier trial of the study recorded (from the store): its values at the milestones it reached
        (as :meth:`stop` would have recorded them), and, for a trial still paused, the rung it waits at.
        ``--resume`` and a second run of a study judge with them."""
        b = self.bracket(key)
        reached = None
        for rung, (milestone, recorded) in enumerate(zip(self.milestones(b), self._recorded[b], strict=True)):
            value = values.get(milestone)
            shielded = protected or (key in self.prior and milestone < self.third(b))
            if value is None or (
                not shielded and milestone < self.max_epochs and self._on_plateau(milestone, value, b)
            ):
                continue
            recorded[key] = value
            reached = (rung, milestone)
        if paused and reached is not None and self.promote:
            self.paused[key] = (b, *reached)

    def promote_one(self, exclude: set[Any] | None = None) -> tuple[Any, int] | None:
        """A paused trial that later results put in the top 1/rf of its rung (highest rung first), and the epoch it
        was paused at; it is no longer paused. None when there is none."""
        best: tuple[int, float, Any] | None = None
        for key, (b, rung, _) in self.paused.items():
            if exclude and key in exclude:
                continue
            recorded = self._recorded[b][rung]
            others = [v for k, v in recorded.items() if k != key]
            if len(others) + 1 < (self.min_first_rung if rung == 0 else 2):
                continue
            if key in self.prior and self.milestones(b)[rung] == self.third(b) and self._list_unjudged(b, recorded):
                continue  # the list is judged together (stop)
            cutoff = float(np.nanpercentile(others, (1 - 1 / self.reduction_factor) * 100))
            if recorded[key] >= cutoff and (best is None or (rung, recorded[key]) > best[:2]):
                best = (rung, recorded[key], key)
        if best is None:
            return None
        _, _, key = best
        epoch = self.paused.pop(key)[2]
        return key, epoch

    def leave(self, key: Any) -> None:
        """Trial ``key`` ended without a value at every rung (it failed): the prior's members no longer wait for it."""
        self.prior.discard(key)

    def end_least_promising(self) -> Any | None:
        """The paused trial least likely to be promoted, no longer paused (the lowest rung, there the lowest value:
        promotion goes to the top of a rung); None when none is paused. For a driver short of disk, whose paused
        trials' states must go (search.keep_free_gb)."""
        if not self.paused:
            return None
        key = min(
            self.paused, key=lambda k: (self.paused[k][1], self._recorded[self.paused[k][0]][self.paused[k][1]][k])
        )
        del self.paused[key]
        return key


class RungScheduler(FIFOScheduler):
    """Ray Tune's side of :class:`Rungs`: Tune asks after every result whether the trial goes on."""

    def __init__(self, rungs: Rungs, metric: str, protected: set[int] | None = None, trial_key: str = ""):
        super().__init__()
        self.rungs, self.value_key = rungs, metric
        self.protected = protected if protected is not None else set()
        self.trial_key = trial_key

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if "failed" in result:  # the trial's own error, reported as its last result: it ends here
            return TrialScheduler.STOP
        number = trial.config.get(self.trial_key)  # the Optuna trial: a promoted one keeps its rungs
        stop = self.rungs.stop(number, int(result["epoch"]), result.get(self.value_key), number in self.protected)
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE
