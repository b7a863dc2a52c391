"""The Ray Tune searcher: each configuration is asked from the Optuna study in the store."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from segtune import space
from segtune.errors import SpecError
from segtune.search import defaults, store
from segtune.search.budget import Budget
from segtune.search.defaults import SearchSettings
from segtune.search.recorder import TRIAL_KEY, pickle_state
from segtune.spec import StudySpec
from segtune.training import models

MAX_DRAWS = 50
STARTING_POINT = "starting_point"  # user attr of a trial enqueued from search.starting_points: never stopped


def make_sampler(spec: StudySpec, settings: SearchSettings) -> optuna.samplers.BaseSampler:
    seed = spec.search.seed
    if spec.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials running side by side get different suggestions; group: conditional params
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=settings.n_startup_trials, multivariate=True, group=True, constant_liar=True
    )


def queue_first_trials(
    study: optuna.Study, spec: StudySpec, settings: SearchSettings, points: list[dict[str, Any]]
) -> None:
    """What a study runs before the sampler decides: the starting points (``points``, as Optuna params;
    never stopped by a rung), each once per study, then -- for ``search.startup: stratified`` on a new
    study -- a space-filling start-up design in place of TPE's random start-up draws."""
    new = not study.trials
    for fixed in points:
        study.enqueue_trial(fixed, user_attrs={STARTING_POINT: True}, skip_if_exists=True)
    # no more than the first run will run: a queued trial nobody asks for would wait in the store forever
    size = min(settings.n_startup_trials, spec.search.trials - len(points))
    if new and settings.startup == "stratified" and spec.search.sampler == "tpe" and size > 0:
        params = space.parse_space(spec.space)
        for fixed in space.stratified_design(params, size, seed=spec.search.seed or 0):
            study.enqueue_trial(fixed)


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
    ):
        super().__init__(metric=spec.search.metric, mode="max")
        self.before_ask = before_ask  # run: lands the recorder's queued writes (the sampler sees every tell)
        self._storage_url, self._study_name, self._run_id = storage_url, study_name, run_id
        self.on_outage = on_outage
        self.budget = budget or Budget()
        self._space_raw = spec.space
        self._sampler = make_sampler(spec, settings or defaults.resolve(spec.search))
        self._study: optuna.Study | None = study
        self.protected: set[int] = set()  # trial numbers of starting points: the rung policy never stops them

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = store.load_study(store.open_storage(self._storage_url), self._study_name, self._sampler)
        return self._study

    def __getstate__(self) -> dict[str, Any]:
        return pickle_state(self)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        try:
            return self._suggest(trial_id)
        except store.StoreUnavailable as e:  # no configuration now; the search stops cleanly
            if self.on_outage is None:
                raise
            self.on_outage(e)
            return None

    def _suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.budget.spent:  # search.budget_epochs: no new trial; running ones finish or stop at a rung
            return Searcher.FINISHED
        if self.before_ask is not None:
            self.before_ask()
        params = space.parse_space(self._space_raw)
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
                if trial.user_attrs.get(STARTING_POINT):
                    self.protected.add(trial.number)
                trial.set_user_attr("ray_trial_id", trial_id)
                trial.set_user_attr("config", config.to_dict())  # the full config, defaults and fixed values included
                self.budget.start(trial.number)
                return {**config.to_dict(), TRIAL_KEY: trial.number}
            # a pairing smp cannot build is recorded as what it is, and never costs a Ray trial
            trial.set_user_attr("fail_reason", f"cannot build {config.arch} on {config.encoder}: {problem}")
            self.study.tell(trial, state=TrialState.FAIL)
        raise SpecError(f"space: {MAX_DRAWS} draws in a row gave architecture / encoder pairings smp cannot build")

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """The StoreRecorder callback tells Optuna the outcome; nothing to do here."""
