"""run_study(spec): Ray Tune schedules, Optuna samples, ASHA stops, and the store tells the truth.

Why not Ray's OptunaSearch: it tells Optuna that trials ASHA stopped are COMPLETE, so the
dashboard lies and TPE ranks 1-epoch scores beside full-length ones. Here a small Searcher asks
Optuna for configurations, and a Tune callback writes what really happened into the same store:
one intermediate value per epoch, COMPLETE / PRUNED / FAIL, metrics and the reason of a failure.
The two share nothing but the store and the Optuna trial number carried in the Ray config, so
neither holds state that a restart or a remote driver could lose.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

import segtune
from segtune import objectives, space
from segtune.check import report_skipped
from segtune.config import TrainSettings
from segtune.data import SegData, build_dataset
from segtune.errors import SpecError
from segtune.search import artifacts, comparable, defaults, store, transfer
from segtune.search import resume as resume_mod
from segtune.search.budget import Budget
from segtune.search.cluster import connect_ray
from segtune.search.interrupt import Interrupt, SearchInterrupted
from segtune.search.keeper import start_keeper, write_token
from segtune.search.recorder import TRIAL_KEY, Progress, StoreRecorder
from segtune.search.rungs import Rungs, RungScheduler
from segtune.search.searcher import STARTING_POINT, OptunaStoreSearcher, queue_first_trials
from segtune.search.trainable import STATES, train_trial, tune_trial_name
from segtune.search.warmup import WARMUP_PREFIX, Gate, TuneLines, WarmFirst, WarmSlots
from segtune.search.writer import StoreWriter
from segtune.spec import BUILTIN_PREFIX, StudySpec, num_classes, resolve_root, to_dict
from segtune.training.weights import weights_dir

DEFAULT_GPU_FRACTION = 0.25
MAX_RESTARTS = 3  # times Tune runs a trial again after its worker or node was lost
SEARCH_SPLITS = ("train", "val")


def cpu_share(nodes: list[tuple[float, float]], gpus_per_trial: float) -> int:
    """``cpus_per_trial: auto``: on a GPU cluster, a node's CPUs divided by the trials its GPUs hold (the
    smallest such share over the GPU nodes, so every node can fill its GPUs); on a CPU-only cluster, 1.
    ``nodes`` holds each live node's (CPUs, GPUs)."""
    if gpus_per_trial <= 0:
        return 1
    shares = [int(cpus // math.floor(gpus / gpus_per_trial + 1e-9)) for cpus, gpus in nodes if gpus >= gpus_per_trial]
    return max(1, min(shares, default=1))


def resources_for(spec: StudySpec, out: Any) -> dict[str, float]:
    """What each trial asks Ray for, checked against the cluster: a request no node can meet is an error
    now, not a search that waits forever."""
    nodes = [(n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
    most_cpus = max((c for c, _ in nodes), default=0)
    most_gpus = max((g for _, g in nodes), default=0)
    gpus = spec.resources.gpus_per_trial
    if gpus == "auto":
        gpus = DEFAULT_GPU_FRACTION if most_gpus > 0 else 0.0
    elif gpus > 0 and most_gpus == 0:  # a laptop: every shipped spec still runs, on CPUs
        print(f"note: resources.gpus_per_trial is {gpus} but the Ray cluster has no GPU: trials run on CPUs", file=out)
        gpus = 0.0
    elif gpus > most_gpus:
        raise SpecError(f"resources.gpus_per_trial: {gpus:g} but the largest Ray node has {most_gpus:g} GPUs")
    cpus = spec.resources.cpus_per_trial
    if cpus == "auto":
        cpus = cpu_share(nodes, gpus)
    if cpus > most_cpus:
        raise SpecError(f"resources.cpus_per_trial: {cpus:g} but the largest Ray node has {most_cpus:g} CPUs")
    if not any(c >= cpus and g >= gpus for c, g in nodes):
        raise SpecError(
            f"resources: no Ray node has both {cpus:g} CPUs and {gpus:g} GPUs for one trial "
            f"(nodes: {', '.join(f'{c:g} CPU / {g:g} GPU' for c, g in nodes)})"
        )
    return {"cpu": float(cpus), "gpu": float(gpus)}


def train_settings(spec: StudySpec, resources: dict[str, float]) -> TrainSettings:
    """The same for every trial: precision, threads, loader workers, the metric, where the weights are.

    The weights folder is resolved here, once: trials run in their own working directories, and on
    other nodes, where the driver's environment and relative paths mean nothing."""
    workers = spec.train.loader_workers
    if workers == "auto":  # CPU trials: workers would only steal the trial's own cores
        workers = max(0, int(resources["cpu"]) - 1) if resources["gpu"] > 0 else 0
    share = resources["gpu"] if spec.train.cap_gpu_memory and 0 < resources["gpu"] < 1 else None
    return TrainSettings(
        precision=spec.train.precision,
        channels_last=spec.train.channels_last,
        loader_workers=workers,
        threads=max(1, int(resources["cpu"])),
        metric=spec.search.metric,
        weights_dir=str(weights_dir()),
        gpu_memory_fraction=share,
        keep_best_state=False,  # a trial writes its best weights to disk instead
        costs=tuple(spec.search.cost_names),
        checkpoint_every=spec.train.checkpoint_every,
    )


def local_cpus(spec: StudySpec) -> int | None:
    """The CPUs a private local cluster needs: enough for the trials the search runs at once (``search.max_concurrent``
    or ``search.trials``, the fewer), None for all of the machine's.

    A local cluster with more CPUs than that gives Tune room for a worker nobody needs: the slots' warm workers wait
    for their first real trials (search/warmup.py), Tune starts a new worker for each such trial while a CPU is
    free, and at the end it waits for those to finish starting only to stop them (3.7 s after the last trial of a
    one-at-a-time run here, on top of a worker's imports at its start). CPU trials only: a GPU trial's CPU share is
    the node's CPUs over its trials (:func:`cpu_share`), which a smaller count would change."""
    at_once = min(n for n in (spec.search.max_concurrent, spec.search.trials) if n)
    gpus, cpus = spec.resources.gpus_per_trial, spec.resources.cpus_per_trial
    if gpus == "auto":
        gpus = 1.0 if torch.cuda.is_available() else 0.0
    if gpus > 0:
        return None
    per_trial = 1.0 if cpus == "auto" else float(cpus)  # auto on a CPU-only cluster: one each (cpu_share)
    return max(1, math.ceil(per_trial * at_once))


PENDING_ENV = "TUNE_MAX_PENDING_TRIALS_PG"


@contextlib.contextmanager
def pending_trials(slots: int) -> Iterator[None]:
    """How many trials Tune holds waiting for a slot, during one search: at least ``slots``, and a value in the
    environment stands if larger. Tune starts one at a time with a custom searcher unless told; with one, a slot
    freed while a trial starts (several seconds) would sit idle, and the slots' warm workers, which wait until a real
    trial waits for each (search/warmup.py), would wait out their patience (120 s). Restored afterwards: a second
    search in the same process (or a process it starts) must not take the first one's count for the user's."""
    before = os.environ.get(PENDING_ENV)
    try:
        os.environ[PENDING_ENV] = str(max(slots, int(before) if before and before.isdigit() else 0))
        yield
    finally:
        if before is None:
            os.environ.pop(PENDING_ENV, None)
        else:
            os.environ[PENDING_ENV] = before


def trial_slots(resources: dict[str, float]) -> int:
    """How many trials the cluster can run side by side with these per-trial resources."""
    cluster = ray.cluster_resources()
    slots = int(cluster.get("CPU", 1) // max(resources["cpu"], 1e-9))
    if resources["gpu"] > 0:
        slots = min(slots, int(cluster.get("GPU", 0) // resources["gpu"]))
    return max(1, slots)


MAX_PROMOTIONS = 4  # times one trial may be paused and promoted (one per rung at most)


def plateau(data: SegData) -> float:
    """The validation value of predicting the majority class everywhere: its share of the train pixels over the
    classes present (mIoU averages over them; the majority scores its share, the others 0)."""
    shares = transfer.describe(data)["shares"]
    present = [x for x in shares if x > 0]
    return max(present) / len(present) if present else 0.0


def study_rungs(study: optuna.Study, spec: StudySpec, chosen: defaults.SearchSettings, data: SegData) -> Rungs:
    """The rung policy the spec asks for, with what the study's earlier trials recorded at the rungs (from the store:
    a second run or --resume judges with everything recorded)."""
    # a promoted trial goes on from its state: no states, no promotion
    rungs = Rungs.from_settings(spec.search.max_epochs, chosen, plateau(data), spec.train.checkpoint_every > 0)
    study.set_user_attr("plateau", rungs.plateau)  # what rung 1 waited for (the replay of this study reads it)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.intermediate_values:
            rungs.record(t.number, dict(t.intermediate_values), protected=bool(t.user_attrs.get(STARTING_POINT)))
    return rungs


def stored_spec(spec: StudySpec) -> dict[str, Any]:
    """The spec as the study keeps it: no store password, the dataset root absolute (export and
    report may run from another folder)."""
    spec_dict = to_dict(spec)
    spec_dict["storage"] = store.redact(spec_dict["storage"])
    root = spec_dict["dataset"].get("root")
    if root and not root.startswith(BUILTIN_PREFIX):
        spec_dict["dataset"]["root"] = str(resolve_root(root))
    return spec_dict


def prepare_study(
    spec: StudySpec, storage_url: str, study_name: str, data: SegData, run_id: str = "check"
) -> optuna.Study:
    """Create the study, or load it to add trials; record this run's spec (without password), the data's
    fingerprint and classes, and segtune's version."""
    storage = store.open_storage(storage_url)
    names = spec.search.objective_names
    study = optuna.create_study(
        study_name=study_name, storage=storage, load_if_exists=True, directions=[objectives.direction(n) for n in names]
    )
    study.set_metric_names(names)  # optuna-dashboard shows val_miou (and latency_ms), not "Objective 0"
    comparable.record_run(study, run_id, stored_spec(spec), data)
    study.set_user_attr("segtune_version", segtune.__version__)
    study.set_user_attr(transfer.ATTR, transfer.describe(data))  # what the data is: later studies compare theirs
    study.set_user_attr("metric", spec.search.metric)
    study.set_user_attr("max_epochs", spec.search.max_epochs)
    study.set_user_attr("budget_epochs", spec.search.budget_epochs)
    study.set_user_attr("objectives", names)
    study.set_user_attr("constraints", spec.search.constraints)
    return study


def starting_points(spec: StudySpec) -> list[dict[str, Any]]:
    """The spec's starting points as the params Optuna enqueues (validated against the space)."""
    params = space.parse_space(spec.space)
    n = num_classes(spec.dataset)
    return [
        space.starting_point_params(params, point, n, f"search.starting_points[{i}]")
        for i, point in enumerate(spec.search.own_starting_points)
    ]


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


def plan(study: optuna.Study, spec: StudySpec, resume: bool, out: Any) -> int:
    """How many trials this run adds. --resume: mark the orphans of a dead driver FAIL, queue the
    interrupted trials again, and run until the study holds ``search.trials``. Without it: all of
    ``search.trials``, with a note when a dead driver left trials RUNNING."""
    if not resume:
        lost = resume_mod.orphans(study)
        if lost:
            print(
                f"note: {len(lost)} trials of {study.study_name!r} are RUNNING under a driver that is gone; "
                "`segtune run --resume` marks them FAIL and re-runs them",
                file=out,
            )
        return spec.search.trials
    remaining = resume_mod.prepare_resume(study, spec.search.trials, out)
    if remaining == 0:
        print(
            f"study {study.study_name!r} already holds {spec.search.trials} finished trials (search.trials): "
            "nothing to run",
            file=out,
        )
    return remaining


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
) -> optuna.Study:
    """Run ``spec.search.trials`` more trials of ``study_name`` (with ``resume``: until it holds that
    many) and return the study.

    Nothing is written before the data is decoded, the run is known to be comparable with the
    study's earlier trials and the Ray cluster answers. Raises :class:`SearchInterrupted` (after the
    store is made consistent) when the user stops it, :class:`store.StoreUnavailable` when the store
    stayed unreachable past its retry window.
    """
    out = out or sys.stdout
    data = data if data is not None else decode(spec, out)
    if len(data.splits["train"]) == 0 or len(data.splits["val"]) == 0:
        raise SpecError("dataset: the train and val splits must both hold images")
    spec_dict = stored_spec(spec)
    existing = store.existing_study(storage_url, study_name)
    if existing is not None:
        changed = comparable.check(existing, spec_dict, data, allow_spec_change)
        if changed:
            print(f"note: --allow-spec-change: adding trials to {study_name!r} although {'; '.join(changed)}", file=out)
    connect_ray(address, local_cpus(spec))  # before the store is touched: a wrong address must leave nothing behind
    resources = resources_for(spec, out)
    trials = plan(existing, spec, resume, out) if existing is not None else spec.search.trials
    if trials == 0:
        return existing
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    study = prepare_study(spec, storage_url, study_name, data, run_id)
    where = artifacts.location(artifacts_url, spec.artifacts, storage_url)
    artifacts.open_store(where)  # a store that cannot be made is an error now, not at the first trial's end
    study.set_user_attr(artifacts.ATTR, where)  # report, predict, export-model and the dashboard read it
    settings = train_settings(spec, resources)
    study.set_user_attr("train_settings", settings.to_dict())  # finish trains and scores with the same

    slots = trial_slots(resources)
    study.set_user_attr("slots", slots)  # trials side by side in this run (benchmarks/trial_overhead.py)
    search = spec.search
    chosen = defaults.resolve(search, slots)
    points = starting_points(spec)
    transferred = []
    if search.transfer:  # starting_points: auto: the winners of earlier studies on alike data join the spec's own
        params, n = space.parse_space(spec.space), num_classes(spec.dataset)
        transferred = transfer.starting_points(
            store.open_storage(storage_url), study_name, data, params, n, points, out
        )
    queue_first_trials(study, spec, chosen, points, transferred)
    budget = Budget(
        search.budget_epochs,
        used=sum(int(t.user_attrs.get("epochs_run", 0)) for t in study.trials),
        first_rung=chosen.grace_period if search.scheduler == "asha" else search.max_epochs,
        rule=search.budget_rule,
        max_epochs=search.max_epochs,
    )
    writer = StoreWriter()  # the recorder's store writes, off Tune's loop (search/writer.py)
    interrupt = Interrupt(study, run_id, out, writer)
    writer.on_outage = interrupt.store_outage
    stopper = tune.stopper.CombinedStopper(interrupt, stopper) if stopper is not None else interrupt
    rungs = study_rungs(study, spec, chosen, data) if search.scheduler == "asha" else None
    asker = OptunaStoreSearcher(
        storage_url,
        study_name,
        run_id,
        spec,
        on_outage=interrupt.store_outage,
        budget=budget,
        settings=chosen,
        before_ask=writer.landed,
        rungs=rungs,
        trials=trials,
    )
    searcher: Searcher = asker
    if search.max_concurrent:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=search.max_concurrent)
    warm = None  # a worker process per slot, up before the first ask (search/warmup.py); pointless without reuse
    if spec.resources.reuse_workers:
        warm = WarmSlots(min(slots, trials, search.max_concurrent or slots), Gate.remote(), out)
        searcher = WarmFirst(searcher, warm)
    scheduler = FIFOScheduler()
    if rungs is not None:
        scheduler = RungScheduler(rungs, search.metric, protected=asker.protected, trial_key=TRIAL_KEY)
    results_dir = Path(spec.results_dir).expanduser().resolve()
    run_name = f"{study_name}_{run_id}"
    run_dir = results_dir / run_name
    token = write_token(run_dir)  # a trial that reads it back writes where the driver reads (search/keeper.py)
    states = run_dir / STATES
    keeper = start_keeper(states) if settings.checkpoint_every else None
    recorder = StoreRecorder(
        storage_url,
        study_name,
        search.max_epochs,
        search.metric,
        writer=writer,
        budget=budget,
        objectives=search.objective_names,
        constraints=search.constraints,
        artifacts=where,
        states=str(states),
        rungs=rungs,
        keep_free_gb=search.keep_free_gb,
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
    cluster = address or os.environ.get("RAY_ADDRESS") or "a local Ray cluster"
    print(
        f"study {study_name!r} in {store.redact(storage_url)}: {trials} trials on {cluster}, "
        f"{resources['cpu']:g} CPU / {resources['gpu']:g} GPU each, up to {search.max_epochs} epochs, "
        f"{search.sampler} + {search.scheduler}"
        + (f" ({chosen.text()})" if search.scheduler == "asha" else "")
        + (f"; majority-class plateau {rungs.plateau:.3f}" if rungs is not None and rungs.plateau is not None else ""),
        file=out,
        flush=True,
    )
    interrupt.install()
    try:
        with pending_trials(slots):
            tuner.fit()
        writer.close()  # every trial's truth is in the store (a write's error is raised here)
    finally:
        with contextlib.suppress(Exception):  # fit raised: land what is queued, and raise fit's error
            writer.close()
        # a trial Ray never finished (driver interrupted, experiment stopped) must not stay RUNNING
        reason = interrupt.reason() if interrupt.event.is_set() else "stopped: the search ended before this trial did"
        try:  # after an outage, once: its window has passed already, and --resume marks them as well
            with store.one_try() if interrupt.outage is not None else contextlib.nullcontext():
                recorder.prune_paused(run_id)  # the search is over: paused trials nobody promoted end PRUNED
                failed = store.fail_unfinished(study, run_id, reason)
        except store.StoreUnavailable as e:  # still down: --resume marks them when it answers again
            interrupt.store_outage(e)
            failed = 0
        interrupt.restore()
        for actor in (warm.gate if warm is not None else None, keeper):
            if actor is not None:
                with contextlib.suppress(Exception):  # cleanup: never hide why the search ended
                    ray.kill(actor)
        if warm is not None:
            for folder in run_dir.glob(f"{WARMUP_PREFIX}*"):  # Tune's files of the warm-ups
                shutil.rmtree(folder, ignore_errors=True)
    if budget.overshoot():
        print(budget.overshoot(), file=out, flush=True)
    for line in recorder.lost_models:
        print(f"{line}; the same command with --resume runs it again", file=out, flush=True)
    if interrupt.outage is not None:
        raise store.StoreUnavailable(
            f"{interrupt.outage}; the search stopped. Run the same command with --resume once the store answers: "
            "finished trials are kept, interrupted ones run again"
        )
    if interrupt.event.is_set():
        raise SearchInterrupted(study, interrupt.signal_name, failed)
    return study
