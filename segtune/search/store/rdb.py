"""The study store: storage URLs, Optuna RDB storages (SQLite tuned for concurrent writers), study queries."""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from segtune.errors import StoreError


def redact(url: str) -> str:
    """The URL as safe to print or store: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url


def pickle_state(obj: Any) -> dict[str, Any]:
    """What Tune may pickle into its experiment folder: no live store handle, no password.

    Tune writes its run config (callbacks, stopper, searcher) to disk; segtune never restores
    from it (the store is the state), but the file must not leak the store's password.
    """
    state = dict(obj.__dict__)
    state["_study"] = None
    if "_storage_url" in state:
        state["_storage_url"] = redact(state["_storage_url"])
    return state


log = logging.getLogger("segtune.store")
BACKOFF_S = (0.2, 0.5, 1, 2, 4, 8, 15)  # then every 15 s until the window is spent
RETRY_WINDOW_ENV = "SEGTUNE_STORE_RETRY_S"
DEFAULT_RETRY_WINDOW_S = 30.0  # a PostgreSQL restart; a managed database's failover can take minutes: set the env


def retry_delays(window_s: float) -> tuple[float, ...]:
    """The waits between tries for a retry window of ``window_s`` seconds: the backoff, then every 15 s, until the
    waits reach the window (30 s: 0.2, 0.5, 1, 2, 4, 8, 15; 0: a single try)."""
    delays: list[float] = []
    while sum(delays) < window_s:
        delays.append(BACKOFF_S[len(delays)] if len(delays) < len(BACKOFF_S) else BACKOFF_S[-1])
    return tuple(delays)


def retry_window_s() -> float:
    """The retry window, from SEGTUNE_STORE_RETRY_S (seconds) when set."""
    raw = os.environ.get(RETRY_WINDOW_ENV)
    if raw is None:
        return DEFAULT_RETRY_WINDOW_S
    try:
        window = float(raw)
    except ValueError:
        window = -1.0
    if not (math.isfinite(window) and window >= 0):
        raise StoreError(f"{RETRY_WINDOW_ENV}: {raw!r} is not a number of seconds >= 0")
    return window


SQLITE_TIMEOUT_S = 60
# errors that mean "this database will not work", however often it is asked
_PERMANENT = (
    "authentication failed",
    "does not exist",
    "unable to open database file",
    "no such table",
    "permission denied",
    "readonly database",
)


def transient(error: BaseException) -> bool:
    """A dropped connection, a server restarting, a lock held too long: worth another try.

    Optuna wraps SQLAlchemy's errors in StorageInternalError, so the whole cause chain is searched.
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sa_exc.IntegrityError):
            return False
        if isinstance(seen, sa_exc.OperationalError | sa_exc.InterfaceError) or (
            isinstance(seen, sa_exc.DBAPIError) and seen.connection_invalidated
        ):
            return not any(text in str(seen).lower() for text in _PERMANENT)
        seen = seen.__cause__ or seen.__context__
    return False


class StoreUnavailable(StoreError):
    """The store did not answer for longer than the retry window: the search stops cleanly and
    ``--resume`` continues it. Its own exit code tells scripts to try again later."""

    exit_code = 75  # EX_TEMPFAIL


_calls = threading.local()


@contextlib.contextmanager
def one_try() -> Iterator[None]:
    """Store calls in this block (this thread) get one attempt instead of the retry window. For the end of a
    search that an outage already stopped: it tries once to mark its trials and, if the store is still down,
    leaves them to ``--resume`` instead of waiting another window."""
    _calls.one_try = True
    try:
        yield
    finally:
        _calls.one_try = False


def with_retries(name: str, call: Callable[[int], Any], transient: Callable[[BaseException], bool] = transient) -> Any:
    """``call(attempt)`` until it succeeds, an error ``transient`` does not retry, or the retry window ends (then
    StoreUnavailable)."""
    started = time.monotonic()
    delays = (None,) if getattr(_calls, "one_try", False) else (*retry_delays(retry_window_s()), None)
    for attempt, delay in enumerate(delays, start=1):
        try:
            return call(attempt)
        except Exception as e:
            if not transient(e):
                raise
            if delay is None:
                raise StoreUnavailable(
                    f"the study store did not answer for {time.monotonic() - started:.0f} s ({name}: {_cause(e)[:160]})"
                ) from e
            log.warning("study store: %s failed (%s); try %d in %.1f s", name, _cause(e)[:200], attempt + 1, delay)
            time.sleep(delay * random.uniform(0.8, 1.2))  # jitter: drivers sharing a server must not retry in step
    raise AssertionError("unreachable")


# Optuna wraps every RDBStorage in its _CachedStorage (optuna.create_study / load_study), which calls
# these private methods of its backend. They are retried like the public ones. This module is the one
# place segtune touches Optuna's private API: these storage methods (tests/test_store_faults.py checks the
# list), and the private attributes of Optuna's objects that its helpers below read: Study._storage,
# Study._study_id, FrozenTrial._trial_id (tests/test_layers.py fails on such a read anywhere else).
CACHED_STORAGE_CALLS = (
    "_create_new_trial",
    "_set_trial_param",
    "_get_trials",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
)
PUBLIC_CALLS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_studies",
    "set_trial_param",
    "get_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "get_best_trial",
    "record_heartbeat",
    "get_heartbeat_interval",
    "get_heartbeat_stale_trial_callback",
)
CREATE_TOKEN = "segtune:create_token"  # a system attr: finds a trial whose creation landed before its reply was lost


def _cause(e: BaseException) -> str:
    text = str(e.__cause__ or e).strip().splitlines()[0] if str(e.__cause__ or e).strip() else type(e).__name__
    return text[text.find("FATAL:") :] if "FATAL:" in text else text  # the server's own words


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose every call survives a dropped connection, a restart or a held lock.

    Every call the storage receives is retried with backoff for about 30 s (``retry_delays``; SEGTUNE_STORE_RETRY_S
    sets the window), only at the outermost call (a method calling another is not retried twice). Retried writes
    are idempotent: reads and upserts are by nature; a trial creation whose COMMIT landed before the connection dropped
    is found again by a token instead of creating a ghost twin; a ``tell`` whose COMMIT landed is not
    refused as "already finished". After the window, :class:`StoreUnavailable`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._local = threading.local()
        super().__init__(*args, **kwargs)

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_local", None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._local = threading.local()

    def _retry(self, name: str, call: Callable[[int], Any]) -> Any:
        """``call(attempt)`` with retries, unless inside another retried call (that one retries the whole)."""
        if getattr(self._local, "depth", 0):
            return call(1)
        self._local.depth = 1
        try:
            return with_retries(name, call)
        finally:
            self._local.depth = 0

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._create_new_trial(study_id, template_trial)._trial_id

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        token = uuid.uuid4().hex
        # what RDBStorage makes of no template, plus the token
        template = (
            copy.deepcopy(template_trial)
            if template_trial is not None
            else FrozenTrial(
                number=-1,
                state=TrialState.RUNNING,
                value=None,
                values=None,
                datetime_start=datetime.now(),
                datetime_complete=None,
                params={},
                distributions={},
                user_attrs={},
                system_attrs={},
                intermediate_values={},
                trial_id=-1,
            )
        )
        template.system_attrs[CREATE_TOKEN] = token

        def call(attempt: int) -> FrozenTrial:
            if attempt > 1:  # the last try may have committed before its reply was lost
                for t in super(RetryingRDBStorage, self).get_all_trials(
                    study_id, deepcopy=False, states=(template.state,)
                ):
                    if t.system_attrs.get(CREATE_TOKEN) == token:
                        return t
            return super(RetryingRDBStorage, self)._create_new_trial(study_id, template)

        return self._retry("create_new_trial", call)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        asked = datetime.now()

        def landed() -> bool:
            t = super(RetryingRDBStorage, self).get_trial(trial_id)
            if state == TrialState.RUNNING:  # popped from the queue by this very call, before its reply was lost
                return t.state == state and t.datetime_start is not None and t.datetime_start >= asked
            return t.state == state and (values is None or list(t.values or []) == list(values))

        def call(attempt: int) -> bool:
            try:
                done = super(RetryingRDBStorage, self).set_trial_state_values(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if attempt > 1 and landed():
                    return True
                raise
            return done or (attempt > 1 and state == TrialState.RUNNING and landed())

        return self._retry("set_trial_state_values", call)


def _retried(name: str) -> Callable[..., Any]:
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._retry(name, lambda attempt: method(self, *args, **kwargs))

    return call


for _name in PUBLIC_CALLS + CACHED_STORAGE_CALLS:
    if _name not in ("_create_new_trial",):
        setattr(RetryingRDBStorage, _name, _retried(_name))


def sqlite_path(url: str) -> Path | None:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StoreError(f"--storage: {url!r} is not a database URL (e.g. sqlite:///segtune.db)") from None
    if not parsed.drivername.startswith("sqlite"):
        return None
    db = parsed.database
    return Path(db).expanduser().resolve() if db and db != ":memory:" else None


def open_storage(url: str, must_exist: bool = False, create_tables: bool = True) -> RetryingRDBStorage:
    """An Optuna RDB storage that retries transient errors. SQLite files get WAL and a long busy
    timeout so a search, a second search and a dashboard can share one file; PostgreSQL gets a
    pool checked before use. ``must_exist`` refuses to create a new SQLite store; without
    ``create_tables`` an empty database stays empty."""
    path = sqlite_path(url)
    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        if must_exist and not path.is_file():
            raise StoreError(f"--storage: no study store at {path}")
        if not path.parent.is_dir():
            raise StoreError(f"--storage: folder {path.parent} does not exist")
        with sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S) as con:  # WAL is a property of the file: set once
            con.execute("PRAGMA journal_mode=WAL")
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    elif url.startswith("postgresql"):
        # only the driver talks to the store (trials report through Ray), so a small pool is plenty;
        # pre-ping replaces connections a server restart or an idle timeout has dropped
        engine_kwargs.update(
            pool_size=4,
            max_overflow=8,
            pool_pre_ping=True,
            pool_recycle=1800,
            connect_args={"connect_timeout": 10, "application_name": "segtune"},
        )

    def connect(attempt: int) -> RetryingRDBStorage:  # the schema check at opening meets dropped connections too
        return RetryingRDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            skip_table_creation=not create_tables,
            skip_compatibility_check=not create_tables,
        )

    try:
        return with_retries("open", connect)
    except StoreUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - driver errors come in many types; all mean "cannot open"
        raise StoreError(f"--storage: cannot open {redact(url)}: {_cause(e)[:200]}") from None


def load_study(
    storage: optuna.storages.BaseStorage, name: str, sampler: optuna.samplers.BaseSampler | None = None
) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError:
        known = [s.study_name for s in storage.get_all_studies()]
        raise StoreError(f"study {name!r} is not in the store (studies: {', '.join(known) or 'none'})") from None


def objective_value(trial: FrozenTrial) -> float | None:
    """The trial's accuracy as Optuna holds it: its value, or its first value in a multi-objective study."""
    return trial.values[0] if trial.values else None


def shown_value(trial: FrozenTrial, metric: str) -> float | None:
    """The value a user sees for a trial: its best epoch's ``metric`` (a pruned trial's too), else Optuna's."""
    value = trial.user_attrs.get(metric)
    return value if value is not None else objective_value(trial)


def study_metric(study: optuna.Study) -> str:
    """What the study ranks by (search.metric); studies made before it was recorded ranked by val mIoU."""
    return str(study.user_attrs.get("metric", "val_miou"))


NO_TABLES = ("no such table", "does not exist")  # SQLite's and PostgreSQL's words for a schema not made yet


def existing_study(url: str, name: str) -> optuna.Study | None:
    """The study when the store already holds it; None otherwise. Creates no file, table or study."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        return None
    try:
        return load_study(open_storage(url, create_tables=False), name)
    except StoreError as e:
        if "is not in the store" in str(e) or any(text in str(e).lower() for text in NO_TABLES):
            return None  # no such study, or a database no study was ever written to
        raise


def trial_handle(study: optuna.Study, number: int) -> optuna.Trial:
    """A live handle on trial ``number`` to report values and set attributes from any process."""
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.Trial(study, trial_id)


def fail_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> None:
    study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def fail_unfinished(study: optuna.Study, run_id: str, reason: str) -> int:
    """Mark this run's trials FAIL if they are still RUNNING, so none is left looking alive."""
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("run_id") == run_id:
            fail_trial(study, t, reason)
            failed += 1
    return failed


PAUSED = "paused"  # the user attr of a trial a rung paused (RUNNING in the store until promoted or ended)


class _WithoutPaused:
    """A study as a sampler should see it: without its paused trials (RUNNING in the store, their ``paused`` attr
    set). A paused trial is not running: TPE's constant liar would file tens of them among the worst and steer away
    from configurations a rung only paused. Nor is it finished: told as PRUNED at its rung, what it is so far, TPE did
    worse in the replay, on both recorded tables (benchmarks/replay.py, 30 unseen seeds: best at the full budget
    0.582 against 0.637 on Kvasir-SEG, 0.578 against 0.610 on pets), since tens of first-epoch values weigh in its
    split. So the model waits for a paused trial's end. Optuna's samplers read trials through the study's private
    ``_get_trials``: this view answers it (the one place segtune reaches into Optuna, with the storage above), and
    everything else goes to the study itself."""

    def __init__(self, study: optuna.Study):
        self._inner = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _get_trials(
        self, deepcopy: bool = True, states: Sequence[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        trials = self._inner._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return [t for t in trials if not (t.state == TrialState.RUNNING and t.user_attrs.get(PAUSED))]

    def get_trials(self, deepcopy: bool = True, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states, use_cache=False)


class PausedAwareSampler(optuna.samplers.BaseSampler):
    """``inner`` (TPE) sampling from a study without its paused trials (:class:`_WithoutPaused`): tens of paused
    trials no longer pass for running ones, and the model learns from them once they end (promoted or pruned)."""

    def __init__(self, inner: optuna.samplers.BaseSampler):
        self.inner = inner

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self.inner.infer_relative_search_space(_WithoutPaused(study), trial)  # type: ignore[arg-type]

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self.inner.sample_relative(_WithoutPaused(study), trial, search_space)  # type: ignore[arg-type]

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        view = _WithoutPaused(study)
        return self.inner.sample_independent(view, trial, param_name, param_distribution)  # type: ignore[arg-type]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(_WithoutPaused(study), trial)  # type: ignore[arg-type]

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
