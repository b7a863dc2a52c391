"""`segtune run --resume`: continue a study whose driver died (SIGKILL, a lost node, a reboot).

The store is the only state: no Tune experiment is restored. A trial a rung had paused stays paused, in the new
run, from the state it left on the driver's disk (later results may promote it, as in the run that died); the other
trials the dead driver left RUNNING are marked FAIL with the reason, trials cut short by an interruption are queued
again with the same parameters (the new trial records ``retry_of``), and the search runs until the study holds the
number of trials the spec asks for.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from segtune.search import store
from segtune.search.nodes.keeper import latest_state

INTERRUPTED = "interrupted"
FINISHING = "finished_at_budget_end"  # user attr of a paused trial the exact budget's end finishes (Rungs.finish_one);
# its --resume re-run carries it: finished, it is not judged at a rung again
ADOPTED = "adopted_state"  # user attr of a paused trial a --resume kept paused: the state it goes on from if promoted


def driver_alive(trial: FrozenTrial) -> bool:
    """True when the trial's driver is a live process on this host. A driver on another host
    cannot be seen from here: --resume assumes the study has no other live driver there."""
    attrs = trial.user_attrs
    if attrs.get("driver_host") != socket.gethostname() or not attrs.get("driver_pid"):
        return False
    try:
        os.kill(int(attrs["driver_pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return int(attrs["driver_pid"]) != os.getpid()


def counted(trial: FrozenTrial) -> bool:
    """A trial that ran to its own outcome: complete, pruned, or failed by its own error
    (not one interrupted, nor a pairing smp cannot build, which never ran)."""
    if "ray_trial_id" not in trial.user_attrs and trial.state != TrialState.COMPLETE:
        return False
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    reason = str(trial.user_attrs.get("fail_reason", ""))
    return trial.state == TrialState.FAIL and not reason.startswith((INTERRUPTED, "stopped"))


def newest_state(trial: FrozenTrial) -> tuple[int, Path] | None:
    """The newest resumable state the trial left on this driver's disk (search/nodes/keeper.py), if any."""
    folder = trial.user_attrs.get("state_folder")
    return latest_state(Path(folder), trial.number) if folder and Path(folder).is_dir() else None


def orphans(study: optuna.Study) -> list[FrozenTrial]:
    """RUNNING trials whose driver is gone."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if not driver_alive(t)]


def adopt_paused(study: optuna.Study, trial: FrozenTrial, run_id: str, out: Any) -> bool:
    """A dead driver's paused trial stays paused, now in run ``run_id`` (its state on this driver's disk); False when
    it left no state to go on from (it is then an orphan like the others)."""
    state = newest_state(trial)
    if not trial.user_attrs.get(store.PAUSED) or state is None:
        return False
    handle = store.trial_handle(study, trial.number)
    handle.set_user_attr("run_id", run_id)  # this run ends it (PRUNED) if nothing promotes it
    handle.set_user_attr("driver_host", socket.gethostname())
    handle.set_user_attr("driver_pid", os.getpid())
    handle.set_user_attr(ADOPTED, str(state[1]))
    print(
        f"trial {trial.number}: paused under a driver that is gone; stays paused (its state after epoch {state[0]}): "
        "later results may promote it",
        file=out,
    )
    return True


def prepare_resume(study: optuna.Study, target: int, run_id: str, out: Any) -> int:
    """Keep a dead driver's paused trials paused in run ``run_id``, mark its other orphans FAIL, queue interrupted
    trials again; return how many trials are still to run."""
    adopted = 0
    for t in orphans(study):
        if adopt_paused(study, t, run_id, out):
            adopted += 1
            continue
        where = f"{t.user_attrs.get('driver_host', '?')}:{t.user_attrs.get('driver_pid', '?')}"
        store.fail_trial(study, t, f"{INTERRUPTED}: its driver ({where}) died before the trial ended")
        print(f"trial {t.number}: was RUNNING under a driver that is gone; marked FAIL (interrupted)", file=out)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    done = sum(counted(t) for t in trials) + adopted  # a paused trial ends in this run, promoted or pruned
    remaining = max(0, target - done)
    requeue = [
        t
        for t in trials
        if t.state == TrialState.FAIL
        and str(t.user_attrs.get("fail_reason", "")).startswith(INTERRUPTED)
        and t.number not in retried
        and "ray_trial_id" in t.user_attrs
    ][: max(0, remaining - waiting)]
    for t in requeue:
        attrs: dict[str, Any] = {"retry_of": t.number}
        if t.user_attrs.get(FINISHING):
            attrs[FINISHING] = True
        state = newest_state(t)
        if state is not None:  # it goes on from there, its earlier epochs' values carried over
            attrs["resume_from"] = {"path": str(state[1]), "epoch": state[0]}
        study.enqueue_trial(t.params, user_attrs=attrs, skip_if_exists=False)
        how = f"from its state after epoch {state[0]}" if state else "with the same parameters"
        print(f"trial {t.number}: interrupted; queued again {how}", file=out)
    print(
        f"resume: {done} of {target} trials finished; {remaining} to run"
        + (f" ({len(requeue) + waiting} of them re-runs of interrupted trials)" if requeue or waiting else ""),
        file=out,
        flush=True,
    )
    return remaining
