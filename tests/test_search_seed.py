"""search.seed moves a search's training, not only its sampler: two searches of one spec with other seeds train
even their starting points (the same configuration) differently, and one seed trains them alike. Before, every
trial trained with its trial number as the seed whatever search.seed was, so a benchmark's search seeds all
delivered one and the same model (README, Benchmarks: the list as the prior, K = 3)."""

from __future__ import annotations

from pathlib import Path

import optuna

from tests.conftest import demo_args, segtune


def first_trial(tmp: Path, seed: int) -> optuna.trial.FrozenTrial:
    """A search of one trial (the demo's starting point) for one epoch, with ``search.seed`` = seed."""
    tmp.mkdir()
    fixed = ("--set", "space.weight_decay=1.0e-4", "--set", "space.aug_strength=0.5")  # the point leaves them open
    segtune(*demo_args(tmp, trials=1, epochs=1, one_at_a_time=True), *fixed, "--set", f"search.seed={seed}", cwd=tmp)
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{tmp / 'store.db'}")
    assert len(study.trials) == 1 and study.trials[0].state == optuna.trial.TrialState.COMPLETE
    return study.trials[0]


def test_another_search_seed_trains_the_same_starting_point_differently(tmp_path: Path) -> None:
    a, b, again = (first_trial(tmp_path / name, seed) for name, seed in (("a", 1), ("b", 2), ("again", 1)))
    assert a.params == b.params == again.params  # the starting point: one configuration
    assert a.value != b.value, (a.value, b.value)
    assert a.value == again.value, (a.value, again.value)  # one seed: the same training (CPU, deterministic)
