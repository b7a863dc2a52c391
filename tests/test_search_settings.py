"""The search's own settings as a user meets them: `auto` defaults, starting points, the budget."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest

from segtune.search.scheduling import defaults
from segtune.search.scheduling.searcher import STARTING_POINT, queue_first_trials
from segtune.spec import read_yaml, validate
from tests.conftest import SPACES, demo_args, segtune


def search_section(**search: object):
    raw = read_yaml(SPACES / "demo.yaml")
    raw["search"] = {**raw["search"], **search}
    return validate(raw, source="t", check_root=False)


def test_auto_resolves_to_what_the_replay_grid_chose_and_a_number_in_the_spec_wins() -> None:
    chosen = defaults.resolve(search_section(max_epochs=12, trials=48).search, slots=2)  # the recorded table's shape
    assert (chosen.grace_period, chosen.reduction_factor, chosen.min_first_rung, chosen.brackets, chosen.startup) == (
        1,
        3,
        3,
        1,
        "stratified",
    )  # README, "How the search decides"
    assert 5 <= chosen.n_startup_trials <= 8  # the grid: 3 far slower, 10 slower
    # the two complete tables choose the same rule: judged at grace 1, a stop is a pause that later results undo
    assert (chosen.plateau, chosen.promote) == (False, True)
    kvasir = defaults.resolve(search_section(max_epochs=30, trials=48).search, slots=2)  # the second table's shape
    assert (kvasir.grace_period, kvasir.min_first_rung, kvasir.plateau, kvasir.promote) == (1, 3, False, True)
    asked = defaults.resolve(search_section(max_epochs=12, first_rung="plateau", promotion=False).search, slots=2)
    assert (asked.plateau, asked.promote) == (True, False)
    for max_epochs in (4, 6, 12, 30, 100):
        chosen = defaults.resolve(search_section(max_epochs=max_epochs).search, slots=2)
        assert chosen.grace_period * chosen.reduction_factor < max_epochs  # at least one rung before the end
    assert defaults.resolve(search_section(max_epochs=100).search).grace_period > 1  # long studies judge later
    few_slots = defaults.resolve(search_section(max_epochs=12).search, slots=1)
    assert few_slots.min_first_rung > 1  # one slot: the first trial is judged too, not run alone to the end
    pinned = defaults.resolve(
        search_section(
            max_epochs=12, grace_period=1, reduction_factor=4, min_first_rung=1, brackets=2, n_startup_trials=7
        ).search,
        slots=1,
    )
    assert (
        pinned.grace_period,
        pinned.reduction_factor,
        pinned.min_first_rung,
        pinned.brackets,
        pinned.n_startup_trials,
    ) == (1, 4, 1, 2, 7)


def test_every_shipped_spec_uses_auto_and_its_hand_picks_lie_in_its_space() -> None:
    for path in sorted(SPACES.glob("*.yaml")):
        raw = read_yaml(path)
        pinned = {k for k in ("grace_period", "reduction_factor", "min_first_rung", "brackets") if k in raw["search"]}
        assert not pinned, f"{path.name} pins {pinned}: the auto defaults would reach nobody"
        spec = validate(raw, source=str(path), check_root=False)  # a hand pick outside the space is exit 2
        assert spec.search.starting_points, f"{path.name} has no hand-picked starting point"


def test_starting_points_run_first_then_a_stratified_start_up_covers_every_choice() -> None:
    spec = search_section(startup="stratified", n_startup_trials=6)
    chosen = defaults.resolve(spec.search, slots=2)
    study = optuna.create_study(direction="maximize")
    point = {
        "arch": "Unet",
        "encoder": "resnet18",
        "loss": "ce",
        "augment": "flip",
        "optimizer": "adamw",
        "lr": 1e-3,
        "schedule": "onecycle",
    }
    queue_first_trials(study, spec, chosen, [point])
    queue_first_trials(study, spec, chosen, [point])  # a second run of the same study repeats nothing
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 7
    assert waiting[0].user_attrs == {STARTING_POINT: True}
    assert waiting[0].system_attrs["fixed_params"] == point
    design = [t.system_attrs["fixed_params"] for t in waiting[1:]]
    for name, choices in (
        ("arch", ["Unet", "FPN", "Linknet"]),
        ("loss", ["ce", "dice+focal", "tversky"]),
        ("augment", ["flip", "light", "strong"]),
        ("schedule", ["none", "cosine", "onecycle"]),
    ):
        assert sorted({d[name] for d in design}) == sorted(choices), name


def test_a_budget_of_trial_epochs_ends_the_search_and_is_shown(tmp_path: Path) -> None:
    """`search.budget_epochs: 4` with 2-epoch trials: two trials train, then nothing more starts (the study
    asks for 20); progress and `status` show the budget."""
    args = demo_args(tmp_path, trials=20, epochs=2, one_at_a_time=True)
    proc = segtune(*args, "--set", "search.budget_epochs=4", "--set", "search.scheduler=none", cwd=tmp_path)
    assert "budget 4/4 trial-epochs" in proc.stdout
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with sqlite3.connect(tmp_path / "store.db") as db:
        epochs = [
            int(v) for (v,) in db.execute("SELECT value_json FROM trial_user_attributes WHERE key = 'epochs_run'")
        ]
    assert sorted(epochs) == [2, 2]
    status = segtune("status", "e2e", "--storage", url, cwd=tmp_path).stdout
    line = status.splitlines()[0]  # the start-up design's unstarted trials are queued, not counted as run
    assert line.startswith("study 'e2e': 2 trials") and line.endswith("4 trial-epochs trained of a budget of 4")


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_a_bad_budget_is_exit_2_naming_the_field(value: str, tmp_path: Path) -> None:
    proc = segtune(
        "check",
        str(SPACES / "demo.yaml"),
        "--spec-only",
        "--set",
        f"search.budget_epochs={value}",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("segtune: error: ")
    assert "search.budget_epochs" in proc.stderr
