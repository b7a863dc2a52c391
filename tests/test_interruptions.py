"""Real interruptions of a real search: Ctrl-C on the driver (once, twice), SIGKILL of a trial's process,
two searches and a dashboard on one SQLite file. After each, the store opens, finished trials are
intact and no trial is left RUNNING."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import Background, demo_args, segtune
from tests.test_inspect_export_retrain import free_port

pytestmark = pytest.mark.e2e
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def trials(tmp: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="e2e", storage=f"sqlite:///{tmp / 'store.db'}").trials


def assert_finished_trials_intact(ts: list[optuna.trial.FrozenTrial]) -> None:
    for t in ts:
        if t.state in FINISHED:
            assert t.value is not None and len(t.intermediate_values) == t.user_attrs["epochs_run"] >= 1


def test_ctrl_c_stops_cleanly_and_running_trials_end_fail_interrupted(tmp_path: Path) -> None:
    run = Background(*demo_args(tmp_path, trials=12, epochs=6, one_at_a_time=True), cwd=tmp_path)
    try:
        run.wait_for(" after ")  # a trial has finished (complete or pruned) ...
        run.wait_for("running", timeout=60)
        time.sleep(3)  # ... and the next ones are training
        run.proc.send_signal(signal.SIGINT)
        rc = run.wait(timeout=120)
    finally:
        run.kill()
    assert rc == 130, run.output
    assert "SIGINT: stopping; running trials end as FAIL (interrupted)" in run.output
    assert "segtune: interrupted by SIGINT" in run.output and "finished trials are kept" in run.output
    ts = trials(tmp_path)
    assert TrialState.RUNNING not in {t.state for t in ts}
    assert any(t.state in FINISHED for t in ts)
    assert_finished_trials_intact(ts)
    interrupted = [t for t in ts if t.state == TrialState.FAIL]
    assert interrupted, "a trial was training when Ctrl-C came"
    for t in interrupted:
        assert t.user_attrs["fail_reason"].startswith("interrupted: SIGINT stopped the search")
    assert len(ts) < 12  # it did stop


def test_a_second_ctrl_c_quits_at_once_and_still_leaves_nothing_running(tmp_path: Path) -> None:
    run = Background(*demo_args(tmp_path, trials=6, epochs=6, one_at_a_time=True), cwd=tmp_path)
    try:
        run.wait_for("trial 0 started")
        time.sleep(2)
        run.proc.send_signal(signal.SIGINT)
        run.wait_for("SIGINT: stopping", timeout=30)  # the second comes as soon as the first is taken
        second = time.monotonic()
        run.proc.send_signal(signal.SIGINT)
        rc = run.wait(timeout=60)
        quit_after = time.monotonic() - second
    finally:
        run.kill()
    # while the search stops ("interrupted twice"); when the stop was quicker than the second Ctrl-C, while the run
    # cleans up after giving the signal back (Python's KeyboardInterrupt: "segtune: interrupted"; CI hit this window
    # once) or while the command leaves Ray after its table: quitting at once every way, the store already marked
    quit_now = ("interrupted twice, quitting now", "interrupted while leaving Ray, quitting now")
    keyboard_interrupt = "segtune: interrupted" in [line.strip() for line in run.lines]  # not "... by SIGINT: ..."
    assert rc == 130 and (keyboard_interrupt or any(line in run.output for line in quit_now)), run.output
    assert quit_after < 10, quit_after
    ts = trials(tmp_path)
    assert ts and TrialState.RUNNING not in {t.state for t in ts}
    assert_finished_trials_intact(ts)


def test_a_trial_process_killed_mid_epoch_goes_on_from_its_state(tmp_path: Path) -> None:
    """Its worker process dies (the OOM killer, a kill -9): Tune runs the trial again, and it goes on from its newest
    state: one Optuna trial, one value per epoch, and the store says it restarted."""
    run = Background(
        *demo_args(tmp_path, trials=2, epochs=3, one_at_a_time=True), "--set", "search.scheduler=none", cwd=tmp_path
    )
    try:
        run.wait_for("trial 0 started")
        victim = None
        deadline = time.monotonic() + 600
        while victim is None:  # the store says where each running trial's process is, and when it saved a state
            assert run.proc.poll() is None and time.monotonic() < deadline, run.output
            running = [
                t
                for t in trials(tmp_path)
                if t.state == TrialState.RUNNING and t.user_attrs.get("worker_pid") and t.user_attrs.get("state_epoch")
            ]
            victim = running[0] if running else None
            time.sleep(0.3)
        os.kill(victim.user_attrs["worker_pid"], signal.SIGKILL)
        rc = run.wait(timeout=600)
    finally:
        run.kill()
    assert rc == 0, run.output
    ts = trials(tmp_path)
    resumed = next(t for t in ts if t.number == victim.number)
    assert resumed.state == TrialState.COMPLETE and resumed.user_attrs["restarts"] == 1, resumed.user_attrs
    assert sorted(resumed.intermediate_values) == [1, 2, 3]  # no epoch twice, none missing
    assert f"trial {victim.number}: its worker or node was lost" in run.output
    ran = [t for t in ts if "ray_trial_id" in t.user_attrs]
    assert len(ran) == 2 and all(t.state == TrialState.COMPLETE for t in ran)
    assert TrialState.RUNNING not in {t.state for t in ts}
    assert_finished_trials_intact(ts)


def test_two_searches_and_a_dashboard_share_one_sqlite_store(tmp_path: Path) -> None:
    """Two `segtune run` (each its own Ray cluster) add trials to one study while a dashboard polls it."""
    port = free_port()
    first = Background(*demo_args(tmp_path, trials=2, epochs=2, one_at_a_time=True), cwd=tmp_path)
    first.wait_for("trial 0 started")  # the study exists; the second search adds to it
    dash = Background("dashboard", "--storage", f"sqlite:///{tmp_path / 'store.db'}", "--port", str(port), cwd=tmp_path)
    second = Background(*demo_args(tmp_path, trials=2, epochs=2, one_at_a_time=True), cwd=tmp_path)
    polls = 0
    try:
        while first.proc.poll() is None or second.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as r:
                    polls += bool(json.loads(r.read())["study_summaries"])
            except OSError:
                pass  # the dashboard is still starting
            time.sleep(0.5)
        assert dash.proc.poll() is None, dash.output
        assert first.wait(60) == 0 and second.wait(60) == 0, first.output + second.output
    finally:
        for run in (first, second, dash):
            run.kill()
    assert polls > 5
    outputs = first.output + second.output + dash.output
    assert "locked" not in outputs and "Traceback" not in outputs
    ts = trials(tmp_path)
    ran = [t for t in ts if "ray_trial_id" in t.user_attrs]
    assert len(ran) == 4 and len({t.user_attrs["run_id"] for t in ran}) == 2
    assert sorted(t.number for t in ts) == list(range(len(ts)))
    assert all(t.state in FINISHED for t in ran)
    assert_finished_trials_intact(ts)


def test_resume_after_the_driver_is_killed_reaches_the_trials_asked_for(tmp_path: Path) -> None:
    epochs, asked = 6, 3
    args = [*demo_args(tmp_path, trials=asked, epochs=epochs, one_at_a_time=True), "--set", "search.scheduler=none"]
    run = Background(*args, cwd=tmp_path)

    def early_with_state(t: optuna.trial.FrozenTrial) -> bool:
        # a trial that saved a state and has epochs left: it is still running when the kill lands, however
        # slow the machine is to read the store (an epoch at 64 px takes about a second)
        saved = bool(t.user_attrs.get("state_epoch"))
        return t.state == TrialState.RUNNING and saved and t.user_attrs["epochs_run"] <= 3

    try:
        run.wait_for(f"1/{asked} done")  # the next has just started
        deadline = time.monotonic() + 600
        while not any(early_with_state(t) for t in trials(tmp_path)):
            assert run.proc.poll() is None and time.monotonic() < deadline, run.output  # a trial saved a state
            time.sleep(0.2)
        run.proc.kill()  # SIGKILL: no finally, no handler, nothing cleaned up
        run.wait(30)
    finally:
        run.kill()
    before = {t.number: t for t in trials(tmp_path)}
    orphaned = [n for n, t in before.items() if t.state == TrialState.RUNNING]
    assert orphaned, "the killed driver left its running trials RUNNING"
    assert any(before[n].user_attrs.get("state_epoch") for n in orphaned), "one of them had saved a state"

    proc = segtune(*args, "--resume", cwd=tmp_path)
    for n in orphaned:
        assert f"trial {n}: was RUNNING under a driver that is gone; marked FAIL (interrupted)" in proc.stdout
    ts = {t.number: t for t in trials(tmp_path)}
    for n, t in before.items():  # finished trials are kept as they were
        if t.state in FINISHED:
            assert (ts[n].state, ts[n].value, ts[n].intermediate_values) == (t.state, t.value, t.intermediate_values)
    for n in orphaned:
        assert ts[n].state == TrialState.FAIL
        assert ts[n].user_attrs["fail_reason"].startswith("interrupted: its driver")
        retry = next(t for t in ts.values() if t.user_attrs.get("retry_of") == n)  # re-run, recorded
        assert retry.params == ts[n].params and retry.state in FINISHED
        assert retry.user_attrs["seed"] == ts[n].user_attrs["seed"]  # it trains as the interrupted trial would have
        assert sorted(retry.intermediate_values) == list(range(1, epochs + 1))  # its curve is whole
        saved = retry.user_attrs.get("resume_from")
        if saved:  # it went on from the dead trial's state: the epochs before it are the dead trial's own values
            # (a state newer than the store's last write: the epochs the store missed come from the state's history,
            # tests/test_resumed_curve.py)
            stored = before[n].intermediate_values
            assert all(retry.intermediate_values[e] == stored[e] for e in range(1, saved["epoch"] + 1) if e in stored)
    assert any(t.user_attrs.get("resume_from") for t in ts.values()), "a re-run went on from a state"
    # its state's epoch comes once more by design (trainable.py); Optuna's complaint about it is not for the user
    assert "already reported" not in proc.stdout + proc.stderr
    finished = [t for t in ts.values() if t.state in FINISHED]
    assert len(finished) == asked and TrialState.RUNNING not in {t.state for t in ts.values()}
    again = segtune(*args, "--resume", cwd=tmp_path)  # nothing left to do
    assert f"already holds {asked} finished trials" in again.stdout and len(trials(tmp_path)) == len(ts)
