"""Promotion whole, through a real `segtune run` (issue 40): a person's list raced, a paused member promoted with its
curve whole, the exact budget kept, and a dead driver's paused trials kept paused by --resume."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from segtune.search.store.resume import FINISHING

from .conftest import ONE_AT_A_TIME, Background, demo_args, segtune

LIST = (
    "search.starting_points=["
    "{arch: Unet, encoder: resnet18, loss: ce, augment: flip, optimizer: adamw, lr: 1.0e-3, schedule: onecycle}, "
    "{arch: FPN, encoder: resnet18, loss: dice+focal, augment: flip, optimizer: adamw, lr: 3.0e-3, schedule: cosine}, "
    "{arch: Linknet, encoder: mobilenet_v2, loss: ce, augment: flip, optimizer: adam, lr: 1.0e-3, schedule: onecycle}]"
)


def trials(tmp: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="e2e", storage=f"sqlite:///{tmp / 'store.db'}").trials


def whole(t: optuna.trial.FrozenTrial) -> bool:
    """Its curve has one value per epoch it ran, none missing, and as many epoch timings."""
    epochs = int(t.user_attrs["epochs_run"])
    return sorted(t.intermediate_values) == list(range(1, epochs + 1)) and len(t.user_attrs["epoch_seconds"]) == epochs


def test_a_raced_list_promotes_its_best_member_whose_curve_is_whole_within_an_exact_budget(tmp_path: Path) -> None:
    """Three hand picks raced for 3 epochs a trial, 9 trial-epochs exactly, one trial at a time: the list is judged
    together after epoch 2, its milestone (two thirds of the epochs; the first two wait, paused, for the third), the
    best two (reduction factor 2) run on from their states with the epochs the budget held for them, the third is
    finished with what the race freed (no new trial could have a whole schedule), and the trial-epochs never pass the
    budget."""
    budget = 9
    args = [
        *demo_args(tmp_path, trials=20, epochs=3, one_at_a_time=True),
        "--set",
        LIST,
        "--set",
        f"search.budget_epochs={budget}",
        "--set",
        "search.budget_rule=exact",
    ]
    proc = segtune(*args, cwd=tmp_path)
    assert "starting points raced" in proc.stdout
    ts = trials(tmp_path)
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in ts), [t.state for t in ts]
    ran = sum(len(t.intermediate_values) for t in ts)
    assert ran == sum(int(t.user_attrs["epochs_run"]) for t in ts) and ran <= budget, ran
    promoted = [t for t in ts if "promoted_at_epoch" in t.user_attrs]
    assert promoted, proc.stdout[-3000:]
    assert any(f"trial {t.number} promoted" in proc.stdout for t in promoted)
    for t in promoted:
        assert t.user_attrs.get("starting_point") or t.number >= 3
        assert whole(t) and t.user_attrs["epochs_run"] > t.user_attrs["promoted_at_epoch"], t.user_attrs
    listed = [t for t in ts if t.user_attrs.get("starting_point")]
    assert len(listed) == 3 and all(whole(t) for t in ts)
    # the budget is the list's own (3 x 3): what the race freed finished the member it paused, so the search delivers
    # the whole list, not two members and a trial on a schedule cut to an epoch
    assert [(t.state, t.user_attrs["epochs_run"]) for t in listed] == [(TrialState.COMPLETE, 3)] * 3
    finished = [t for t in listed if t.user_attrs.get(FINISHING)]
    assert len(finished) == 1, proc.stdout[-4000:]  # the list's two choices promoted, the third finished
    for t in finished:
        assert f"trial {t.number} goes on from epoch 2: too few epochs left for a new trial" in proc.stdout
    assert len(ts) == 3 and ran == budget
    # a member judged before every member had its epoch-2 value would have run on alone: the first two waited
    assert sum(t.user_attrs.get("promoted_at_epoch") == 2 for t in listed) >= 1


def test_resume_keeps_a_dead_drivers_paused_trials_paused_and_promotable(tmp_path: Path) -> None:
    """The driver is killed (SIGKILL) once a list member waits paused with its state: --resume does not mark it FAIL
    nor queue it again; it stays paused in the new run, which ends it PRUNED or promotes it from the state the dead
    driver kept, its curve whole."""
    args = [*demo_args(tmp_path, trials=6, epochs=3), *ONE_AT_A_TIME, "--set", LIST]
    run = Background(*args, cwd=tmp_path)

    def paused_with_state() -> list[optuna.trial.FrozenTrial]:
        return [
            t
            for t in trials(tmp_path)
            if t.state == TrialState.RUNNING and t.user_attrs.get("paused") and t.user_attrs.get("state_epoch")
        ]

    try:
        run.wait_for("paused (later results may promote it)")
        deadline = time.monotonic() + 300
        while not paused_with_state():
            assert run.proc.poll() is None and time.monotonic() < deadline, run.output
            time.sleep(0.2)
        run.proc.kill()
        run.wait(30)
    finally:
        run.kill()
    before = {t.number: t for t in paused_with_state()}
    assert before
    proc = segtune(*args, "--resume", cwd=tmp_path)
    ts = {t.number: t for t in trials(tmp_path)}
    for n, t in before.items():
        assert f"trial {n}: paused under a driver that is gone; stays paused" in proc.stdout, proc.stdout[-3000:]
        assert f"trial {n}: was RUNNING" not in proc.stdout
        assert not any(x.user_attrs.get("retry_of") == n for x in ts.values()), "a paused trial is not run again"
        after = ts[n]
        assert after.state in (TrialState.COMPLETE, TrialState.PRUNED), after.state
        assert after.user_attrs["run_id"] != t.user_attrs["run_id"]  # the new run took it over and ended it
        assert whole(after)
        for epoch, value in t.intermediate_values.items():  # what the dead driver recorded stays as it was
            assert after.intermediate_values[epoch] == value
    assert TrialState.RUNNING not in {t.state for t in ts.values()}
