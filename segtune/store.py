"""The study store: storage URLs, Optuna RDB storages (SQLite tuned for concurrent writers), study queries."""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path
from typing import Any

import optuna
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


def sqlite_path(url: str) -> Path | None:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StoreError(f"--storage: {url!r} is not a database URL (e.g. sqlite:///segtune.db)") from None
    if not parsed.drivername.startswith("sqlite"):
        return None
    db = parsed.database
    return Path(db).expanduser().resolve() if db and db != ":memory:" else None


def open_storage(url: str, must_exist: bool = False) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage. SQLite files get WAL and a long busy timeout so trials, a second
    search and a dashboard can share one file; ``must_exist`` refuses to create a new store."""
    path = sqlite_path(url)
    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        if must_exist and not path.is_file():
            raise StoreError(f"--storage: no study store at {path}")
        if not path.parent.is_dir():
            raise StoreError(f"--storage: folder {path.parent} does not exist")
        with sqlite3.connect(path, timeout=60) as con:  # WAL is a property of the file: set it once
            con.execute("PRAGMA journal_mode=WAL")
        engine_kwargs["connect_args"] = {"timeout": 60}
    elif url.startswith("postgresql"):
        engine_kwargs.update(pool_size=5, max_overflow=10, pool_pre_ping=True, pool_recycle=1800)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
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


def fail_unfinished(study: optuna.Study, run_id: str, reason: str) -> int:
    """Mark this run's trials FAIL if they are still RUNNING, so none is left looking alive."""
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("run_id") == run_id:
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            failed += 1
    return failed
