"""A person's list as the search's prior (issue 40): the list races, judged among itself at its own milestone once its
members' values mean something, the budget it frees goes near the incumbent and to the model, and paused trials are
told to the model as what they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from segtune import space
from segtune import spec as spec_mod
from segtune.search import store
from segtune.search.scheduling import defaults
from segtune.search.scheduling.replay import CurveTable, Strategy, replay
from segtune.search.scheduling.rungs import Rungs
from segtune.search.scheduling.searcher import DRAWN, STARTING_POINT, incumbent
from segtune.search.store.budget import Budget

from .conftest import REPO, segtune

CURVES = REPO / "benchmarks" / "curves"
TABLES = [CURVES / "pets_sample_64px.jsonl.gz", CURVES / "kvasir_seg_64px_30ep.jsonl.gz"]


# A list of three on 20 epochs, shaped as CamVid's real picks were (README, Benchmarks): the usual pick and FPN start
# fast and flatten, Dice + Focal starts slowest and ends best (it stood last at epoch 9 of every CamVid search)
FAST = [0.10 + 0.2 * (1 - 0.7**e) for e in range(1, 21)]  # 0.16 at epoch 1, 0.30 at 20
FASTER = [0.12 + 0.2 * (1 - 0.6**e) for e in range(1, 21)]  # 0.20 at epoch 1, 0.32 at 20
SLOW = [0.42 * (1 - 0.88**e) for e in range(1, 21)]  # 0.05 at 1, 0.29 at 9 (last), 0.35 at 14 (first)


def test_a_raced_list_is_judged_together_two_thirds_of_the_way_and_its_slow_starter_goes_on() -> None:
    """One slot, the list run in order: no member is judged before the list's milestone (two thirds of 20 epochs:
    14), though rungs 1, 3 and 9 come before it; there the first two wait, paused, until the third has its value;
    then the slow starter, last at epoch 9 but first at 14, runs on, and the other two stay paused. Judged at the
    rung nearest a third (epoch 9, the rule before), the slow starter was the one let go."""
    rungs = Rungs(20, 1, 3, min_first_rung=3, promote=True)
    rungs.prior |= {0, 1, 2}
    assert rungs.milestones() == [1, 3, 9] and rungs.list_milestone() == 14
    assert SLOW[8] < min(FAST[8], FASTER[8]) and SLOW[13] > max(FAST[13], FASTER[13])
    for key, curve in ((0, FAST), (1, FASTER)):
        for epoch, value in enumerate(curve[:13], start=1):
            assert not rungs.stop(key, epoch, value), f"member {key} stopped at epoch {epoch}, before its milestone"
        assert rungs.stop(key, 14, curve[13]), "a member that reaches the list's milestone first waits for the list"
        assert rungs.promote_one() is None, "nobody runs on before the whole list has a value there"
    for epoch, value in enumerate(SLOW[:13], start=1):
        assert not rungs.stop(2, epoch, value)
    assert not rungs.stop(2, 14, SLOW[13]), "the list's best at epoch 14 runs on"
    assert set(rungs.paused) == {0, 1} and rungs.promote_one() is None  # below the list's top third: they stay paused
    assert rungs.owed() == 0  # neither will go on: an exact budget holds nothing for them


def test_the_list_is_judged_by_each_member_s_best_value_so_far() -> None:
    """CamVid, paired seed 2 (README, Benchmarks): the usual pick validated 0.3485 at epoch 12 (its best epoch, the
    model a trial keeps) and 0.3024 at epoch 14, the list's milestone; Dice + Focal 0.3246 at 14, its best so far.
    Ranked by the value at 14, the list let the usual pick go and delivered 0.3246; ranked by what each member's
    model is, the usual pick goes on (the hand-pick arm's val-best, 0.3485)."""
    usual = [0.30] * 11 + [0.3485, 0.33, 0.3024]
    dice_focal = [0.25] * 13 + [0.3246]
    fpn = [0.28] * 13 + [0.2982]
    rungs = Rungs(20, 1, 3, min_first_rung=3, promote=True)
    rungs.prior |= {0, 1, 2}
    for key, curve in ((0, usual), (1, dice_focal), (2, fpn)):
        stops = [rungs.stop(key, epoch, value) for epoch, value in enumerate(curve, start=1)]
        assert not any(stops[:13]), key
    assert rungs.promote_one() == (0, 14), "the member whose model is best runs on"
    assert set(rungs.paused) == {1, 2}


def test_a_member_that_fails_or_ends_short_no_longer_holds_the_list_up() -> None:
    rungs = Rungs(9, 1, 3, min_first_rung=1, promote=True)
    rungs.prior |= {0, 1, 2}
    assert rungs.list_milestone() == 6
    assert rungs.stop(0, 6, 0.5)  # waits for members 1 and 2
    rungs.leave(1)  # member 1 failed before epoch 6
    assert rungs.promote_one() is None, "member 2 has no value there yet"
    rungs.ended(2)  # member 2's schedule ended before epoch 6 (an exact budget's last epochs)
    assert rungs.promote_one() == (0, 6), "with nobody left to wait for, the list's best runs on"


def test_an_exact_budget_keeps_what_the_list_s_chosen_members_need_to_finish() -> None:
    """A list of 4 on 20 epochs, 80 trial-epochs: two members go on from epoch 14 (ceil(4 / 3)). Members 0-2 wait
    paused there while member 3 trains to it and a new trial takes the other slot. The new trial gets only what the two
    chosen members will not need (6 epochs, not 18), so when member 3 arrives last and is not chosen, both chosen ones
    are promoted and finish. Without the hold the new trial took 18, and only one of the two could go on."""
    rungs = Rungs(20, 1, 3, min_first_rung=3, promote=True)
    rungs.prior |= {0, 1, 2, 3}
    budget = Budget(80, rule="exact", max_epochs=20, held=rungs.owed)
    for key, curve in ((0, SLOW), (1, FASTER), (2, FAST)):
        assert budget.start(key) == 20
        for epoch, value in enumerate(curve[:14], start=1):
            budget.epoch(key)
            assert not rungs.stop(key, epoch, value) or epoch == 14
        budget.end(key)  # paused at 14: waiting for member 3
    assert budget.start(3) == 20
    assert budget.start(4) == 80 - 42 - 20 - 12, "the new trial leaves the 2 x 6 epochs the chosen members need"
    for epoch in range(1, 15):
        budget.epoch(3)
        stopped = rungs.stop(3, epoch, 0.25)
    assert stopped, "member 3 is below the list's top two"
    budget.end(3)
    for _ in range(6):
        budget.epoch(4)
    budget.end(4)
    assert rungs.promote_one() == (0, 14) and budget.resume(0, 6)
    assert rungs.promote_one() == (1, 14) and budget.resume(1, 6), "the list's second choice finishes too"
    assert rungs.promote_one() is None and rungs.owed() == 0


def test_a_member_the_list_let_go_on_that_fails_is_replaced() -> None:
    """A list of 4 (two go on): one of the two chosen fails after the milestone; the third best, paused, takes its
    place (the number that goes on is counted on the list as given, not on who is left)."""
    rungs = Rungs(20, 1, 3, min_first_rung=3, promote=True)
    rungs.prior |= {0, 1, 2, 3}
    for key, value in ((0, 0.40), (1, 0.38), (2, 0.36), (3, 0.30)):
        rungs.stop(key, 14, value)
    assert {rungs.promote_one()[0], rungs.promote_one()[0]} == {0, 1} and rungs.promote_one() is None
    rungs.leave(1)  # failed at epoch 16
    assert rungs.promote_one() == (2, 14)


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.name.split("_")[0])
def test_the_raced_list_reaches_the_best_hand_pick_sooner_than_running_it_whole(path: Path) -> None:
    """Replayed on both recorded tables with their hand picks as the prior: the trial-epochs until a complete trial
    reaches the best hand pick's final value. On one slot the race gets there at its own cost, the list's members to
    its milestone and the best of them on to the end (7/9 of the list at two thirds): the best pick is the one that
    goes on, on every seed. On two slots (the other slot trains beside it, and its epochs count) sooner than running
    the list whole first, which costs more than the list itself (its best pick is its last). README: replay --prior."""
    table = CurveTable.load(path)
    hand = max(c.final(table.max_epochs) or 0 for c in table.hand_picks())
    k, e = len(table.hand_picks()), table.max_epochs
    m = Rungs(e, 1, 3).list_milestone()
    spent = {}
    for prior, slots in (("race", 1), ("first", 2), ("race", 2)):
        strategy = Strategy(prior, starting_points=True, prior=prior, near_incumbent=0.0)
        reached = [replay(table, strategy, seed=s, budget_epochs=16 * e, slots=slots).epochs_to(hand) for s in range(5)]
        assert all(r is not None for r in reached), (prior, slots)
        spent[prior, slots] = reached
    assert spent["race", 1] == [k * m + e - m] * 5, spent
    assert np.median(spent["race", 2]) < np.median(spent["first", 2]), spent
    assert np.median(spent["first", 2]) > k * e, spent


def test_the_model_takes_paused_trials_for_neither_running_nor_finished_ones(tmp_path: Path) -> None:
    """Ten trials paused at x = 0.7..0.9 (RUNNING in the store, as promotion needs them) and ten pruned near x = 0.2.
    TPE with its constant liar files the paused ones among the worst; segtune's sampler leaves them out until they
    end, so it draws what it draws from the pruned ones alone (told as PRUNED at their rung, TPE did worse in the
    replay: README)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    rng = np.random.default_rng(0)
    study = optuna.create_study(storage=url, direction="maximize", study_name="p")
    for x in rng.uniform(0.1, 0.3, 10):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": x}, distributions=dist, intermediate_values={1: 0.2}, state=TrialState.PRUNED
            )
        )
    only_pruned = optuna.create_study(storage=url, direction="maximize", study_name="q")
    only_pruned.add_trials(study.trials)
    for x in np.linspace(0.7, 0.9, 10):
        study.enqueue_trial({"x": float(x)})
        t = study.ask(dist)
        t.report(0.5 + float(x) - 0.7, step=1)
        t.set_user_attr(store.PAUSED, True)

    def draws(name: str, sampler: optuna.samplers.BaseSampler) -> list[float]:
        s = optuna.load_study(study_name=name, storage=url, sampler=sampler)
        xs = []
        for _ in range(12):
            t = s.ask(dist)
            xs.append(t.params["x"])
            s.tell(t, state=TrialState.FAIL)  # leaves the paused and pruned as they were
        return xs

    def tpe() -> optuna.samplers.TPESampler:
        return optuna.samplers.TPESampler(seed=1, n_startup_trials=5, constant_liar=True, multivariate=True)

    seen = draws("p", store.PausedAwareSampler(tpe()))
    alone = draws("q", tpe())  # the same pruned trials and nothing else
    lied = draws("p", tpe())
    assert seen == pytest.approx(alone), (seen, alone)
    assert not np.allclose(lied, seen, atol=0.05), (lied, seen)


def test_a_neighbour_changes_one_or_two_searched_parameters_and_stays_in_the_space() -> None:
    """Drawn for many seeds on the space `init` writes for a rare class (conditional Tversky alpha and class weights):
    every neighbour lies inside the space (starting_point_params accepts it), differs from the incumbent in one or
    two searched values, and keeps no parameter whose condition it no longer meets."""
    raw = {
        "arch": {"choice": ["Unet", "FPN", "DeepLabV3Plus"]},
        "encoder": {"choice": ["resnet34", "efficientnet-b0"]},
        "loss": {"choice": ["ce", "dice", "tversky", "dice+focal"]},
        "tversky_alpha": {"uniform": [0.3, 0.7], "when": {"loss": "tversky"}},
        "class_weights": {"choice": [None, "median_frequency"], "when": {"loss": "ce"}},
        "lr": {"loguniform": [1.0e-4, 3.0e-3]},
        "batch_size": 8,
    }
    params = space.parse_space(raw)
    point = {"arch": "Unet", "encoder": "resnet34", "loss": "tversky", "tversky_alpha": 0.5, "lr": 1e-3}
    rng = np.random.default_rng(7)
    changed_counts = set()
    for _ in range(300):
        near = space.perturb(params, point, rng)
        space.starting_point_params(params, near, 3, "near")  # inside the space, or a SpecError
        shared = set(near) & set(point)
        changed = {k for k in shared if near[k] != point[k]} | (set(point) - set(near)) | (set(near) - set(point))
        changed -= {"tversky_alpha", "class_weights"} if near.get("loss") != point["loss"] else set()
        assert 1 <= len(changed) <= 2, (near, changed)
        changed_counts.add(len(changed))
        if near.get("loss") != "tversky":
            assert "tversky_alpha" not in near
        assert 1e-4 <= near["lr"] <= 3e-3
    assert changed_counts == {1, 2}


def test_the_model_s_trials_go_near_the_incumbent_at_the_share_asked() -> None:
    """Replayed with the hand picks as the prior: at near_incumbent 1 every trial after the list is one or two
    parameters from the incumbent of its moment and says which trial that was; at 0 none is."""
    table = CurveTable.load(TABLES[0])
    for share in (1.0, 0.0):
        storage = optuna.storages.InMemoryStorage()
        strategy = Strategy("near", starting_points=True, prior="race", near_incumbent=share)
        result = replay(table, strategy, seed=0, budget_epochs=48, storage=storage)
        trials = optuna.load_study(study_name=result.study_name, storage=storage).trials
        listed = [t for t in trials if t.user_attrs.get(STARTING_POINT)]
        after = [t for t in trials if not t.user_attrs.get(STARTING_POINT)]
        assert len(listed) == 3 and after
        drawn = [t for t in after if t.user_attrs.get(DRAWN)]
        if share == 0.0:
            assert not drawn
            continue
        assert len(drawn) == len(after)
        for t in drawn:
            source = trials[int(t.user_attrs[DRAWN].removeprefix("near trial "))]
            differ = {k for k in t.params if source.params.get(k) != t.params[k]}
            assert 1 <= len(differ) <= 3, differ  # one or two changed, and a conditional one redrawn at most


def test_the_incumbent_is_the_best_at_the_deepest_level_reached() -> None:
    study = optuna.create_study(direction="maximize")
    for values in ({1: 0.9}, {1: 0.5, 2: 0.55, 3: 0.6}, {1: 0.4, 2: 0.5, 3: 0.58, 4: 0.7}):
        t = study.ask()
        for e, v in values.items():
            t.report(v, step=e)
    trials = study.get_trials()
    assert incumbent(trials, [1, 3], 9).number == 1  # deepest level: epoch 3 (0.60 beats 0.58 there)
    assert incumbent(trials[:1], [1, 3], 9).number == 0


def test_a_list_of_two_or_more_races_and_one_point_runs_first() -> None:
    point = {"arch": "Unet"}
    data, arch = {"name": "synthetic"}, {"arch": {"choice": ["Unet", "FPN"]}}
    one = spec_mod.validate(
        {"study": "s", "dataset": data, "space": arch, "search": {"starting_points": [point]}}
    ).search
    two = spec_mod.validate(
        {"study": "s", "dataset": data, "space": arch, "search": {"starting_points": [point, {"arch": "FPN"}]}}
    ).search
    assert defaults.resolve(one).prior == "first" and defaults.resolve(one).near_incumbent == 0.0
    assert defaults.resolve(two).prior == "race" and defaults.resolve(two).near_incumbent > 0
    written = spec_mod.validate(
        {
            "study": "s",
            "dataset": data,
            "space": arch,
            "search": {"starting_points": [point, point], "prior": "first", "near_incumbent": 0.25},
        }
    ).search
    assert (defaults.resolve(written).prior, defaults.resolve(written).near_incumbent) == ("first", 0.25)


@pytest.mark.parametrize(("field", "value"), [("near_incumbent", "1.5"), ("near_incumbent", "nan"), ("prior", "all")])
def test_a_bad_prior_setting_is_exit_2_naming_the_field(field: str, value: str, tmp_path: Path) -> None:
    proc = segtune(
        "check",
        str(REPO / "search_spaces" / "demo.yaml"),
        "--spec-only",
        "--set",
        f"search.{field}={value}",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"search.{field}" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.name.split("_")[0])
def test_at_the_list_s_own_compute_the_epochs_the_race_frees_finish_the_list(path: Path) -> None:
    """Replayed on both recorded tables, the hand picks as the prior, an exact budget of K runs (what a person would
    spend on the list): the epochs the race frees finish the members it paused, and the search delivers the whole
    list, every member complete at every epoch. Before, they went to new trials on schedules the budget cut short
    (1-9 epochs of 30: models no ensemble and no person wants) and two members of three ended paused."""
    table = CurveTable.load(path)
    k, e = len(table.hand_picks()), table.max_epochs
    strategy = Strategy("race", starting_points=True, prior="race", budget_rule="exact")
    for slots, seed in ((1, 0), (2, 0), (2, 1)):
        storage = optuna.storages.InMemoryStorage()
        result = replay(table, strategy, seed=seed, budget_epochs=k * e, slots=slots, storage=storage)
        trials = optuna.load_study(study_name=result.study_name, storage=storage).trials
        assert result.epochs == k * e, (slots, seed)
        assert [(t.state, len(t.intermediate_values)) for t in trials] == [(TrialState.COMPLETE, e)] * k, (slots, seed)


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.name.split("_")[0])
def test_with_room_to_explore_new_trials_still_run_whole_schedules(path: Path) -> None:
    """Twice the list's compute: the freed epochs go to new configurations first (whole schedules, some run to the
    end), and only what is left at the budget's end, too little for a whole schedule, finishes paused trials."""
    table = CurveTable.load(path)
    k, e = len(table.hand_picks()), table.max_epochs
    strategy = Strategy("race", starting_points=True, prior="race", budget_rule="exact")
    storage = optuna.storages.InMemoryStorage()
    result = replay(table, strategy, seed=0, budget_epochs=2 * k * e, slots=2, storage=storage)
    new = optuna.load_study(study_name=result.study_name, storage=storage).trials[k:]
    assert result.epochs == 2 * k * e
    assert any(t.state == TrialState.COMPLETE and len(t.intermediate_values) == e for t in new)
    assert sum("epochs_planned" in t.user_attrs for t in new) <= 1, "one schedule cut short at most: the last"


def test_the_end_of_an_exact_budget_finishes_the_most_promising_paused_trial_that_fits() -> None:
    """What is left (8 epochs of 20) cannot give a new trial a whole schedule; of the paused trials the highest rung's
    best whose rest fits goes on: not a list member still waiting for the list's judgement, not a trial paused lower
    than such a member ranks while the member's rest fits (the judgement first), and not one whose rest is longer
    than what is left."""
    rungs = Rungs(20, 1, 3, min_first_rung=1, promote=True)
    rungs.prior |= {0, 1, 2}
    for key, value in ((0, 0.40), (1, 0.38)):  # two list members wait at 14 for member 2
        assert rungs.stop(key, 14, value)
    rungs.stop(5, 1, 0.30), rungs.stop(6, 1, 0.10)  # two trials at rung 1: 6 pauses there
    rungs.stop(5, 3, 0.31), rungs.stop(7, 3, 0.20)  # and two at rung 3: 7 pauses there
    assert set(rungs.paused) == {0, 1, 6, 7}
    rest = lambda key, epoch: 20 - epoch  # noqa: E731
    assert rungs.list_may_finish(rest, 8), "the list's members, once judged, could use what is left"
    assert rungs.finish_one(rest, 8) is None, "the waiting members are not taken; 6 and 7 need 19 and 17"
    # 7 fits in 17, but it is paused at rung 3 and the members, whose rest fits too, rank at rung 9's level: the
    # list's judgement is a running trial away (Kvasir-SEG K = 10 seed 3 finished a trial paused at rung 1 there)
    assert rungs.finish_one(rest, 17) is None and 7 in rungs.paused
    short = lambda key, epoch: 4 if key == 6 else 20 - epoch  # noqa: E731
    assert rungs.finish_one(short, 5) == (6, 1), "no member's rest fits in 5: nothing to wait for"
    # nothing runs that could bring the judgement, or a queued trial goes first (the searcher's view): no waiting
    assert rungs.finish_one(rest, 17, judgement_near=lambda: False) == (7, 3)
    rungs.stop(2, 14, 0.20)  # the list is judged: member 0 goes on, 1 and 2 stay paused
    assert rungs.promote_one() == (0, 14) and rungs.promote_one() is None
    assert not rungs.list_may_finish(rest, 8)
    assert rungs.finish_one(rest, 8) == (1, 14), "the list's second best: rung 9's level, the best value there"
    assert rungs.finish_one(rest, 6) == (2, 14) and rungs.finish_one(rest, 100) is None
    # a finished trial runs to its end: resumed from an earlier epoch's state it reports the list's milestone again
    # (the e2e run: judged there a second time it paused again and ended PRUNED), and no later rung stops it
    assert not rungs.stop(2, 14, 0.20) and not rungs.stop(6, 3, 0.0) and not rungs.stop(6, 9, 0.3)
    assert not rungs.paused
    rungs.stop(8, 9, 0.1)  # no real caller asks so (they pass planned=9): a cut trial paused at its last epoch
    assert rungs.paused[8] == (0, 2, 9)
    planned = lambda key, epoch: (9 if key == 8 else 20) - epoch  # noqa: E731
    assert rungs.finish_one(planned, 100) is None, "a trial at the end of its own schedule has nothing to finish"


def test_a_member_that_goes_on_from_a_saved_state_is_judged_on_all_its_epochs() -> None:
    """--resume: a member's values up to epoch 12 are in the store (its best, 0.35, at 12); it goes on from its state
    and reaches the list's milestone at 0.30. Judged on the epochs this run saw, it ranked below a member at 0.32;
    on all of them it goes on."""
    rungs = Rungs(20, 1, 3, min_first_rung=1, promote=True)
    rungs.prior |= {0, 1}
    rungs.record(0, {e: (0.35 if e == 12 else 0.25) for e in range(1, 13)})
    assert rungs.stop(1, 14, 0.32), "member 1 waits for member 0"
    assert not rungs.stop(0, 13, 0.28)
    assert not rungs.stop(0, 14, 0.30), "its best so far, 0.35 at epoch 12, ranks it first"
    assert rungs.promote_one() is None and 1 in rungs.paused


def test_a_schedule_cut_short_ends_at_its_last_epoch_and_is_never_paused_there() -> None:
    """A trial whose schedule the budget cut to 9 epochs, below the others at rung 9: that epoch is its last, so it
    ends there (recorded at the rung, the bar for others), and is not paused with nothing left to train (Kvasir-SEG
    K = 10, seed 0: a 1-epoch trial paused at its only epoch was later "promoted" and ran that epoch again)."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from segtune.search.ray_trials import EPOCHS_KEY, TRIAL_KEY
    from segtune.search.scheduling.rungs import RungScheduler

    rungs = Rungs(20, 1, 3, min_first_rung=1, promote=True)
    scheduler = RungScheduler(rungs, "val_miou", trial_key=TRIAL_KEY)
    whole, cut = SimpleNamespace(config={TRIAL_KEY: 0}), SimpleNamespace(config={TRIAL_KEY: 1, EPOCHS_KEY: 9})
    for epoch in range(1, 10):
        assert scheduler.on_trial_result(None, whole, {"epoch": epoch, "val_miou": 0.5}) == TrialScheduler.CONTINUE
    for epoch in range(1, 9):
        assert scheduler.on_trial_result(None, cut, {"epoch": epoch, "val_miou": 0.6}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, cut, {"epoch": 9, "val_miou": 0.1}) == TrialScheduler.CONTINUE
    assert 1 not in rungs.paused and rungs._recorded[0][2][1] == 0.1  # ends here; its value is the bar at rung 9
    late = SimpleNamespace(config={TRIAL_KEY: 2})
    for epoch in range(1, 9):
        scheduler.on_trial_result(None, late, {"epoch": epoch, "val_miou": 0.6})
    assert scheduler.on_trial_result(None, late, {"epoch": 9, "val_miou": 0.05}) == TrialScheduler.STOP, "others pause"
