"""The store: what a search keeps, and the one way results reach it.

Its face (imported as ``from segtune.search import store``) is the study store itself: storage URLs, retrying Optuna
RDB storages and study queries (``rdb``, the one module that touches Optuna's private storage API). Beside it:
``artifacts`` (every trial's model, the study store's companion), ``writer`` (the driver's store writes, off Tune's
loop), ``recorder`` (Tune callbacks that write each trial's truth, with ``pauses`` and ``uploads``), ``resume``
(--resume) and ``comparable`` (a re-run that would change what a value means is refused).
"""

from segtune.search.store.rdb import (
    BACKOFF_S,
    CREATE_TOKEN,
    DEFAULT_RETRY_WINDOW_S,
    PAUSED,
    RETRY_WINDOW_ENV,
    PausedAwareSampler,
    RetryingRDBStorage,
    StoreUnavailable,
    existing_study,
    fail_trial,
    fail_unfinished,
    load_study,
    objective_value,
    one_try,
    open_storage,
    pickle_state,
    redact,
    retry_delays,
    retry_window_s,
    shown_value,
    sqlite_path,
    study_metric,
    transient,
    trial_handle,
    with_retries,
)

__all__ = [
    "BACKOFF_S",
    "PAUSED",
    "CREATE_TOKEN",
    "DEFAULT_RETRY_WINDOW_S",
    "RETRY_WINDOW_ENV",
    "PausedAwareSampler",
    "RetryingRDBStorage",
    "StoreUnavailable",
    "existing_study",
    "fail_trial",
    "fail_unfinished",
    "load_study",
    "objective_value",
    "one_try",
    "open_storage",
    "pickle_state",
    "redact",
    "retry_delays",
    "retry_window_s",
    "shown_value",
    "sqlite_path",
    "study_metric",
    "transient",
    "trial_handle",
    "with_retries",
]
