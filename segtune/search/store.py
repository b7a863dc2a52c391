"""The study store: storage URLs, Optuna RDB storages (SQLite tuned for concurrent writers), study queries."""

from __future__ import annotations

import functools
import logging
import random
import sqlite3
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from segtune.errors import StoreError

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def redact(url: str) -> str:
    """The URL as safe to print or store: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url


log = logging.getLogger("segtune.store")
RETRY_DELAYS_S = (0.2, 0.5, 1, 2, 4, 8, 15)  # about 30 s in all: a PostgreSQL restart or failover
SQLITE_TIMEOUT_S = 60
# errors that mean "this database will not work", however often it is asked
_PERMANENT = ("authentication failed", "does not exist", "unable to open database file", "no such table",
              "permission denied", "readonly database")  # fmt: skip


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


def _retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        for attempt, delay in enumerate((*RETRY_DELAYS_S, None), start=1):
            try:
                return method(self, *args, **kwargs)
            except Exception as e:
                if delay is None or not transient(e):
                    raise
                cause = str(e.__cause__ or e).strip().splitlines()[0]
                cause = cause[cause.find("FATAL:") :] if "FATAL:" in cause else cause  # the server's own words
                log.warning(
                    "study store: %s failed (%s); try %d in %.1f s", method.__name__, cause[:200], attempt + 1, delay
                )
                time.sleep(delay * random.uniform(0.8, 1.2))  # jitter: drivers sharing a server must not retry in step
        raise AssertionError("unreachable")

    return call


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose every store operation survives a dropped connection or a held lock.

    Reads and most writes are idempotent; a retried ``create_new_trial`` whose first commit did
    land (the connection dropped after COMMIT) leaves one extra trial, which ``fail_unfinished``
    or ``--resume`` marks FAIL: a visible blemish, never a lost result.
    """


for _name in ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
              "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
              "get_study_system_attrs", "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies",
              "create_new_trial", "set_trial_param", "get_trial_param", "set_trial_state_values",
              "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
              "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "get_best_trial",
              "record_heartbeat"):  # fmt: skip
    setattr(RetryingRDBStorage, _name, _retrying(getattr(optuna.storages.RDBStorage, _name)))


def sqlite_path(url: str) -> Path | None:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StoreError(f"--storage: {url!r} is not a database URL (e.g. sqlite:///segtune.db)") from None
    if not parsed.drivername.startswith("sqlite"):
        return None
    db = parsed.database
    return Path(db).expanduser().resolve() if db and db != ":memory:" else None


def open_storage(url: str, must_exist: bool = False) -> RetryingRDBStorage:
    """An Optuna RDB storage that retries transient errors. SQLite files get WAL and a long busy
    timeout so a search, a second search and a dashboard can share one file; PostgreSQL gets a
    pool checked before use. ``must_exist`` refuses to create a new SQLite store."""
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
        engine_kwargs.update(pool_size=4, max_overflow=8, pool_pre_ping=True, pool_recycle=1800,
                             connect_args={"connect_timeout": 10, "application_name": "segtune"})  # fmt: skip
    try:
        return RetryingRDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as e:  # noqa: BLE001 - driver errors come in many types; all mean "cannot open"
        raise StoreError(f"--storage: cannot open {redact(url)}: {str(e).splitlines()[0][:200]}") from None


def load_study(
    storage: optuna.storages.BaseStorage, name: str, sampler: optuna.samplers.BaseSampler | None = None
) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError:
        known = [s.study_name for s in storage.get_all_studies()]
        raise StoreError(f"study {name!r} is not in the store (studies: {', '.join(known) or 'none'})") from None


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
