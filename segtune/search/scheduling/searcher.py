"""The Ray Tune searcher: each configuration is asked from the Optuna study in the store."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from segtune import space
from segtune.errors import SpecError
from segtune.search import store
from segtune.search.ray_trials import EPOCHS_KEY, FINISHING_KEY, PROMOTED_KEY, RESUME_KEY, SEED_KEY, TRIAL_KEY
from segtune.search.scheduling import defaults
from segtune.search.scheduling.defaults import SearchSettings
from segtune.search.scheduling.rungs import Rungs
from segtune.search.store.budget import Budget, Clock
from segtune.search.store.resume import ADOPTED, FINISHING
from segtune.spec import StudySpec
from segtune.training import models

MAX_DRAWS = 50
STARTING_POINT = "starting_point"  # user attr of a trial enqueued from search.starting_points (the prior)
DRAWN = "drawn"  # user attr: where the model's trial came from ("near trial N", or absent: the sampler)


def make_sampler(spec: StudySpec, settings: SearchSettings) -> optuna.samplers.BaseSampler:
    seed = spec.search.seed
    if spec.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials running side by side get different suggestions; group: conditional params. Paused
    # trials are left out of what TPE sees until they end (store.PausedAwareSampler): not running, not yet finished.
    return store.PausedAwareSampler(
        optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=settings.n_startup_trials, multivariate=True, group=True, constant_liar=True
        )
    )


def queue_first_trials(
    study: optuna.Study,
    spec: StudySpec,
    settings: SearchSettings,
    points: list[dict[str, Any]],
    transferred: list[tuple[dict[str, Any], str]] | None = None,
) -> None:
    """What a study runs before the sampler decides: the starting points (``points``, as Optuna params;
    never stopped by a rung), each once per study; earlier studies' winners (``transferred``: params and where
    they come from; judged at the rungs like any trial); then -- for ``search.startup: stratified`` on a new
    study -- a space-filling start-up design in place of TPE's random start-up draws."""
    new = not study.trials
    # no more than the run's trials: a queued trial nobody asks for would wait in the store forever
    points = points[: spec.search.trials]
    transferred = (transferred or [])[: spec.search.trials - len(points)]
    for fixed in points:
        study.enqueue_trial(fixed, user_attrs={STARTING_POINT: True}, skip_if_exists=True)
    for fixed, source in transferred:
        study.enqueue_trial(fixed, user_attrs={"transferred_from": source}, skip_if_exists=True)
    # a raced prior is a start-up of its own (the model learns from its members' values), so the design only tops it up
    raced = len(points) if settings.prior == "race" else 0
    size = min(settings.n_startup_trials - raced, spec.search.trials - len(points) - len(transferred))
    if new and settings.startup == "stratified" and spec.search.sampler == "tpe" and size > 0:
        params = space.parse_space(spec.space)
        for fixed in space.stratified_design(params, size, seed=spec.search.seed or 0):
            study.enqueue_trial(fixed)


SEED_STRIDE = 100_003  # search.seed s trains trial n with seed (s * SEED_STRIDE mod 2**31) + n (s = 0: n alone)


def seed_offset(search_seed: int | None) -> int:
    """search.seed's share of every trial's training seed (any seed, negative or large, to one torch takes), to which
    the searcher adds the trial's number. search.seed moves every trial's training too (weights, batches,
    augmentation), not only the sampler's draws: two searches of one spec with other seeds train even their
    starting points differently."""
    return SEED_STRIDE * (search_seed or 0) % 2**31


class OptunaStoreSearcher(Searcher):
    """Ray Tune searcher that draws each configuration from an Optuna study in the store (ask).

    The replay benchmark drives the same object over recorded curves (``study`` given, no Ray):
    both ask, sample the space, skip impossible pairings and respect the budget the same way.
    """

    def __init__(
        self,
        storage_url: str,
        study_name: str,
        run_id: str,
        spec: StudySpec,
        on_outage: Callable[[store.StoreUnavailable], None] | None = None,
        budget: Budget | None = None,
        study: optuna.Study | None = None,
        settings: SearchSettings | None = None,
        before_ask: Callable[[], None] | None = None,
        rungs: Rungs | None = None,
        trials: int | None = None,
        clock: Clock | None = None,
    ):
        super().__init__(metric=spec.search.metric, mode="max")
        self.clock = clock  # search.time_budget: no trial starts that cannot reach its first rung in the time left
        self.rungs = rungs  # paused trials that later results promote run on first (search/scheduling/rungs.py)
        self.new_left = trials  # new trials this run may still ask Optuna for (None: Tune counts them)
        self.live: set[str] = set()  # Ray trials handed out and not ended
        self.before_ask = before_ask  # run: lands the recorder's queued writes (the sampler sees every tell)
        self._storage_url, self._study_name, self._run_id = storage_url, study_name, run_id
        self.on_outage = on_outage
        self.budget = budget or Budget()
        if rungs is not None:  # an exact budget holds what a raced list's paused members will train when they go on
            self.budget.held = rungs.owed
        self._space_raw = spec.space
        self.settings = settings or defaults.resolve(spec.search)
        self._sampler = make_sampler(spec, self.settings)
        self._rng = np.random.default_rng(spec.search.seed)  # which trials go near the incumbent, and how near
        self._seed_offset = seed_offset(spec.search.seed)  # search.seed's share of each trial's training seed
        self._prior_known = False
        self._study: optuna.Study | None = study
        self.protected: set[int] = set()  # trial numbers of starting points: the rung policy never stops them

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = store.load_study(store.open_storage(self._storage_url), self._study_name, self._sampler)
        return self._study

    def __getstate__(self) -> dict[str, Any]:
        return store.pickle_state(self)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        try:
            return self._suggest(trial_id)
        except store.StoreUnavailable as e:  # no configuration now; the search stops cleanly
            if self.on_outage is None:
                raise
            self.on_outage(e)
            return None

    def _suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.budget.spent and not self.budget.holding:  # search.budget_epochs: no new trial; running ones finish
            # or stop at a rung; an exact budget may get epochs back from a trial a rung stops early: ask again then
            return None if self.budget.exact and self.budget.reserved else Searcher.FINISHED
        if self.clock is not None and self.clock.grant(self.budget.max_epochs) < self.budget.first_rung:
            return Searcher.FINISHED  # search.time_budget: what is left would not reach a first rung
        if self.before_ask is not None:
            self.before_ask()
        self._know_the_prior()
        promoted = self._promoted(trial_id)
        if promoted is not None:
            return promoted
        if self._list_may_finish():
            return None  # the epochs left would finish a list member once the list is judged: ask again then
        if self.budget.spent:  # what is left is held for a raced list's members, which wait for its judgement
            # a running trial may still bring the list to it; with nothing running the list can never be judged
            return None if self.live else Searcher.FINISHED
        if self.new_left is not None and self.new_left <= 0:
            # no new trial left to ask: a running trial's results may still promote a paused one
            waiting = self.rungs is not None and self.rungs.paused and self.live
            return None if waiting else Searcher.FINISHED
        params = space.parse_space(self._space_raw)
        self._near_incumbent(params)
        for _ in range(MAX_DRAWS):
            trial = self.study.ask()  # a trial queued by --resume comes first, with its parameters
            trial.set_user_attr("run_id", self._run_id)
            trial.set_user_attr("driver_host", socket.gethostname())  # for --resume: is its driver alive?
            trial.set_user_attr("driver_pid", os.getpid())
            config = space.sample(trial, params)
            problem = (
                models.pairing_problem(config.arch, config.encoder) if config.arch in models.ARCHITECTURES else None
            )
            if problem is None:
                if trial.user_attrs.get(STARTING_POINT) and self.settings.protects_starting_points:
                    self.protected.add(trial.number)  # run to the end first (a raced list: _know_the_prior)
                if self.new_left is not None:
                    self.new_left -= 1
                self.live.add(trial_id)
                trial.set_user_attr("ray_trial_id", trial_id)
                trial.set_user_attr("config", config.to_dict())  # the full config, defaults and fixed values included
                resume_from = trial.user_attrs.get("resume_from")
                granted = self._rerun_schedule(trial, resume_from) if resume_from else self._schedule(trial)
                seed = self._training_seed(trial)
                trial.set_user_attr("seed", seed)  # export writes it: a retrain of the trial trains as it did
                hidden: dict[str, Any] = {TRIAL_KEY: trial.number, SEED_KEY: seed}
                if granted < self.budget.max_epochs:  # the end of an exact budget, or of the time budget
                    hidden[EPOCHS_KEY] = granted
                    trial.set_user_attr("epochs_planned", granted)
                if resume_from:  # --resume: a dead driver's trial goes on from its state, its curve carried over
                    self._carry_over(trial, resume_from)
                    hidden[RESUME_KEY] = resume_from["path"]
                if trial.user_attrs.get(FINISHING) and self.rungs is not None:  # the budget's end was finishing it
                    self.rungs.finish(trial.number)
                return {**config.to_dict(), **hidden}
            # a pairing smp cannot build is recorded as what it is, and never costs a Ray trial
            trial.set_user_attr("fail_reason", f"cannot build {config.arch} on {config.encoder}: {problem}")
            self.study.tell(trial, state=TrialState.FAIL)
        raise SpecError(f"space: {MAX_DRAWS} draws in a row gave architecture / encoder pairings smp cannot build")

    def _know_the_prior(self) -> None:
        """A raced prior: the rungs learn the whole list before its first member is handed out (queued, they already
        have their trial numbers), so they can judge its members together (search/scheduling/rungs.py)."""
        if self._prior_known or self.rungs is None or self.settings.protects_starting_points:
            return
        self._prior_known = True
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if t.user_attrs.get(STARTING_POINT):
                self.rungs.prior.add(t.number)

    def _near_incumbent(self, params: dict[str, space.Param]) -> None:
        """``search.near_incumbent`` of the model's trials: once nothing queued waits (the prior, a start-up design, a
        resume's re-runs all come first), queue a neighbour of the incumbent (:func:`incumbent`) for the next ask."""
        share = self.settings.near_incumbent
        if share <= 0 or self.rungs is None:
            return
        trials = self.study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials):
            return
        # Tune asks a slot ahead, before the first results: until there is an incumbent the model draws alone
        best = incumbent(trials, self.rungs.milestones(), self.budget.max_epochs)
        if best is None or self._rng.random() >= share:
            return
        tried = {json.dumps(t.params, sort_keys=True, default=str) for t in trials}
        for _ in range(10):  # a neighbour nobody tried yet
            near = space.perturb(params, dict(best.params), self._rng)
            if json.dumps(near, sort_keys=True, default=str) not in tried:
                self.study.enqueue_trial(near, user_attrs={DRAWN: f"near trial {best.number}"})
                return

    def _schedule(self, trial: optuna.Trial) -> int:
        """The epochs a new trial's schedule has: ``max_epochs``, fewer at the end of an exact or a time budget."""
        granted = self.budget.start(trial.number)
        if self.clock is not None:  # search.time_budget: its schedule ends where the time runs out
            granted = min(granted, max(self.budget.first_rung, self.clock.grant(self.budget.max_epochs)))
        return granted

    def _rerun_schedule(self, trial: optuna.Trial, resume_from: dict[str, Any]) -> int:
        """The epochs a --resume re-run's schedule has: the dead trial's own (it goes on from its state after
        ``resume_from["epoch"]``), ending sooner only where an exact or a time budget has fewer epochs left than its
        rest. A new trial's grant would be a whole new schedule, counted from epoch 0: near a budget's end a re-run
        from epoch 17 granted 3 trained nothing and was told COMPLETE."""
        epoch = int(resume_from["epoch"])
        dead = self._frozen(int(trial.user_attrs["retry_of"]))
        rest = self._planned(dead) - epoch
        if self.clock is not None:
            rest = min(rest, max(1, self.clock.grant(self.budget.max_epochs)))
        return epoch + self.budget.schedule(trial.number, rest)

    def _training_seed(self, trial: optuna.Trial) -> int:
        """The seed a trial trains with: search.seed's share plus its number, or, for a --resume re-run, the seed the
        first trial of its line (``retry_of`` followed back) trained with, so the re-run trains as the interrupted
        trial would have: the epochs after its state draw what they would have drawn (training/loop.py seeds each
        epoch). Read from that trial (user attr ``seed``) where it has one: a later run's search.seed may differ."""
        line = trial.user_attrs.get("retry_of")
        if line is None:
            return self._seed_offset + trial.number
        trials = self.study.get_trials(deepcopy=False)  # numbered as listed
        first = trials[int(line)]
        while first.user_attrs.get("retry_of") is not None:
            first = trials[int(first.user_attrs["retry_of"])]
        return self._seed_of(first)

    def _seed_of(self, trial: optuna.trial.FrozenTrial) -> int:
        """The seed a stored trial trained with (a study made before seeds were stored: its number's, as then)."""
        stored = trial.user_attrs.get("seed")
        return int(stored) if stored is not None else self._seed_offset + trial.number

    def _carry_over(self, trial: optuna.Trial, resume_from: dict[str, Any]) -> None:
        """The values of the epochs the dead trial ran up to its state, one per epoch, in the trial that goes on."""
        dead = self._frozen(int(trial.user_attrs["retry_of"]))
        for epoch, value in sorted(dead.intermediate_values.items()):
            if epoch <= int(resume_from["epoch"]):
                trial.report(value, step=epoch)

    def _promoted(self, trial_id: str) -> dict[str, Any] | None:
        """A paused trial that later results promote (ASHA's promotion): the same Optuna trial, run on from its
        state by a new Ray trial; its curve goes on without a gap."""
        if self.rungs is None or not self.rungs.promote:
            return None
        found, finishing = self.rungs.promote_one(), False
        if found is None and self._new_trial_cut():  # a new trial would run a schedule cut short: a paused trial
            found = self.rungs.finish_one(self._rest(), self._left(), self._judgement_near)  # finished is whole
            finishing = True
        if found is None:
            return None
        number, epoch = found
        frozen = self._frozen(number)
        planned = self._planned(frozen)
        # the time budget first: a refusal after the exact budget's reservation would hold those epochs for ever
        if self.clock is not None and self.clock.grant(planned) < planned - epoch:  # the time budget ends before it
            return None  # PRUNED at the search's end, as the paused trials nobody promoted (its attrs say paused)
        if not self.budget.resume(number, planned - epoch):  # an exact budget has no epochs left for it
            return None
        handle = store.trial_handle(self.study, number)
        handle.set_user_attr(store.PAUSED, False)
        handle.set_user_attr("promoted_at_epoch", epoch)
        if finishing:
            handle.set_user_attr(FINISHING, True)  # not ASHA's promotion: what the budget had left
        handle.set_user_attr("ray_trial_id", trial_id)
        self.live.add(trial_id)
        hidden = {TRIAL_KEY: number, PROMOTED_KEY: epoch, SEED_KEY: self._seed_of(frozen), FINISHING_KEY: finishing}
        adopted = frozen.user_attrs.get(ADOPTED)
        if adopted:  # paused under a driver that died (--resume): it goes on from the state that driver kept
            hidden[RESUME_KEY] = adopted
            handle.set_user_attr(ADOPTED, None)
        if planned < self.budget.max_epochs:
            hidden[EPOCHS_KEY] = planned
        return {**frozen.user_attrs["config"], **hidden}

    def _new_trial_cut(self) -> bool:
        """An exact budget with fewer epochs left than a whole schedule: a new trial would run one cut short (1-6
        epochs of 20 at the end of CamVid's K = 3 searches), a model no better than a paused trial's at its rung. A
        paused trial is finished instead where one fits (Rungs.finish_one)."""
        return self.budget.exact and 0 < (self.budget.left or 0) < self.budget.max_epochs

    def _list_may_finish(self) -> bool:
        """A new trial would run a schedule cut short, and what is left would finish a list member waiting (paused)
        for the list's judgement, which a running trial will bring."""
        if self.rungs is None or not self.live or not self._new_trial_cut():
            return False
        if not self.rungs.list_may_finish(self._rest(), self._left()):  # cheap while nothing waits: rest is lazy
            return False
        return self._judgement_near()

    def _judgement_near(self) -> bool:
        """A raced list waiting for its judgement may be waited for: a trial runs that may bring it, and no queued
        trial (a member not yet handed out, a --resume re-run) goes first, whatever schedule it gets."""
        return bool(self.live) and not self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))

    def _left(self) -> int:
        """Epochs a paused trial may still train: the exact budget's left, and no more than the time budget grants."""
        left = self.budget.left or 0
        return left if self.clock is None else min(left, self.clock.grant(self.budget.max_epochs))

    def _rest(self) -> Callable[[int, int], int]:
        """Epochs trial ``number``, paused after ``epoch``, has left of its schedule: ``rest(number, epoch)``; the
        store is read once, at the first call (the searcher asks on every step while a slot waits)."""
        planned: dict[int, int] = {}

        def rest(number: int, epoch: int) -> int:
            if not planned:
                planned.update((t.number, self._planned(t)) for t in self.study.get_trials(deepcopy=False))
            return planned.get(number, self.budget.max_epochs) - epoch

        return rest

    def _frozen(self, number: int) -> optuna.trial.FrozenTrial:
        """Trial ``number`` as stored, read, not copied (``study.trials`` deep-copies every trial of the study)."""
        return self.study.get_trials(deepcopy=False)[number]  # the list is numbered as the trials are

    def _planned(self, trial: optuna.trial.FrozenTrial) -> int:
        """The epochs a trial's schedule has: ``max_epochs``, or fewer where a budget's end cut it short."""
        return int(trial.user_attrs.get("epochs_planned") or self.budget.max_epochs)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """The StoreRecorder callback tells Optuna the outcome; here only who is still running."""
        self.live.discard(trial_id)


def incumbent(
    trials: list[optuna.trial.FrozenTrial], milestones: list[int], max_epochs: int
) -> optuna.trial.FrozenTrial | None:
    """The best configuration at the highest fidelity seen (PriorBand's incumbent): among the trials that reached the
    deepest level any trial reached (a rung's milestone, or all ``max_epochs``), the one with the best value there."""
    levels = sorted({*milestones, max_epochs})
    best: tuple[int, float, optuna.trial.FrozenTrial] | None = None
    for t in trials:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) or not t.intermediate_values:
            continue
        reached = max(t.intermediate_values)
        level = max((i for i, m in enumerate(levels) if m <= reached), default=None)
        if level is None:
            continue
        upto = [v for e, v in t.intermediate_values.items() if e <= levels[level] and v is not None]
        value = max(upto) if level == len(levels) - 1 else t.intermediate_values.get(levels[level])
        if value is None or value != value:  # nan
            continue
        if best is None or (level, value) > best[:2]:
            best = (level, float(value), t)
    return best[2] if best is not None else None
