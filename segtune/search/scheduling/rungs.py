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
- ``prior`` trials (a person's list of starting points, ``search.prior: race``) are protected up to the list's own
  milestone, ``prior_at`` of ``max_epochs`` (two thirds by default: search/scheduling/defaults.py says why), and
  judged there among themselves by their best value so far (what a member's model is: a trial keeps its best
  epoch): the top ``ceil(K / reduction_factor)`` go on, the others pause. A person's picks
  differ by about 0.01 mIoU, and a member may start slowest and end first (CamVid's Dice + Focal), so the list is
  judged once its order means something, not at a rung. Before it its members still record their values at the
  rungs (the bar the other trials meet there); after it they are judged at the later rungs like any trial. With
  promotion a member that gets there first waits (paused) until every member has a value, so none passes alone on
  one slot; a member that fails leaves the list (:meth:`leave`), and a paused member then ranks in its place.
  :meth:`owed` is what the waiting members will train when they go on, which an exact budget keeps for them.
- ``plateau``: the value of predicting the majority class everywhere (its share of the pixels over the number of
  classes: 0.31 for classes of 93%, 6% and 1%). A trial whose value has not yet left it (by ``PLATEAU_MARGIN``) is
  not judged at that milestone, since curves on the plateau differ by noise; it is judged at the first milestone
  where it has, and at the latest at the milestone nearest a third of ``max_epochs``.
- ``promote``: a stop is a pause. A paused trial keeps its value at its rung, and when later results show it ranks
  in the top ``1/reduction_factor`` there (ASHA's promotion), :meth:`Rungs.promote` hands it back to run on from its
  state. Paused trials that nobody promotes end the search PRUNED; on a driver short of disk the least promising
  end sooner (:meth:`Rungs.end_least_promising`). At the end of an exact budget, where a new trial could only run a
  schedule cut short, the most promising paused trial whose rest fits is finished instead (:meth:`finish_one`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from segtune.search.ray_trials import EPOCHS_KEY
from segtune.search.scheduling.defaults import PRIOR_JUDGED_AT

PLATEAU_MARGIN = 0.02  # mIoU above the majority-class plateau before a trial's value means more than noise
LIST = -1  # the "rung" a raced list's member pauses at: the list's own milestone (paused: (bracket, LIST, epoch))


@dataclass
class Rungs:
    max_epochs: int
    grace_period: int
    reduction_factor: float
    min_first_rung: int = 1  # 1: Ray's ASHA (a trial alone at a rung goes on)
    brackets: int = 1
    plateau: float | None = None  # the majority-class value; None: every milestone judges
    promote: bool = False  # a stop is a pause, which later results may undo
    prior: set[Any] = field(default_factory=set)  # a person's list: judged together at its own milestone (above)
    prior_at: float = PRIOR_JUDGED_AT  # that milestone, as a share of max_epochs
    _recorded: list[list[dict[Any, float]]] = field(default_factory=list, repr=False)  # bracket -> rung -> key -> value
    _bracket_of: dict[Any, int] = field(default_factory=dict, repr=False)
    _order: list[int] = field(default_factory=list, repr=False)
    _listed: dict[Any, float] = field(default_factory=dict, repr=False)  # member -> best value at the milestone
    _best: dict[Any, float] = field(default_factory=dict, repr=False)  # list member -> its best value so far
    _left: set[Any] = field(default_factory=set, repr=False)  # members that left the list (failed, ended short)
    _finishing: set[Any] = field(default_factory=set, repr=False)  # paused trials the budget's end finishes
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
            prior_at=settings.prior_judged_at,
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
        """The milestone nearest a third of ``max_epochs``: where every trial is judged, whether on the plateau or
        not (``max_epochs`` when there is no milestone)."""
        return min(self.milestones(bracket), key=lambda m: (abs(m - self.max_epochs / 3), m), default=self.max_epochs)

    def list_milestone(self) -> int:
        """The epoch where a raced list is judged together: ``prior_at`` of ``max_epochs``, rounded up (14 of 20)."""
        return min(self.max_epochs, max(1, math.ceil(self.prior_at * self.max_epochs - 1e-9)))

    def _on_plateau(self, epoch: int, value: float, bracket: int = 0) -> bool:
        """Not judged here: still on the majority-class plateau, before the milestone nearest a third of the epochs
        (where every trial is judged, whether its curve has begun or not)."""
        if self.plateau is None or value > self.plateau + PLATEAU_MARGIN:
            return False
        return epoch < self.third(bracket)

    def stop(
        self, key: Any, epoch: int, value: float | None, protected: bool = False, planned: int | None = None
    ) -> bool:
        """A trial reports ``value`` after ``epoch``: True when it must stop here (a pause, with ``promote``).
        ``planned``: the epochs its schedule has (an exact or time budget's end cut it short); its last epoch is
        recorded at the rung but never a pause (a paused trial there has nothing left to train)."""
        b = self.bracket(key)
        value = -1.0 if value is None or math.isnan(value) else value  # below any metric (they lie in [0, 1])
        protected = protected or key in self._finishing  # the budget's end finishes it: nothing judges it again
        protected = protected or (planned is not None and epoch >= planned)
        if key in self.prior and not protected and epoch <= self.list_milestone():
            self._set_the_bar(key, b, epoch, value)
            self._best[key] = max(value, self._best.get(key, value))
            return epoch == self.list_milestone() and self._judge_list(key, b, epoch, self._best[key])
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
            if rung == 0 and len(others) + 1 < self.min_first_rung:
                return self._halt(key, b, rung, epoch)  # too few results to judge: costs grace epochs, not a trial
            if not others:
                return False
            cutoff = float(np.nanpercentile(others, (1 - 1 / self.reduction_factor) * 100))
            return self._halt(key, b, rung, epoch) if value < cutoff else False
        return False

    def _set_the_bar(self, key: Any, bracket: int, epoch: int, value: float) -> None:
        """A list member before (or at) its own milestone: its value at a rung is recorded there (the bar other trials
        meet) and it is not stopped."""
        for milestone, recorded in zip(self.milestones(bracket), self._recorded[bracket], strict=True):
            if epoch == milestone and key not in recorded:
                recorded[key] = value

    def _judge_list(self, key: Any, bracket: int, epoch: int, value: float) -> bool:
        """A member at the list's milestone, ``value`` its best so far: True when it pauses there (waiting for the
        rest of the list, with promotion, or below the list's top ``ceil(K / rf)``)."""
        self._listed[key] = value
        self.judged.setdefault(key, (epoch, f"the list at epoch {epoch}"))
        if epoch >= self.max_epochs:
            return False
        if self.promote and self._list_waits():
            return self._halt(key, bracket, LIST, epoch)  # judged together: it waits for the rest of the list here
        return key not in self._list_goes_on() and self._halt(key, bracket, LIST, epoch)

    def _list_waits(self) -> bool:
        """Members of the list with no value yet at its milestone: with one slot the first there would otherwise pass
        alone."""
        return any(k not in self._listed for k in self.prior)

    def _list_goes_on(self) -> set[Any]:
        """The list's members that go on from its milestone: the top ``ceil(K / rf)`` of those with a value there (a
        member that failed has left the list, and the next ranks in its place)."""
        members = sorted((k for k in self._listed if k in self.prior), key=lambda k: -self._listed[k])
        return set(members[: self._list_keeps()])

    def _list_keeps(self) -> int:
        """How many of the list go on: ceil(K / rf) of the list as it was given (one that left does not shrink it)."""
        return math.ceil(len(self.prior | self._left) / self.reduction_factor)

    def owed(self) -> int:
        """Epochs the list's paused members will train when they go on (``max_epochs`` less the milestone, for as many
        of them as may go on): an exact budget keeps them, or what the list frees while a member is still on its way
        to the milestone would be spent elsewhere and the best member could not finish."""
        waiting = [k for k, (_, rung, _) in self.paused.items() if rung == LIST and k in self.prior]
        if not waiting:
            return 0
        may = len(waiting) if self._list_waits() else len(set(waiting) & self._list_goes_on())
        may = min(may, self._list_keeps())
        return may * (self.max_epochs - self.list_milestone())

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
        listed = key in self.prior and not protected
        seen = [v for e, v in values.items() if e <= self.list_milestone() and v is not None and not math.isnan(v)]
        if listed and seen:  # a member that goes on from a saved state is judged on its epochs before it too
            self._best[key] = max(seen)
        if listed and self.list_milestone() in values:
            self._listed[key] = max(seen, default=-1.0)
            reached = (LIST, self.list_milestone())
        for rung, (milestone, recorded) in enumerate(zip(self.milestones(b), self._recorded[b], strict=True)):
            value = values.get(milestone)
            shielded = protected or (listed and milestone <= self.list_milestone())
            if value is None or (
                not shielded and milestone < self.max_epochs and self._on_plateau(milestone, value, b)
            ):
                continue
            recorded[key] = value
            if not (listed and milestone <= self.list_milestone()):
                reached = (rung, milestone)
        if paused and reached is not None and self.promote:
            self.paused[key] = (b, *reached)

    def promote_one(self, exclude: set[Any] | None = None) -> tuple[Any, int] | None:
        """A paused trial that later results put in the top 1/rf of its rung (highest rung first), and the epoch it
        was paused at; it is no longer paused. None when there is none."""
        listed = self._list_member_to_go_on(exclude or set())
        if listed is not None:  # a person's pick the list's judgement lets go on comes first
            return listed, self.paused.pop(listed)[2]
        best: tuple[int, float, Any] | None = None
        for key, (b, rung, _) in self.paused.items():
            if exclude and key in exclude:
                continue
            if rung == LIST:
                continue  # the list's own judgement: _list_member_to_go_on
            recorded = self._recorded[b][rung]
            others = [v for k, v in recorded.items() if k != key]
            if len(others) + 1 < (self.min_first_rung if rung == 0 else 2):
                continue
            cutoff = float(np.nanpercentile(others, (1 - 1 / self.reduction_factor) * 100))
            if recorded[key] >= cutoff and (best is None or (rung, recorded[key]) > best[:2]):
                best = (rung, recorded[key], key)
        if best is None:
            return None
        _, _, key = best
        epoch = self.paused.pop(key)[2]
        return key, epoch

    def finish_one(
        self, rest: Callable[[Any, int], int], left: int, judgement_near: Callable[[], bool] = lambda: True
    ) -> tuple[Any, int] | None:
        """The most promising paused trial (the highest rung, there the best value) whose rest of its schedule,
        ``rest(key, epoch)`` epochs, fits in ``left``; it is no longer paused. For the end of an exact budget, where a
        new trial could only run a schedule cut short: finishing a paused trial gives a whole model instead (an
        ensemble's candidate, a list member's full curve). A list member waiting for the list's judgement is not
        taken (the list is judged together), nor, while one waits whose rest fits and ``judgement_near()`` (asked
        only then; the searcher's view: a running trial will bring the judgement, no queued trial goes first), a
        trial paused at a lower rung than the members rank: what the judgement lets go on or leaves paused outranks
        it (Kvasir-SEG K = 10, seed 3: two new trials paused after epoch 1 were chosen to finish while the list
        waited, one of them for 19 epochs, which ended at 0.53 val mIoU; four of the five members left paused at 14
        stood at 0.60-0.62 there). None when none fits."""
        waiting = self._list_waits()
        fitting = self._fitting(rest, left)
        fits = [k for k, rung in fitting if not (rung == LIST and waiting)]
        if not fits:
            return None
        key = max(fits, key=self._paused_at)
        held = [self._paused_at(k)[0] for k, rung in fitting if rung == LIST and waiting]
        if held and self._paused_at(key)[0] < min(held) and judgement_near():
            return None  # the searcher waits for the judgement (Rungs.list_may_finish)
        self.finish(key)
        return key, self.paused.pop(key)[2]

    def finish(self, key: Any) -> None:
        """Trial ``key`` runs to the end of its schedule: no rung and no list judges it again (a trial resumed from
        an earlier epoch's state reports the list's milestone again; a --resume re-run of a trial the budget's end
        was finishing is a new key)."""
        self._finishing.add(key)

    def list_may_finish(self, rest: Callable[[Any, int], int], left: int) -> bool:
        """A list member waits for the list's judgement and could be finished with ``left`` epochs once it is judged:
        a slot had better wait for the judgement than spend them on a new trial's schedule cut short."""
        return self._list_waits() and any(rung == LIST for _, rung in self._fitting(rest, left))

    def _fitting(self, rest: Callable[[Any, int], int], left: int) -> list[tuple[Any, int]]:
        """(key, rung) of the paused trials whose rest of their schedule fits in ``left`` (0 does not: a trial a rung
        paused at the last epoch of a schedule the budget cut short has nothing left to train)."""
        return [(k, rung) for k, (_, rung, e) in self.paused.items() if 0 < rest(k, e) <= left]

    def _list_member_to_go_on(self, exclude: set[Any]) -> Any | None:
        """The best paused list member among those the list's judgement lets go on (None while it still waits)."""
        if self._list_waits():
            return None
        goes_on = self._list_goes_on()
        ready = [k for k, (_, rung, _) in self.paused.items() if rung == LIST and k in goes_on and k not in exclude]
        return max(ready, key=lambda k: self._listed[k], default=None)

    def ended(self, key: Any) -> None:
        """Trial ``key`` ended, not paused: a list member that never reached the list's milestone (a schedule the
        budget cut short) no longer holds the list up."""
        if key in self.prior and key not in self._listed:
            self.leave(key)

    def leave(self, key: Any) -> None:
        """Trial ``key`` ended without a value at every rung (it failed): the prior's members no longer wait for it,
        and if it was one the list let go on, the next paused member ranks in its place."""
        if key in self.prior:
            self.prior.discard(key)
            self._left.add(key)

    def end_least_promising(self) -> Any | None:
        """The paused trial least likely to be promoted, no longer paused (the lowest rung, there the lowest value:
        promotion goes to the top of a rung); None when none is paused. For a driver short of disk, whose paused
        trials' states must go (search.keep_free_gb)."""
        if not self.paused:
            return None
        key = min(self.paused, key=self._paused_at)
        del self.paused[key]
        self.leave(key)  # a list member waiting at the list's milestone: the list no longer counts on it
        return key

    def _paused_at(self, key: Any) -> tuple[int, float]:
        """(rung, value there) of a paused trial; a list member paused at the list's milestone ranks by where that
        milestone falls among the rungs."""
        b, rung, epoch = self.paused[key]
        if rung == LIST:
            return sum(m <= epoch for m in self.milestones(b)) - 1, self._listed[key]
        return rung, self._recorded[b][rung][key]


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
        epoch = int(result["epoch"])
        planned = int(trial.config.get(EPOCHS_KEY) or self.rungs.max_epochs)
        stop = self.rungs.stop(number, epoch, result.get(self.value_key), number in self.protected, planned)
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE
