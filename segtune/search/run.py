"""run_study(spec): Ray Tune schedules, Optuna samples, ASHA stops, and the store tells the truth.

Why not Ray's OptunaSearch: it tells Optuna that trials ASHA stopped are COMPLETE, so the
dashboard lies and TPE ranks 1-epoch scores beside full-length ones. Here a small Searcher asks
Optuna for configurations, and a Tune callback writes what really happened into the same store:
one intermediate value per epoch, COMPLETE / PRUNED / FAIL, metrics and the reason of a failure.
The two share nothing but the store and the Optuna trial number carried in the Ray config, so
neither holds state that a restart or a remote driver could lose.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import optuna

from segtune import space
from segtune.check import report_skipped
from segtune.data import SegData, build_dataset
from segtune.environment import command_environment
from segtune.errors import SpecError
from segtune.search import store
from segtune.search.nodes.cluster import connect_ray, tune_environment
from segtune.search.nodes.resources import local_cpus, pending_trials, resources_for, train_settings, trial_slots
from segtune.search.scheduling import defaults, transfer
from segtune.search.scheduling.searcher import queue_first_trials
from segtune.search.scheduling.study_policy import starting_points
from segtune.search.store import artifacts
from segtune.search.store.budget import Clock
from segtune.search.store.study import plan, prepare_study, refuse_incomparable
from segtune.search.tune_run import TuneRun
from segtune.spec import UNCOUNTED_TRIALS, StudySpec, num_classes

SEARCH_SPLITS = ("train", "val")


@command_environment()  # a library caller's process as a command's while the search runs, and as it was after
def run_study(
    spec: StudySpec,
    storage_url: str,
    study_name: str,
    address: str | None = None,
    out: Any = None,
    data: SegData | None = None,
    stopper: Any = None,
    resume: bool = False,
    allow_spec_change: bool = False,
    artifacts_url: str | None = None,
    clock: Clock | None = None,
) -> optuna.Study:
    """Run ``spec.search.trials`` more trials of ``study_name`` (with ``resume``: until it holds that
    many) and return the study.

    Nothing is written before the data is decoded, the run is known to be comparable with the
    study's earlier trials and the Ray cluster answers. Raises :class:`SearchInterrupted` (after the
    store is made consistent) when the user stops it, :class:`store.StoreUnavailable` when the store
    stayed unreachable past its retry window. ``clock``: the search's time budget as the caller set it up (what it
    keeps back for the work after the search: `segtune fit`), instead of ``search.time_budget``'s own.
    """
    out = out or sys.stdout
    data = data if data is not None else decode(spec, out)
    if len(data.splits["train"]) == 0 or len(data.splits["val"]) == 0:
        raise SpecError("dataset: the train and val splits must both hold images")
    existing = refuse_incomparable(spec, storage_url, study_name, data, allow_spec_change, out)
    connect_ray(address, local_cpus(spec))  # before the store is touched: a wrong address must leave nothing behind
    resources = resources_for(spec, out)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    trials = plan(existing, spec, resume, run_id, out) if existing is not None else spec.search.trials
    if trials == 0:
        return existing

    study = prepare_study(spec, storage_url, study_name, data, run_id)
    where = open_artifacts(study, spec, artifacts_url, storage_url)
    settings = train_settings(spec, resources)
    study.set_user_attr("train_settings", settings.to_dict())  # finish trains and scores with the same
    slots = trial_slots(resources)
    study.set_user_attr("slots", slots)  # trials side by side in this run (benchmarks/trial_overhead.py)
    chosen = defaults.resolve(spec.search, slots)
    queue_start(study, spec, chosen, data, storage_url, out)
    run = TuneRun.build(
        spec, study, run_id, data, storage_url, where, settings, resources, slots, trials, chosen, out, stopper, clock
    )
    announce(spec, study, storage_url, address, resources, trials, chosen, run, out)

    run.interrupt.install()
    try:
        with pending_trials(slots), tune_environment():
            run.tuner.fit()
        run.writer.close()  # every trial's truth is in the store (a write's error is raised here)
    finally:
        failed = run.end()
    run.raise_or_report(failed, out)
    return study


def decode(spec: StudySpec, out: Any) -> SegData:
    """The dataset, decoded once for every trial of the search, with a line saying so."""
    started = time.monotonic()
    data = build_dataset(spec.dataset, only=SEARCH_SPLITS)  # the test split waits for retrain
    counts = ", ".join(f"{k} {len(v)}" for k, v in data.splits.items())
    size = f"{data.canvas[0]}x{data.canvas[1]} px ({data.resize.mode})"
    print(
        f"decoded {len(data.names)} images at {size} once for all trials ({counts}) "
        f"in {time.monotonic() - started:.1f} s",
        file=out,
        flush=True,
    )
    report_skipped(data, out)
    return data


def open_artifacts(study: optuna.Study, spec: StudySpec, artifacts_url: str | None, storage_url: str) -> str:
    """Where every trial's model goes, opened now (a store that cannot be made is an error before the first trial's
    end) and recorded in the study (report, predict, export-model and the dashboard read it)."""
    where = artifacts.location(artifacts_url, spec.artifacts, storage_url)
    artifacts.open_store(where)
    study.set_user_attr(artifacts.ATTR, where)
    return where


def queue_start(
    study: optuna.Study, spec: StudySpec, chosen: defaults.SearchSettings, data: SegData, storage_url: str, out: Any
) -> None:
    """What the study runs before the sampler decides: the spec's starting points, earlier studies' winners on alike
    data (``starting_points: auto``), a start-up design."""
    points = starting_points(spec)
    transferred = []
    if spec.search.transfer:
        params, n = space.parse_space(spec.space), num_classes(spec.dataset)
        transferred = transfer.starting_points(
            store.open_storage(storage_url), study.study_name, data, params, n, points, out
        )
    if len(points) > spec.search.trials:
        print(
            f"search.starting_points lists {len(points)} configurations and search.trials is {spec.search.trials}: "
            f"the first {spec.search.trials} run",
            file=out,
        )
    queue_first_trials(study, spec, chosen, points, transferred)


def announce(
    spec: StudySpec,
    study: optuna.Study,
    storage_url: str,
    address: str | None,
    resources: dict[str, float],
    trials: int,
    chosen: defaults.SearchSettings,
    run: TuneRun,
    out: Any,
) -> None:
    search, rungs = spec.search, run.rungs
    cluster = address or os.environ.get("RAY_ADDRESS") or "a local Ray cluster"
    print(
        f"study {study.study_name!r} in {store.redact(storage_url)}: "
        + ("trials until the time is up" if trials >= UNCOUNTED_TRIALS else f"{trials} trials")
        + f" on {cluster}, "
        f"{resources['cpu']:g} CPU / {resources['gpu']:g} GPU each, up to {search.max_epochs} epochs, "
        f"{search.sampler} + {search.scheduler}"
        + (f" ({chosen.text()})" if search.scheduler == "asha" else "")
        + (f"; majority-class plateau {rungs.plateau:.3f}" if rungs is not None and rungs.plateau is not None else ""),
        file=out,
        flush=True,
    )
