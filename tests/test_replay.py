"""The replay benchmark's engine (segtune/search/replay.py): it replays recorded curves exactly, with the
same rung decisions `run` makes through Ray Tune, the same end-of-trial states, and the budget."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from segtune import space
from segtune.errors import SpecError
from segtune.search.recorder import TRIAL_KEY
from segtune.search.replay import CurveTable, Strategy, replay
from segtune.search.rungs import Rungs, RungScheduler

SPACE = {"lr": {"choice": [0.001, 0.002, 0.003, 0.004, 0.005, 0.006]}}


def write_table(path: Path, curves: list[tuple[list[float], list[float]]], max_epochs: int) -> CurveTable:
    """A table in benchmarks/record_curves.py's format: one curve per lr choice."""
    rows = [{"kind": "header", "max_epochs": max_epochs, "space": SPACE}]
    for i, (values, seconds) in enumerate(curves):
        rows.append(
            {
                "kind": "curve",
                "id": i,
                "source": "hand" if i == 0 else "random",
                "params": {"lr": SPACE["lr"]["choice"][i]},
                "val_miou": values,
                "seconds": seconds,
                "failed": None,
            }
        )
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return CurveTable.load(path)


def test_a_recorded_curve_is_replayed_exactly(tmp_path: Path) -> None:
    values = [0.2, 0.35, 0.5, 0.45]
    seconds = [3.0, 2.5, 2.0, 4.0]
    table = write_table(tmp_path / "t.jsonl.gz", [(values, seconds)] + [([0.1] * 4, [1.0] * 4)] * 5, max_epochs=4)
    url = f"sqlite:///{tmp_path / 'replay.db'}"
    result = replay(
        table, Strategy("hand", scheduler="none", starting_points=True), seed=0, slots=1, budget_epochs=4, storage=url
    )
    trial = optuna.load_study(study_name=result.study_name, storage=url).trials[0]
    assert [trial.intermediate_values[e] for e in range(1, 5)] == values
    assert trial.state == TrialState.COMPLETE and trial.value == 0.5  # valued at its best epoch, as `run` does
    assert result.seconds == pytest.approx(sum(seconds)) and result.epochs == 4
    assert result.incumbent == [(pytest.approx(sum(seconds)), 4, 0.5)]


class _Controller:
    """What RungScheduler is handed by Tune; it never looks at it."""


def test_run_and_the_replay_make_the_same_stop_decisions(tmp_path: Path) -> None:
    curves = [([0.1 * k + 0.01 * e for e in range(9)], [1.0 + k / 7] * 9) for k in range(6)]
    table = write_table(tmp_path / "t.jsonl.gz", curves, max_epochs=9)
    strategy = Strategy("asha", sampler="random", grace_period=1, reduction_factor=3, min_first_rung=2)
    result = replay(table, strategy, seed=3, slots=2, budget_epochs=40)
    assert any(stop for *_, stop in result.events) and not all(stop for *_, stop in result.events)

    # the same results, in the same order, through Ray Tune's scheduler interface (real Trial objects)
    scheduler = RungScheduler(Rungs(9, 1, 3, min_first_rung=2), "val_miou", trial_key=TRIAL_KEY)
    trials: dict[int, Trial] = {}
    for number, epoch, value, stopped in result.events:
        trial = trials.setdefault(number, Trial("segtune", config={TRIAL_KEY: number}, stub=True))
        decision = scheduler.on_trial_result(_Controller(), trial, {"epoch": epoch, "val_miou": value})
        assert decision == (TrialScheduler.STOP if stopped else TrialScheduler.CONTINUE), (number, epoch)


def test_a_trial_alone_at_its_rung_goes_on_unless_the_first_rung_needs_more_results() -> None:
    ray_like = Rungs(max_epochs=9, grace_period=1, reduction_factor=3)
    assert ray_like.milestones() == [1, 3, 9]
    assert not ray_like.stop("a", 1, 0.1)  # alone: goes on (Ray's ASHA)
    assert ray_like.stop("b", 1, 0.05)  # below the only other value at rung 1
    assert not ray_like.stop("c", 1, 0.2)
    judged = Rungs(max_epochs=9, grace_period=1, reduction_factor=3, min_first_rung=3)
    assert judged.stop("a", 1, 0.9) and judged.stop("b", 1, 0.8)  # too few results to let anyone pass
    assert not judged.stop("c", 1, 0.95) and judged.stop("d", 1, 0.85)
    assert not judged.stop("hand", 1, 0.0, protected=True)  # a starting point always goes on


def test_the_budget_stops_new_trials_and_lets_running_ones_end(tmp_path: Path) -> None:
    table = write_table(tmp_path / "t.jsonl.gz", [([0.1 * k] * 6, [1.0] * 6) for k in range(6)], max_epochs=6)
    result = replay(table, Strategy("full", sampler="random", scheduler="none"), seed=0, slots=2, budget_epochs=13)
    # 2 trials of 6 epochs leave room for a third (12 < 13); once it holds its 6 epochs, nothing more starts
    assert sum(result.states.values()) == 3
    assert result.epochs == 18


def test_starting_points_must_lie_inside_the_space() -> None:
    params = space.parse_space(
        {
            "arch": {"choice": ["Unet", "FPN"]},
            "lr": {"loguniform": [1e-4, 1e-2]},
            "loss": "dice",
            "tversky_alpha": {"uniform": [0.3, 0.7], "when": {"loss": "tversky"}},
        }
    )
    assert space.starting_point_params(params, {"arch": "FPN", "lr": 1e-3, "loss": "dice"}, 3, "p") == {
        "arch": "FPN",
        "lr": 1e-3,
    }
    bad = [
        ({"arch": "Linknet"}, "p.arch: 'Linknet' is not among space.arch's choices"),
        ({"lr": 0.1}, "p.lr: 0.1 lies outside space.lr's range"),
        ({"loss": "ce"}, "p.loss: 'ce', but the space fixes loss to 'dice'"),
        ({"schedule": "onecycle"}, "p.schedule: 'onecycle', but the space fixes schedule to 'cosine'"),
        ({"tversky_alpha": 0.5}, "p.tversky_alpha: the space samples tversky_alpha only when loss is one of"),
        ({"learning_rate": 1e-3}, "p.learning_rate: unknown parameter"),
    ]
    for point, message in bad:
        with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
            space.starting_point_params(params, point, 3, "p")
