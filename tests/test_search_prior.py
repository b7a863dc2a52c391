"""A person's list as the search's prior (issue 40): the list races at the rungs once its members' values mean
something, the budget it frees goes near the incumbent and to the model, and paused trials are told to the model as
what they are."""

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

from .conftest import REPO, segtune

CURVES = REPO / "benchmarks" / "curves"
TABLES = [CURVES / "pets_sample_64px.jsonl.gz", CURVES / "kvasir_seg_64px_30ep.jsonl.gz"]
# Kvasir-SEG's three recorded hand picks, epochs 1-9 (benchmarks/curves): the pretrained encoder starts lowest
SLOW_STARTER = [0.34, 0.32, 0.38, 0.46, 0.52, 0.60, 0.57, 0.63, 0.59]
USUAL = [0.23, 0.33, 0.38, 0.47, 0.32, 0.52, 0.47, 0.53, 0.48]
DICE = [0.42, 0.46, 0.49, 0.54, 0.49, 0.48, 0.50, 0.48, 0.53]


def test_a_raced_list_is_judged_together_a_third_of_the_way_and_its_slow_starter_goes_on() -> None:
    """One slot, the list run in order: no member is judged before the milestone nearest a third of 30 epochs
    (epoch 9); there the first two wait, paused, until the third has its value; then the slow starter, best at epoch
    9 though worst at epoch 1, runs on, and the other two stay paused (promotable later)."""
    rungs = Rungs(30, 1, 3, min_first_rung=3, promote=True)
    rungs.prior |= {0, 1, 2}
    assert rungs.third() == 9
    for key, curve in ((0, USUAL), (1, DICE)):
        for epoch, value in enumerate(curve[:8], start=1):
            assert not rungs.stop(key, epoch, value), f"member {key} stopped at epoch {epoch}, before a third"
        assert rungs.stop(key, 9, curve[8]), "a member that reaches the judging rung first waits for the list"
        assert rungs.promote_one() is None, "nobody runs on before the whole list has a value there"
    for epoch, value in enumerate(SLOW_STARTER[:8], start=1):
        assert not rungs.stop(2, epoch, value)
    assert not rungs.stop(2, 9, SLOW_STARTER[8]), "the list's best at epoch 9 runs on"
    assert set(rungs.paused) == {0, 1} and rungs.promote_one() is None  # below the top third: they stay paused


def test_a_member_that_fails_no_longer_holds_the_list_up() -> None:
    rungs = Rungs(9, 1, 3, min_first_rung=1, promote=True)
    rungs.prior |= {0, 1}
    assert rungs.third() == 3
    assert rungs.stop(0, 3, 0.5)  # waits for member 1
    rungs.leave(1)  # member 1 failed before epoch 3
    assert rungs.promote_one() is None  # alone at the rung: nothing to rank it against yet
    assert not rungs.stop(2, 3, 0.4) or 2 in rungs.paused
    assert rungs.promote_one() == (0, 3), "with the failed member gone, the paused one is ranked and runs on"


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.name.split("_")[0])
def test_the_raced_list_reaches_the_best_hand_pick_sooner_than_running_it_whole(path: Path) -> None:
    """Replayed on both recorded tables with their hand picks as the prior, 2 slots: the trial-epochs until a complete
    trial reaches the best hand pick's final value. Run whole first (one starting point's rule) the list costs more
    than itself (the best pick is its last); raced, at most 0.9 of it on the median of five seeds (README: replay
    --prior)."""
    table = CurveTable.load(path)
    hand = max(c.final(table.max_epochs) or 0 for c in table.hand_picks())
    whole = len(table.hand_picks()) * table.max_epochs
    spent = {}
    for prior in ("first", "race"):
        strategy = Strategy(prior, starting_points=True, prior=prior, near_incumbent=0.0)
        reached = [
            replay(table, strategy, seed=s, budget_epochs=16 * table.max_epochs).epochs_to(hand) for s in range(5)
        ]
        assert all(r is not None for r in reached), prior
        spent[prior] = float(np.median(reached)) / whole
    assert spent["first"] > 1.0 and spent["race"] <= 0.9, spent


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
