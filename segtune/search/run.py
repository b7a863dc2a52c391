"""run_study(spec): Ray Tune schedules, Optuna samples, ASHA stops, and the store tells the truth.

Why not Ray's OptunaSearch: it tells Optuna that trials ASHA stopped are COMPLETE, so the
dashboard lies and TPE ranks 1-epoch scores beside full-length ones. Here a small Searcher asks
Optuna for configurations, and a Tune callback writes what really happened into the same store:
one intermediate value per epoch, COMPLETE / PRUNED / FAIL, metrics and the reason of a failure.
The two share nothing but the store and the Optuna trial number carried in the Ray config, so
neither holds state that a restart or a remote driver could lose.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

import segtune
from segtune.check import report_skipped
from segtune.data import SegData, build_dataset
from segtune.errors import SegtuneError, SpecError
from segtune.search import store
from segtune.search.interrupt import Interrupt, SearchInterrupted
from segtune.search.recorder import TRIAL_KEY, Progress, StoreRecorder
from segtune.search.searcher import OptunaStoreSearcher
from segtune.search.trainable import train_trial
from segtune.spec import BUILTIN_PREFIX, StudySpec, resolve_root, to_dict

DEFAULT_GPU_FRACTION = 0.25


def _check_reachable(address: str) -> None:
    """Ray retries an unreachable GCS for minutes; a closed port should be an error at once."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "local", "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise SegtuneError(f"--address: no Ray cluster answers at {address} ({e.strerror or e})") from None


def connect_ray(address: str | None) -> None:
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard per trial
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # segtune's Interrupt handles Ctrl-C
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # no address: a private local cluster, even when `ray start` runs on this machine ("auto" joins that)
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    _check_reachable(target)
    try:
        ray.init(
            address=target,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=True,
        )
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as e:
        if target == "local":
            raise
        reason = str(e).strip().splitlines()[0][:200]
        hint = ""
        if "auth" in str(e).lower():
            hint = "; it uses token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or ~/.ray/auth_token)"
        raise SegtuneError(f"--address: cannot join the Ray cluster at {target}: {reason}{hint}") from None
    # segtune prints its own progress; Ray Tune's warnings about its result files (which segtune
    # does not write) and experiment snapshots would only bury it
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # a failed trial's traceback: segtune prints its reason and stores it in the trial's fail_reason
    logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)
    logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)  # "Trials did not complete": the table says so


def resources_for(spec: StudySpec, out: Any) -> dict[str, float]:
    cluster = ray.cluster_resources()
    node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
    cpus = spec.resources.cpus_per_trial
    if cpus > node_cpus:
        raise SpecError(f"resources.cpus_per_trial: {cpus} but the largest Ray node has {node_cpus:g} CPUs")
    gpus = spec.resources.gpus_per_trial
    has_gpu = cluster.get("GPU", 0) > 0
    if gpus == "auto":
        gpus = DEFAULT_GPU_FRACTION if has_gpu else 0.0
    elif gpus > 0 and not has_gpu:
        print(f"note: resources.gpus_per_trial is {gpus} but the Ray cluster has no GPU: trials run on CPUs", file=out)
        gpus = 0.0
    return {"cpu": cpus, "gpu": float(gpus)}


def trial_slots(resources: dict[str, float]) -> int:
    """How many trials the cluster can run side by side with these per-trial resources."""
    cluster = ray.cluster_resources()
    slots = int(cluster.get("CPU", 1) // max(resources["cpu"], 1e-9))
    if resources["gpu"] > 0:
        slots = min(slots, int(cluster.get("GPU", 0) // resources["gpu"]))
    return max(1, slots)


def prepare_study(spec: StudySpec, storage_url: str, study_name: str) -> optuna.Study:
    """Create the study, or load it to add trials; record the spec (without password) and version."""
    storage = store.open_storage(storage_url)
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", load_if_exists=True)
    spec_dict = to_dict(spec)
    spec_dict["storage"] = store.redact(spec_dict["storage"])
    root = spec_dict["dataset"].get("root")
    if root and not root.startswith(BUILTIN_PREFIX):  # export and report may run from another folder
        spec_dict["dataset"]["root"] = str(resolve_root(root))
    study.set_user_attr("spec", spec_dict)
    study.set_user_attr("segtune_version", segtune.__version__)
    study.set_user_attr("metric", spec.search.metric)
    study.set_user_attr("max_epochs", spec.search.max_epochs)
    return study


def run_study(
    spec: StudySpec,
    storage_url: str,
    study_name: str,
    address: str | None = None,
    out: Any = None,
    data: SegData | None = None,
    stopper: Any = None,
) -> optuna.Study:
    """Run ``spec.search.trials`` more trials of ``study_name`` and return the study.

    Raises :class:`SearchInterrupted` (after the store is made consistent) when the user stops it.
    """
    out = out or sys.stdout
    if data is None:
        started = time.monotonic()
        data = build_dataset(spec.dataset)
        counts = ", ".join(f"{k} {len(v)}" for k, v in data.splits.items())
        print(
            f"decoded {len(data.names)} images at {data.image_size} px once for all trials ({counts}) "
            f"in {time.monotonic() - started:.1f} s",
            file=out,
            flush=True,
        )
        report_skipped(data, out)
    if len(data.splits["train"]) == 0 or len(data.splits["val"]) == 0:
        raise SpecError("dataset: the train and val splits must both hold images")
    connect_ray(address)  # before the store is touched: a wrong address must leave nothing behind
    resources = resources_for(spec, out)
    study = prepare_study(spec, storage_url, study_name)
    study.set_user_attr("classes", data.classes)
    settings = {**spec.train.model_dump(), "cpus": resources["cpu"]}
    if settings["loader_workers"] == "auto":  # CPU trials: workers would only steal the trial's own cores
        settings["loader_workers"] = max(0, int(resources["cpu"]) - 1) if resources["gpu"] > 0 else 0

    # Tune starts one trial at a time with a custom searcher unless told how many may wait for a
    # slot; with one, a slot freed while a trial starts (several seconds) would sit idle
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(trial_slots(resources)))
    search = spec.search
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    interrupt = Interrupt(study, run_id, out)
    stopper = tune.stopper.CombinedStopper(interrupt, stopper) if stopper is not None else interrupt
    searcher: Searcher = OptunaStoreSearcher(storage_url, study_name, run_id, spec)
    if search.max_concurrent:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=search.max_concurrent)
    if search.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=search.max_epochs,
            grace_period=search.grace_period,
            reduction_factor=search.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    recorder = StoreRecorder(storage_url, study_name, search.max_epochs, search.metric)
    progress = Progress(recorder, search.trials, search.metric, out)
    trainable = tune.with_resources(
        tune.with_parameters(
            train_trial, data=data, settings=settings, max_epochs=search.max_epochs, metric=search.metric
        ),
        resources,
    )
    results_dir = Path(spec.results_dir).expanduser().resolve()
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=search.metric,
            mode="max",
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=search.trials,
            trial_name_creator=lambda t: f"trial_{t.config[TRIAL_KEY]:04d}",
            trial_dirname_creator=lambda t: f"trial_{t.config[TRIAL_KEY]:04d}",
        ),
        run_config=tune.RunConfig(
            name=f"{study_name}_{run_id}",
            storage_path=str(results_dir),
            callbacks=[recorder, progress],
            verbose=0,
            stop=stopper,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    where = address or os.environ.get("RAY_ADDRESS") or "a local Ray cluster"
    print(
        f"study {study_name!r} in {store.redact(storage_url)}: {search.trials} trials on {where}, "
        f"{resources['cpu']:g} CPU / {resources['gpu']:g} GPU each, up to {search.max_epochs} epochs, "
        f"{search.sampler} + {search.scheduler}",
        file=out,
        flush=True,
    )
    interrupt.install()
    try:
        tuner.fit()
    finally:
        # a trial Ray never finished (driver interrupted, experiment stopped) must not stay RUNNING
        reason = interrupt.reason() if interrupt.event.is_set() else "stopped: the search ended before this trial did"
        failed = store.fail_unfinished(study, run_id, reason)
        interrupt.restore()
    if interrupt.event.is_set():
        raise SearchInterrupted(study, interrupt.signal_name, failed)
    return study
