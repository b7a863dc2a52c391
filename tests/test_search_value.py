"""A search that finds what a person would not (issue 30): rungs that judge only once curves can differ, stops that
can be undone (pause and promotion), rung history from the store, an exact budget, starting points from earlier
studies that refuse configurations outside the space."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from segtune import spec as spec_mod
from segtune.config import TrialConfig
from segtune.data import build_dataset
from segtune.search.scheduling import defaults, transfer
from segtune.search.scheduling.replay import CurveTable, Strategy, replay
from segtune.search.scheduling.rungs import Rungs
from segtune.search.scheduling.study_policy import plateau, study_rungs
from segtune.search.store.study import DATA_ATTR, describe_data


def test_a_trial_still_on_the_majority_class_plateau_is_not_judged_there() -> None:
    """Classes of 93%, 6% and 1%: predicting the majority everywhere scores 0.31. A trial at 0.30 after epoch 1 is
    not compared with anyone (its curve has not begun); judged once it has left the plateau, or at the first
    milestone past a third of the epochs if it never does."""
    rungs = Rungs(30, 1, 3, min_first_rung=1, plateau=0.31)
    assert rungs.milestones() == [1, 3, 9, 27]
    for epoch, value in ((1, 0.55), (3, 0.60), (9, 0.70)):  # off the plateau: judged at epoch 1, sets the bars
        rungs.stop("good", epoch, value)
    assert not rungs.stop("flat", 1, 0.30)  # below the bar, yet not stopped: on the plateau at epoch 1
    assert "flat" not in rungs.judged
    assert rungs.stop("flat", 3, 0.31) is False and "flat" not in rungs.judged  # still on it at 3 (< 30 / 3)
    assert rungs.stop("flat", 9, 0.31)  # epoch 9 is not under a third of 30: judged, and below the bar
    assert rungs.judged["flat"][0] == 9 and "still on the plateau" in rungs.judged["flat"][1]
    assert rungs.judged["good"] == (1, "rung 1 at epoch 1: 0.550 has left the plateau 0.310")
    later = Rungs(30, 1, 3, plateau=0.31)
    assert not later.stop("late", 1, 0.30) and later.stop("late", 3, 0.45) is False
    assert later.judged["late"][0] == 3  # first judged where it left the plateau


def test_the_plateau_comes_from_the_train_pixels() -> None:
    data = build_dataset(spec_mod.validate({"study": "p", "dataset": {"name": "synthetic", "num_classes": 3}}).dataset)
    shares = describe_data(data)["shares"]
    assert plateau(data) == pytest.approx(max(shares) / 3)


def test_a_paused_trial_is_promoted_when_later_results_rank_it_on_top() -> None:
    """With one slot the first rung waits for 3 results: the first two trials to reach it are paused, not stopped,
    and the better of them runs on once the rung holds enough results to rank it in the top third."""
    rungs = Rungs(9, 1, 3, min_first_rung=3, promote=True)
    assert rungs.stop(0, 1, 0.60) and rungs.stop(1, 1, 0.20)  # too few results: paused
    assert set(rungs.paused) == {0, 1} and rungs.promote_one() is None  # two results: still too few
    assert rungs.stop(2, 1, 0.40)  # three results: 0.40 is below the top third (0.60)
    assert rungs.promote_one() == (0, 1)  # the best, paused at epoch 1, runs on
    assert rungs.promote_one() is None and set(rungs.paused) == {1, 2}
    assert not rungs.stop(0, 3, 0.7)  # alone at rung 2: goes on (no bar there yet)


def test_a_driver_short_of_disk_ends_the_least_promising_pause_first() -> None:
    """Lowest rung first (a trial paused higher up has earned more), there the lowest value (promotion goes to the
    top of a rung)."""
    rungs = Rungs(9, 1, 3, min_first_rung=3, promote=True)
    assert rungs.stop(0, 1, 0.60) and rungs.stop(1, 1, 0.20) and rungs.stop(2, 1, 0.40)
    assert rungs.promote_one() == (0, 1)
    assert not rungs.stop(0, 3, 0.70) and rungs.stop(3, 1, 0.9) is False
    assert rungs.stop(3, 3, 0.65) and rungs.paused[3][1] == 1  # paused at rung 2, below trial 0's 0.70
    assert [rungs.end_least_promising() for _ in range(4)] == [1, 2, 3, None]
    assert not rungs.paused and rungs.promote_one() is None


def test_rung_history_is_rebuilt_from_the_store(tmp_path: Path) -> None:
    """A second run (or --resume) judges with what the study's earlier trials recorded at the rungs."""
    raw = {
        "study": "s",
        "dataset": {"name": "synthetic", "num_classes": 2, "image_size": 32},
        "search": {
            "max_epochs": 9,
            "grace_period": 1,
            "reduction_factor": 3,
            "min_first_rung": 3,
            "first_rung": "grace",
        },
    }
    spec = spec_mod.validate(raw)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    for _number, values in enumerate([{1: 0.5, 2: 0.6, 3: 0.7}, {1: 0.3}, {1: 0.4, 2: 0.5, 3: 0.45}]):
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED, value=values[max(values)], intermediate_values=values
            )
        )
    data = build_dataset(spec.dataset)
    rungs = study_rungs(study, spec, defaults.resolve(spec.search, 1), data)
    assert rungs._recorded[0][0] == {0: 0.5, 1: 0.3, 2: 0.4} and rungs._recorded[0][1] == {0: 0.7, 2: 0.45}
    # judged against the store's three results: 0.47 is in their top third, so it goes on (with no history it
    # would be paused at rung 1 for want of results to compare with)
    assert not rungs.stop("new", 1, 0.47) and "new" not in rungs.paused


def write_table(path: Path, curves: list[list[float]], max_epochs: int, space: dict) -> CurveTable:
    rows = [{"kind": "header", "max_epochs": max_epochs, "space": space}]
    for i, values in enumerate(curves):
        params = {"lr": space["lr"]["choice"][i]}
        rows.append(
            {
                "kind": "curve",
                "id": i,
                "source": "random",
                "params": params,
                "val_miou": values,
                "seconds": [1.0] * max_epochs,
                "failed": None,
            }
        )
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return CurveTable.load(path)


def test_an_exact_budget_is_never_exceeded(tmp_path: Path) -> None:
    lrs = [round(0.001 * (i + 1), 3) for i in range(8)]
    space = {"lr": {"choice": lrs}}
    curves = [[0.1 + 0.05 * e + 0.01 * i for e in range(10)] for i in range(8)]
    table = write_table(tmp_path / "t.jsonl.gz", curves, 10, space)
    for seed in range(5):
        finish = replay(table, Strategy("finish", scheduler="none", sampler="random"), seed, slots=2, budget_epochs=25)
        exact = replay(table, Strategy("exact", scheduler="none", sampler="random", budget_rule="exact"), seed, 2, 25)
        assert finish.epochs > 25  # the default rule lets running trials finish past the budget
        assert exact.epochs == 25  # never past it: the last trial ran a schedule of 5 epochs
        assert exact.states["COMPLETE"] == 3  # 10 + 10 + 5: a shortened trial ran every epoch it planned


def test_starting_points_from_earlier_studies_refuse_configurations_outside_the_space(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    data = build_dataset(spec_mod.validate({"study": "d", "dataset": {"name": "synthetic", "num_classes": 3}}).dataset)
    description = describe_data(data)
    for name, lr, arch in (("near", 1e-3, "Unet"), ("outside", 5e-2, "Unet"), ("other-arch", 1e-3, "FPN")):
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        study.set_user_attr(DATA_ATTR, description)
        t = study.ask()
        t.set_user_attr("config", TrialConfig(arch=arch, lr=lr).to_dict())
        study.tell(t, 0.7)
    optuna.create_study(study_name="old", storage=url)  # made before descriptions: skipped, with a note
    raw = {
        "study": "new",
        "dataset": {"name": "synthetic", "num_classes": 3},
        "space": {"arch": "Unet", "lr": {"loguniform": [1.0e-4, 1.0e-2]}},
    }
    spec = spec_mod.validate(raw)
    from segtune import space

    out = io.StringIO()
    storage = optuna.storages.RDBStorage(url)
    points = transfer.starting_points(storage, "new", data, space.parse_space(spec.space), 3, [], out)
    text = out.getvalue()
    assert [p for p, _ in points] == [{"lr": 1e-3}] and points[0][1] == "near/0"
    assert "study outside trial 0" in text and "study other-arch trial 0" in text  # each dropped, said why
    assert "1 studies of this store recorded no data description" in text and "old" in text


def test_alike_data_is_nearer_than_unlike_data() -> None:
    two = {"classes": 2, "shares": [0.85, 0.15], "canvas": [64, 64], "images": {"train": 96}}
    also_two = {"classes": 2, "shares": [0.80, 0.20], "canvas": [64, 64], "images": {"train": 120}}
    three = {"classes": 3, "shares": [0.6, 0.3, 0.1], "canvas": [256, 256], "images": {"train": 2000}}
    assert transfer.distance(two, also_two) < 0.5 < transfer.distance(two, three)
    assert np.isclose(transfer.distance(two, two), 0.0)
