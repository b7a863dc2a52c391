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
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from optuna.trial import TrialState
from ray import cloudpickle, tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

import segtune
from segtune import checkpoint, models, space, store
from segtune.check import report_skipped
from segtune.data import SegData, build_dataset
from segtune.errors import SegtuneError, SpecError
from segtune.spec import BUILTIN_PREFIX, StudySpec, resolve_root, to_dict
from segtune.train import fit

TRIAL_KEY = "_segtune_trial"  # the Optuna trial number, carried in each Ray trial's config
DEFAULT_GPU_FRACTION = 0.25
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


def _pickle_state(obj: Any) -> dict[str, Any]:
    """What Tune may pickle into its experiment folder: no live store handle, no password.

    Tune writes its run config (callbacks, stopper, searcher) to disk; segtune never restores
    from it (the store is the state), but the file must not leak the store's password.
    """
    state = dict(obj.__dict__)
    state["_study"] = None
    if "_storage_url" in state:
        state["_storage_url"] = store.redact(state["_storage_url"])
    return state


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
        return _pickle_state(self)

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


def _clean(value: Any) -> Any:
    """JSON-safe user attrs: NaN becomes None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _error_reason(trial: Any) -> str:
    """The exception a trial raised, as one line. Read from the trial's local error files: when Tune
    calls back, they are written there but not yet synced to where ``get_pickled_error`` looks."""
    cause = None
    try:
        with open(trial.pickled_error_file, "rb") as f:
            err = cloudpickle.load(f)
        cause = getattr(err, "cause", None) or err
    except Exception:  # noqa: BLE001 - no pickle (or not loadable): fall back to the text file
        pass
    if cause is not None:
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[-1] if text else ''}"[:500]
    try:
        with open(trial.error_file) as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1][:500] if lines else "trial raised an error"
    except (OSError, TypeError):
        return "trial raised an error (no error file)"


@dataclass
class Counts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    best: float = -math.inf
    best_trial: int | None = None


class StoreRecorder(tune.Callback):
    """Writes each Ray trial's truth into its Optuna trial: per-epoch values, final state, metrics."""

    def __init__(self, storage_url: str, study_name: str, max_epochs: int, metric: str):
        self._storage_url, self._study_name = storage_url, study_name
        self.max_epochs, self.metric = max_epochs, metric
        self._study: optuna.Study | None = None
        self.counts = Counts()

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = store.load_study(store.open_storage(self._storage_url), self._study_name)
        return self._study

    def __getstate__(self) -> dict[str, Any]:
        return _pickle_state(self)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        handle = store.trial_handle(self.study, trial.config[TRIAL_KEY])
        value = result.get(self.metric)
        if value is not None and math.isfinite(value):
            handle.report(float(value), step=int(result["epoch"]))
        handle.set_user_attr("epochs_run", int(result["epoch"]))
        if int(result["epoch"]) == 1:  # where it runs: for `status`, and to find a stuck worker
            handle.set_user_attr("node_id", result.get("node_id"))
            handle.set_user_attr("node_ip", result.get("node_ip"))
            handle.set_user_attr("worker_pid", result.get("pid"))

    def _finish_attrs(self, trial: Any) -> dict[str, Any]:
        last = trial.last_result or {}
        attrs = {
            "epochs_run": last.get("epoch", 0),
            "wall_time_s": round(float(last.get("time_total_s", 0.0)), 2),
            "node_ip": last.get("node_ip"),
            "node_hostname": last.get("hostname"),
            "node_id": last.get("node_id"),
            "ray_trial_id": trial.trial_id,
        }
        for key in ("val_miou", "val_dice", "val_pixel_acc", "val_iou_per_class", "epoch"):
            if f"best_{key}" in last:
                attrs["best_epoch" if key == "epoch" else key] = _clean(last[f"best_{key}"])
        if trial.checkpoint is not None:
            attrs["checkpoint"] = trial.checkpoint.path
        return attrs

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        number = trial.config[TRIAL_KEY]
        attrs = self._finish_attrs(trial)
        handle = store.trial_handle(self.study, number)
        for k, v in attrs.items():
            handle.set_user_attr(k, v)
        if attrs["epochs_run"] >= self.max_epochs and attrs.get(self.metric) is not None:
            self.study.tell(number, attrs[self.metric], state=TrialState.COMPLETE)
            self.counts.complete += 1
        else:  # ASHA (or a stopper) ended it early: Optuna's PRUNED, valued at its last epoch
            self.study.tell(number, state=TrialState.PRUNED)
            self.counts.pruned += 1
        best = attrs.get(self.metric)
        if best is not None and best > self.counts.best:
            self.counts.best, self.counts.best_trial = best, number

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        number = trial.config[TRIAL_KEY]
        handle = store.trial_handle(self.study, number)
        for k, v in self._finish_attrs(trial).items():
            handle.set_user_attr(k, v)
        handle.set_user_attr("fail_reason", _error_reason(trial))
        self.study.tell(number, state=TrialState.FAIL)
        self.counts.failed += 1


class Progress(tune.Callback):
    """One line when a trial starts or ends, and a heartbeat while trials run."""

    def __init__(self, recorder: StoreRecorder, total: int, metric: str, out: Any, heartbeat_s: float = 30.0):
        self.recorder, self.total, self.metric, self.out = recorder, total, metric, out
        self.heartbeat_s = heartbeat_s
        self.started = time.monotonic()
        self.last_print = 0.0
        self.running: dict[str, int] = {}  # ray trial id -> epochs reported

    def line(self, event: str = "") -> None:
        c = self.recorder.counts
        done = c.complete + c.pruned + c.failed
        best = f"{c.best:.4f} (trial {c.best_trial})" if c.best_trial is not None else "-"
        elapsed = time.monotonic() - self.started
        text = (
            f"[{int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {done}/{self.total} done: "
            f"{len(self.running)} running, "
            f"{c.complete} complete, {c.pruned} pruned, {c.failed} failed | best {self.metric} {best}"
        )
        print(text + (f" | {event}" if event else ""), file=self.out, flush=True)
        self.last_print = time.monotonic()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running[trial.trial_id] = 0
        self.line(f"trial {trial.config[TRIAL_KEY]} started: {_short_params(trial.config)}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.running[trial.trial_id] = int(result.get("epoch", 0))

    def _ended(self, trial: Any, how: str) -> None:
        epochs = self.running.pop(trial.trial_id, 0)
        self.line(f"trial {trial.config[TRIAL_KEY]} {how} after {epochs} epoch(s)")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, "complete" if self.running.get(trial.trial_id, 0) >= self.recorder.max_epochs else "pruned")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, f"FAILED ({_error_reason(trial)[:120]})")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.running and time.monotonic() - self.last_print > self.heartbeat_s:
            epochs = ", ".join(str(e) for e in self.running.values())
            self.line(f"epochs so far of running trials: {epochs}")


class SearchInterrupted(Exception):
    """The user stopped the search (Ctrl-C or SIGTERM); the store is consistent. Carries the study."""

    def __init__(self, study: optuna.Study, signal_name: str, failed: int):
        self.study, self.signal_name, self.failed = study, signal_name, failed
        super().__init__(f"{signal_name}: {failed} running trials ended FAIL (interrupted)")


class Interrupt(tune.Stopper):
    """Ctrl-C once (or SIGTERM, as `docker stop` sends): Tune stops the experiment within a step,
    and the trials it cut short are marked FAIL (interrupted). Ctrl-C again: mark them and quit at once.

    Replaces Tune's own SIGINT handler, whose second Ctrl-C raises KeyboardInterrupt wherever the
    driver happens to be and can leave trials RUNNING in the store.
    """

    def __init__(self, study: optuna.Study, run_id: str, out: Any):
        self.study, self.run_id, self.out = study, run_id, out
        self.event = threading.Event()
        self.signal_name = ""
        self._previous: dict[int, Any] = {}

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def __getstate__(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "signal_name": self.signal_name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(None, state["run_id"], None)  # type: ignore[arg-type]
        self.signal_name = state["signal_name"]

    def stop_all(self) -> bool:
        return self.event.is_set()

    def reason(self) -> str:
        return f"interrupted: {self.signal_name} stopped the search (run {self.run_id}) before this trial ended"

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach only the main thread; a caller in a thread keeps its own handling
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.event.is_set():
            self.signal_name = signal.Signals(signum).name
            self.event.set()
            print(f"\n{self.signal_name}: stopping; running trials end as FAIL (interrupted). "
                  "Press Ctrl-C again to quit at once.", file=self.out, flush=True)  # fmt: skip
            return
        # second signal: record the truth if the store answers within a few seconds, then go
        marker = threading.Thread(
            target=store.fail_unfinished, args=(self.study, self.run_id, self.reason()), daemon=True
        )
        marker.start()
        marker.join(timeout=5)
        print("segtune: interrupted twice, quitting now", file=sys.stderr, flush=True)
        os._exit(130)


def _short_params(config: dict[str, Any]) -> str:
    keys = ("arch", "encoder", "loss", "augment", "optimizer", "lr", "batch_size", "schedule")
    return " ".join(f"{k}={config[k]:.2g}" if isinstance(config[k], float) else f"{k}={config[k]}" for k in keys)


def train_trial(config: dict[str, Any], data: SegData, settings: dict[str, Any], max_epochs: int, metric: str) -> None:
    """The Ray trainable: one trial = one `train.fit`, reporting every epoch to Tune."""
    cpus = max(1, int(settings.get("cpus", 1)))
    torch.set_num_threads(cpus)
    number = int(config[TRIAL_KEY])
    cfg = {k: config[k] for k in space.DEFAULTS}
    best: dict[str, Any] = {}
    host = socket.gethostname()
    node_id = ray.get_runtime_context().get_node_id()

    def on_epoch(epoch: int, row: dict[str, Any], model: torch.nn.Module) -> None:
        nonlocal best
        value = row[metric] if not math.isnan(row[metric]) else -1.0
        improved = not best or value > best[metric]
        if improved:
            best = dict(row)
        report = {k: _clean(v) for k, v in row.items()}
        report.update({f"best_{k}": _clean(v) for k, v in best.items()})
        report["hostname"], report["node_id"] = host, node_id
        if not improved:
            tune.report(report)
            return
        with tempfile.TemporaryDirectory() as tmp:  # Tune copies it into the trial's storage
            checkpoint.save(Path(tmp) / checkpoint.FILENAME, model, cfg, data.classes, data.image_size,
                            epoch=epoch, metrics=report, trial=number)  # fmt: skip
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))

    fit(cfg, data, max_epochs, on_epoch, settings=settings, seed=number)


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
