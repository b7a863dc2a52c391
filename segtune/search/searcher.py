"""The Ray Tune searcher: each configuration is asked from the Optuna study in the store."""

from __future__ import annotations

import os
import socket
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from segtune import space
from segtune.errors import SpecError
from segtune.search import store
from segtune.search.recorder import TRIAL_KEY, pickle_state
from segtune.spec import StudySpec
from segtune.training import models

MAX_DRAWS = 50


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    seed = spec.search.seed
    if spec.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = min(10, max(3, spec.search.trials // 3))
    # constant_liar: trials running side by side get different suggestions; group: conditional params
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=startup, multivariate=True, group=True, constant_liar=True
    )


class OptunaStoreSearcher(Searcher):
    """Ray Tune searcher that draws each configuration from an Optuna study in the store (ask)."""

    def __init__(self, storage_url: str, study_name: str, run_id: str, spec: StudySpec):
        super().__init__(metric=spec.search.metric, mode="max")
        self._storage_url, self._study_name, self._run_id = storage_url, study_name, run_id
        self._space_raw = spec.space
        self._sampler = make_sampler(spec)
        self._study: optuna.Study | None = None

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = store.load_study(store.open_storage(self._storage_url), self._study_name, self._sampler)
        return self._study

    def __getstate__(self) -> dict[str, Any]:
        return pickle_state(self)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        params = space.parse_space(self._space_raw)
        for _ in range(MAX_DRAWS):
            trial = self.study.ask()  # a trial queued by --resume comes first, with its parameters
            trial.set_user_attr("run_id", self._run_id)
            trial.set_user_attr("driver_host", socket.gethostname())  # for --resume: is its driver alive?
            trial.set_user_attr("driver_pid", os.getpid())
            config = space.sample(trial, params)
            problem = (
                models.pairing_problem(config["arch"], config["encoder"])
                if config["arch"] in models.ARCHITECTURES
                else None
            )
            if problem is None:
                trial.set_user_attr("ray_trial_id", trial_id)
                trial.set_user_attr("config", config)  # the full config, defaults and fixed values included
                return {**config, TRIAL_KEY: trial.number}
            # a pairing smp cannot build is recorded as what it is, and never costs a Ray trial
            trial.set_user_attr("fail_reason", f"cannot build {config['arch']} on {config['encoder']}: {problem}")
            self.study.tell(trial, state=TrialState.FAIL)
        raise SpecError(f"space: {MAX_DRAWS} draws in a row gave architecture / encoder pairings smp cannot build")

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """The StoreRecorder callback tells Optuna the outcome; nothing to do here."""
