"""The replay benchmark's engine (segtune/search/replay.py): it replays recorded curves exactly, with the
same rung decisions `run` makes through Ray Tune, the same end-of-trial states, and the budget."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from segtune import space
from segtune.errors import SpecError
from segtune.search.scheduling.replay import CurveTable, Strategy, replay
from segtune.search.scheduling.rungs import Rungs
from tests.conftest import segtune

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


DECIDE = {
    "study": "decide",
    "dataset": {"name": "synthetic", "num_images": 24, "image_size": 32, "num_classes": 2},
    "space": {"arch": "SmallUNet", "lr": {"loguniform": [1.0e-3, 3.0e-2]}, "batch_size": 4, "augment": "none"},
    # auto rungs, one trial at a time: trials reach their rungs in one order, which the replay follows
    "search": {
        "sampler": "random",
        "trials": 7,
        "max_epochs": 5,
        "seed": 3,
        "max_concurrent": 1,
        "starting_points": [{"lr": 0.005}],
    },
}


@pytest.fixture(scope="module")
def decided(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, dict]:
    """A real `segtune run`: Ray Tune, the searcher, the RungScheduler run builds from the spec, the recorder."""
    tmp = tmp_path_factory.mktemp("decide")
    (tmp / "decide.yaml").write_text(yaml.safe_dump(DECIDE))
    url = f"sqlite:///{tmp / 'decide.db'}"
    segtune("run", str(tmp / "decide.yaml"), "--storage", url, "--set", f"results_dir={tmp / 'runs'}", cwd=tmp)
    return optuna.load_study(study_name="decide", storage=url), DECIDE


def run_decisions(study: optuna.Study) -> list[tuple[int, int, str]]:
    return [(t.number, len(t.intermediate_values), t.state.name) for t in sorted(study.trials, key=lambda t: t.number)]


def replay_decisions(study: optuna.Study, spec: dict, **drift: object) -> list[tuple[int, int, str]]:
    """The run's own per-epoch values, replayed by search/scheduling/replay.py with the run's spec (and ``drift``)."""
    search = spec["search"]
    table = CurveTable.from_study(study, spec["space"], search["max_epochs"])
    strategy = Strategy("as run", sampler=search["sampler"], starting_points=True, **drift)
    storage = optuna.storages.InMemoryStorage()
    result = replay(table, strategy, search["seed"], 1, budget_epochs=10**6, storage=storage, trials=len(study.trials))
    return run_decisions(optuna.load_study(study_name=result.study_name, storage=storage))


@pytest.mark.e2e
def test_run_and_the_replay_make_the_same_stop_decisions(decided: tuple[optuna.Study, dict]) -> None:
    study, spec = decided
    made = run_decisions(study)
    assert any(state == "PRUNED" for *_, state in made) and any(state == "COMPLETE" for *_, state in made), made
    assert replay_decisions(study, spec) == made


@pytest.mark.e2e
def test_a_settings_drift_between_run_and_the_replay_is_caught(decided: tuple[optuna.Study, dict]) -> None:
    """The comparison above can fail: the replay told another first rung decides otherwise on the same curves."""
    study, spec = decided
    made = run_decisions(study)
    assert any(e == 1 and state == "PRUNED" for _, e, state in made)  # judged at epoch 1, as auto's grace says
    assert replay_decisions(study, spec, grace_period=2) != made


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
