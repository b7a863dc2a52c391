"""search.seed moves a search's training, not only its sampler: two searches of one spec with other seeds train
even their starting points (the same configuration) differently, and one seed trains them alike. Before, every
trial trained with its trial number as the seed whatever search.seed was, so a benchmark's search seeds all
delivered one and the same model (README, Benchmarks: the list as the prior, K = 3).

The seed a trial trained with is the trial's (user attr ``seed``): `segtune export` writes it, so `segtune retrain`
of the exported trial trains as the trial did; before, the retrain trained with seed 0 whatever the trial's was."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import yaml

from tests.conftest import demo_args, segtune


def first_trial(tmp: Path, seed: int, epochs: int = 1, *extra: str) -> optuna.trial.FrozenTrial:
    """A search of one trial (the demo's starting point) for ``epochs`` epochs, with ``search.seed`` = seed."""
    tmp.mkdir()
    fixed = ("--set", "space.weight_decay=1.0e-4", "--set", "space.aug_strength=0.5")  # the point leaves them open
    args = demo_args(tmp, trials=1, epochs=epochs, one_at_a_time=True)
    segtune(*args, *fixed, "--set", "search.scheduler=none", "--set", f"search.seed={seed}", *extra, cwd=tmp)
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{tmp / 'store.db'}")
    assert len(study.trials) == 1 and study.trials[0].state == optuna.trial.TrialState.COMPLETE
    return study.trials[0]


def test_another_search_seed_trains_the_same_starting_point_differently(tmp_path: Path) -> None:
    a, b, again = (first_trial(tmp_path / name, seed) for name, seed in (("a", 1), ("b", 2), ("again", 1)))
    assert a.params == b.params == again.params  # the starting point: one configuration
    assert a.value != b.value, (a.value, b.value)
    assert a.value == again.value, (a.value, again.value)  # one seed: the same training (CPU, deterministic)


def test_a_retrain_of_an_exported_trial_trains_as_the_trial_did(tmp_path: Path) -> None:
    # one thread, written in the spec export copies: a retrain takes all the CPUs of its slot otherwise, and another
    # thread count sums in another order (the same seed then trains alike to about 0.003, not to the last digit)
    trial = first_trial(tmp_path / "search", 3, 2, "--set", "resources.cpus_per_trial=1")
    assert trial.user_attrs["seed"] == 3 * 100_003  # search.seed 3's share, plus trial number 0
    spec = tmp_path / "best.yaml"
    segtune("export", "e2e", "--storage", f"sqlite:///{tmp_path / 'search' / 'store.db'}", "-o", str(spec))
    assert yaml.safe_load(spec.read_text())["seed"] == trial.user_attrs["seed"]
    segtune("retrain", str(spec), "--out", str(tmp_path / "again"), cwd=tmp_path)
    metrics = json.loads((tmp_path / "again" / "metrics.json").read_text())
    best_epoch = max(trial.intermediate_values, key=lambda e: trial.intermediate_values[e])
    assert metrics["best_val_epoch"] == best_epoch
    values = trial.intermediate_values
    assert metrics["val_miou"] == values[best_epoch], (metrics["val_miou"], values)  # not merely alike: the same
