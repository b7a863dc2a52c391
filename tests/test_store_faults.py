"""The study store under real trouble: a SQLite write lock held by another process, PostgreSQL
connections killed by the server, a database that refuses connections for a while."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import optuna
import psycopg
import pytest
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from segtune.errors import StoreError
from segtune.search import store


def write_trials(storage: optuna.storages.BaseStorage, n: int, study: str = "s") -> list[int]:
    st = optuna.create_study(study_name=study, storage=storage, load_if_exists=True, direction="maximize")
    numbers = []
    for i in range(n):
        t = st.ask()
        t.set_user_attr("i", i)
        t.report(0.1 * i, 1)
        st.tell(t, 0.1 * i)
        numbers.append(t.number)
    return numbers


def test_a_sqlite_write_lock_held_for_seconds_is_waited_out(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    storage = store.open_storage(url)
    write_trials(storage, 2)
    held = threading.Event()

    def hold_lock() -> None:  # another process (a backup, a second search) keeps the write lock for 8 s
        con = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(8)
        con.execute("COMMIT")
        con.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    held.wait()
    started = time.monotonic()
    write_trials(storage, 2)  # Python's sqlite3 gives up after 5 s by default: "database is locked"
    waited = time.monotonic() - started
    holder.join()
    assert waited > 5
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [t.number for t in trials] == [0, 1, 2, 3] and all(t.state.name == "COMPLETE" for t in trials)


def test_a_trial_s_report_does_not_wait_for_a_locked_store(tmp_path: Path) -> None:
    """Tune runs the recorder in its loop, and a trial's report waits for that loop: an epoch's record
    must not hold the trial while the store is busy (here: another process holds SQLite's write lock).
    The record lands, in full, once the lock is released."""
    from ray.tune.experiment import Trial

    from segtune.search.ray_trials import TRIAL_KEY
    from segtune.search.store.recorder import StoreRecorder

    url = f"sqlite:///{tmp_path / 'store.db'}"
    study = optuna.create_study(study_name="s", storage=store.open_storage(url), direction="maximize")
    number = study.ask().number
    recorder = StoreRecorder(url, "s", max_epochs=3, metric="val_miou")
    trial = Trial("segtune", config={TRIAL_KEY: number}, stub=True)
    recorder.on_trial_result(0, [], trial, {"epoch": 1, "val_miou": 0.25, "epoch_seconds": 1.5, "pid": 7})
    recorder.writer.flush()  # the recorder has its store open before the lock is taken

    held, release, returned = threading.Event(), threading.Event(), threading.Event()

    def hold_lock() -> None:
        con = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        held.set()
        release.wait(30)
        con.execute("COMMIT")
        con.close()

    def report_epoch() -> None:
        recorder.on_trial_result(0, [], trial, {"epoch": 2, "val_miou": 0.5, "epoch_seconds": 1.25})
        returned.set()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    held.wait()
    threading.Thread(target=report_epoch, daemon=True).start()
    try:
        assert returned.wait(10), "the epoch's record waited for the store's lock, and the trial with it"
    finally:
        release.set()
        holder.join()
    recorder.writer.close()
    stored = optuna.load_study(study_name="s", storage=url).trials[number]
    assert stored.intermediate_values == {1: 0.25, 2: 0.5}
    assert stored.user_attrs["epoch_seconds"] == [1.5, 1.25] and stored.user_attrs["epochs_run"] == 2
    assert stored.user_attrs["worker_pid"] == 7


def test_after_an_outage_found_by_the_searcher_the_recorder_starts_no_write(tmp_path: Path) -> None:
    """The searcher's ask can be what meets the store down past its window. The search then stops, and the
    results Tune still hands the recorder (a trial's last epoch, its end) must not each wait out a window of
    their own before the run can exit: they are dropped, their trials left RUNNING for --resume."""
    import io

    from ray.tune.experiment import Trial

    from segtune.search.interrupt import Interrupt
    from segtune.search.ray_trials import TRIAL_KEY
    from segtune.search.store.recorder import StoreRecorder

    url = f"sqlite:///{tmp_path / 'store.db'}"
    study = optuna.create_study(study_name="s", storage=store.open_storage(url), direction="maximize")
    number = study.ask().number
    recorder = StoreRecorder(url, "s", max_epochs=3, metric="val_miou")
    interrupt = Interrupt(study, "run", io.StringIO(), recorder.writer)
    recorder.writer.on_outage = interrupt.store_outage
    trial = Trial("segtune", config={TRIAL_KEY: number}, stub=True)
    recorder.on_trial_result(0, [], trial, {"epoch": 1, "val_miou": 0.25, "epoch_seconds": 1.5})
    recorder.writer.flush()

    interrupt.store_outage(store.StoreUnavailable("the study store did not answer for 31 s (_get_trials: down)"))
    recorder.on_trial_result(0, [], trial, {"epoch": 2, "val_miou": 0.5, "epoch_seconds": 1.25})
    with pytest.raises(store.StoreUnavailable):
        recorder.writer.landed()  # what the searcher's next ask meets: nothing more is asked of the store
    recorder.writer.close()
    assert interrupt.stop_all() and "study store unreachable" in interrupt.out.getvalue()
    stored = optuna.load_study(study_name="s", storage=url).trials[number]
    assert stored.intermediate_values == {1: 0.25}, "a write started after the outage (with a window of its own)"
    assert stored.state == optuna.trial.TrialState.RUNNING


def _admin(pg_url: str) -> psycopg.Connection:
    admin_url = make_url(pg_url).set(drivername="postgresql", database="postgres")  # not the one it locks
    return psycopg.connect(admin_url.render_as_string(hide_password=False), autocommit=True)


def _kill_segtune_connections(admin: psycopg.Connection, db: str) -> int:
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND application_name = 'segtune' AND pid <> pg_backend_pid()",
        (db,),
    ).fetchall()
    return len(rows)


def test_postgres_connections_killed_by_the_server_are_replaced(pg_url: str) -> None:
    db = make_url(pg_url).database
    storage = store.open_storage(pg_url)
    write_trials(storage, 3)
    with _admin(pg_url) as admin:
        assert _kill_segtune_connections(admin, db) >= 1  # the pool's idle connections die
    write_trials(storage, 3)
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.number for t in study.trials] == list(range(6))
    assert all(t.state.name == "COMPLETE" and t.intermediate_values for t in study.trials)


def test_postgres_refusing_connections_for_a_while_is_retried(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    db = make_url(pg_url).database
    storage = store.open_storage(pg_url)
    write_trials(storage, 2)
    with _admin(pg_url) as admin:
        admin.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')  # as during a failover or restart
        _kill_segtune_connections(admin, db)

        def reopen() -> None:
            time.sleep(3)
            admin.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')

        opener = threading.Thread(target=reopen)
        opener.start()
        started = time.monotonic()
        with caplog.at_level("WARNING", logger="segtune.store"):
            write_trials(storage, 2)
        opener.join()
    assert time.monotonic() - started > 2.5
    assert any("not currently accepting connections" in r.getMessage() for r in caplog.records), caplog.text
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4


def test_a_wrong_postgres_password_fails_at_once_without_showing_it(pg_url: str, tmp_path: Path) -> None:
    from tests.conftest import segtune

    bad = make_url(pg_url).set(password="not-the-password").render_as_string(hide_password=False)
    started = time.monotonic()
    proc = segtune("status", "--storage", bad, check=False, cwd=tmp_path)
    assert proc.returncode == 2 and time.monotonic() - started < 30
    assert "password authentication failed" in proc.stderr and "***" in proc.stderr
    assert "not-the-password" not in proc.stdout + proc.stderr


def test_the_retry_window_is_the_users_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """30 s by default (a server restart); SEGTUNE_STORE_RETRY_S for a managed database whose failover takes
    minutes, or 0 for one try; a value that is no number of seconds is refused naming the variable."""
    assert store.retry_delays(30) == (0.2, 0.5, 1, 2, 4, 8, 15)
    assert store.retry_delays(0) == ()
    assert sum(store.retry_delays(120)) >= 120 and store.retry_delays(120)[-1] == 15
    monkeypatch.setenv("SEGTUNE_STORE_RETRY_S", "0")
    tries = []

    def down(attempt: int) -> None:
        tries.append(attempt)
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    with pytest.raises(store.StoreUnavailable):
        store.with_retries("ask", down)
    assert tries == [1]
    for bad in ("a minute", "-5", "inf", "nan"):  # inf: a search that never gives up would never say why it waits
        monkeypatch.setenv("SEGTUNE_STORE_RETRY_S", bad)
        with pytest.raises(StoreError, match=f"SEGTUNE_STORE_RETRY_S: '{bad}' is not a number of seconds"):
            store.with_retries("ask", down)


def test_every_call_optunas_cached_storage_makes_is_retried() -> None:
    """Optuna wraps the storage in _CachedStorage, which calls private methods of it: each must retry."""
    import inspect
    import re

    from optuna.storages import _cached_storage

    called = set(re.findall(r"self\._backend\.(\w+)\(", inspect.getsource(_cached_storage)))
    assert called, "Optuna's cached storage no longer calls its backend the way store.py expects"
    plain = optuna.storages.RDBStorage
    not_retried = sorted(n for n in called if getattr(store.RetryingRDBStorage, n) is getattr(plain, n))
    assert not not_retried, f"calls that would not be retried: {not_retried}"


def test_a_search_survives_connections_killed_while_trials_are_asked_and_told(pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL kills segtune's connections every 0.3 s through a whole real search: ask, suggest,
    report and tell all meet dropped connections. The search ends normally with every trial recorded
    exactly once, with its values."""
    from tests.conftest import SPACES, segtune

    db = make_url(pg_url).database
    stop, kills = threading.Event(), []

    def study_made() -> bool:  # opening a store takes a burst of queries: on a loaded machine, longer than 0.3 s
        plain = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            with psycopg.connect(plain) as con:
                return con.execute("SELECT 1 FROM studies WHERE study_name = 'killed'").fetchone() is not None
        except psycopg.Error:  # no tables yet
            return False

    def killer() -> None:
        # from the moment the study exists: its opening is the retry window's (test_a_store_down_...), this test
        # is about asks, suggests, reports and tells meeting dropped connections
        while not stop.is_set() and not study_made():
            time.sleep(0.2)
        with _admin(pg_url) as admin:
            while not stop.is_set():
                kills.append(_kill_segtune_connections(admin, db))
                time.sleep(0.3)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        proc = segtune(
            "run",
            str(SPACES / "demo.yaml"),
            "--storage",
            pg_url,
            "--study",
            "killed",
            "--set",
            "dataset={name: synthetic, num_images: 32, image_size: 32}",
            "--set",
            "search.trials=8",
            "--set",
            "search.max_epochs=2",
            "--set",
            "search.grace_period=1",
            "--set",
            "space={arch: SmallUNet, lr: {loguniform: [1.0e-3, 1.0e-2]}, batch_size: 4}",
            "--set",
            "search.starting_points=[]",
            "--set",
            f"results_dir={tmp_path / 'runs'}",
            cwd=tmp_path,
            check=False,
        )
    finally:
        stop.set()
        thread.join(timeout=10)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert sum(kills) >= 20, f"only {sum(kills)} connections were killed: the test did not test"
    assert "Traceback" not in proc.stderr
    trials = optuna.load_study(study_name="killed", storage=pg_url).trials
    assert [t.number for t in trials] == list(range(8)), "no ghost trial, none missing"
    for t in trials:
        assert t.state.name in ("COMPLETE", "PRUNED"), (t.number, t.state, t.user_attrs, proc.stdout[-3000:])
        assert sorted(t.intermediate_values) == list(range(1, t.user_attrs["epochs_run"] + 1))
        assert t.value is not None and t.user_attrs["ray_trial_id"]


def _finished(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return [
        t for t in optuna.load_study(study_name=study, storage=url).trials if t.state.name in ("COMPLETE", "PRUNED")
    ]


def test_a_store_down_past_its_retry_window_stops_the_search_and_resume_finishes_it(
    pg_url: str, tmp_path: Path
) -> None:
    """PostgreSQL refuses connections for longer than the retry window while trials train: the search
    stops with exit code 75 and says how to go on, without waiting out a second window to mark its running
    trials (one try; --resume marks them too); what was recorded before stays; once the server
    answers, --resume brings the study to the trials asked for, every one recorded once."""
    from tests.conftest import SPACES, Background, segtune

    db = make_url(pg_url).database
    args = [
        "run",
        str(SPACES / "demo.yaml"),
        "--storage",
        pg_url,
        "--study",
        "outage",
        "--set",
        "dataset={name: synthetic, num_images: 32, image_size: 32}",
        "--set",
        "search.trials=6",
        "--set",
        "search.max_epochs=3",
        "--set",
        "search.grace_period=1",
        "--set",
        "space={arch: SmallUNet, lr: {loguniform: [1.0e-3, 1.0e-2]}, batch_size: 4}",
        "--set",
        "search.starting_points=[]",
        "--set",
        f"results_dir={tmp_path / 'runs'}",
    ]
    window = {"SEGTUNE_STORE_RETRY_S": "6"}  # the store's retry window: 6 s instead of 30
    run = Background(*args, cwd=tmp_path, env=window)
    with _admin(pg_url) as admin:
        try:
            run.wait_for(" after ")  # a trial has ended ...
            deadline = time.monotonic() + 60
            while not _finished(pg_url, "outage"):  # ... and its end is in the store
                assert time.monotonic() < deadline, run.output
                time.sleep(0.1)
            admin.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
            _kill_segtune_connections(admin, db)
            rc = run.wait(timeout=300)
        finally:
            admin.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
            run.kill()
    assert rc == 75, run.output
    assert "study store unreachable: stopping the search" in run.output
    waited = int(run.output.split("the study store did not answer for ", 1)[1].split(" s", 1)[0])
    assert 6 <= waited < 15, run.output  # the window it was given: 0.2 + 0.5 + 1 + 2 + 4 s of waits, and the tries
    assert "Run the same command with --resume once the store answers" in run.output
    after = run.output.split("study store unreachable: stopping the search", 1)[1]
    assert "; try 2 in" not in after, f"it waited out a second retry window before exiting: {after[-2000:]}"
    assert "Traceback" not in run.output
    assert _finished(pg_url, "outage"), "what ended before the outage was kept"
    assert len(_finished(pg_url, "outage")) < 6, "it stopped"

    proc = segtune(*args, "--resume", cwd=tmp_path, env=window)
    assert "Traceback" not in proc.stderr
    finished = _finished(pg_url, "outage")
    assert len(finished) == 6, proc.stdout[-3000:]
    for t in finished:
        assert sorted(t.intermediate_values) == list(range(1, t.user_attrs["epochs_run"] + 1)), t.user_attrs
        assert len(t.user_attrs["epoch_seconds"]) == t.user_attrs["epochs_run"]


def test_tunes_noise_is_hidden_for_a_run_and_its_own_errors_show() -> None:
    """During a run, Tune's tracebacks of failed trials (segtune prints their reasons and stores them) are not shown;
    Tune's other errors are, a failed copy of its experiment snapshot included (its cause is gone: README, "Tune's
    experiment snapshot"); after the run, Tune's loggers are at their own levels again."""
    import logging

    from ray.tune.execution import experiment_state, tune_controller

    from segtune.search.nodes.cluster import tune_environment

    shown: list[logging.LogRecord] = []
    catch = logging.Handler()
    catch.emit = shown.append  # type: ignore[method-assign]
    ray_logs = logging.getLogger("ray")  # where Ray's records go (it keeps them from the root logger)
    ray_logs.addHandler(catch)
    before = {n: logging.getLogger(n).level for n in ("ray.tune", "ray.tune.execution.tune_controller")}
    try:
        with tune_environment():
            tune_controller.logger.error("Trial trial_0001: Error happened when processing")
            experiment_state.logger.error("Saving experiment state to storage failed with exception: ")
            logging.getLogger("ray.tune.search").error("a searcher error")
    finally:
        ray_logs.removeHandler(catch)
    assert [r.getMessage() for r in shown] == [
        "Saving experiment state to storage failed with exception: ",
        "a searcher error",
    ]
    assert {n: logging.getLogger(n).level for n in before} == before
