"""The searcher alone, on a real SQLite study: configurations come from Optuna; impossible pairings never reach Ray."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from segtune import spec as spec_mod
from segtune.data import build_dataset
from segtune.search.ray_trials import TRIAL_KEY
from segtune.search.scheduling.searcher import OptunaStoreSearcher
from segtune.search.store.study import prepare_study

RAW = {
    "study": "pairs",
    "dataset": {"name": "synthetic", "image_size": 32},
    "space": {
        "arch": "UnetPlusPlus",
        "encoder": {"choice": ["mit_b0", "resnet18"]},
        "lr": {"loguniform": [1e-4, 1e-2]},
    },
    "search": {"sampler": "random", "trials": 6, "seed": 3},
}


def test_impossible_pairings_are_recorded_as_fail_and_drawn_again(tmp_path: Path) -> None:
    spec = spec_mod.validate(RAW)
    url = f"sqlite:///{tmp_path / 's.db'}"
    prepare_study(spec, url, "pairs", build_dataset(spec.dataset))
    searcher = OptunaStoreSearcher(url, "pairs", "run-1", spec)
    configs = [searcher.suggest(f"ray-{i}") for i in range(6)]
    assert all(c["arch"] == "UnetPlusPlus" and c["encoder"] == "resnet18" for c in configs)
    trials = optuna.load_study(study_name="pairs", storage=url).trials
    handed_out = {c[TRIAL_KEY] for c in configs}
    skipped = [t for t in trials if t.number not in handed_out]
    assert skipped, "random draws over two encoders for six trials should hit mit_b0 at least once (seed 3)"
    for t in skipped:
        assert t.state == TrialState.FAIL and t.params["encoder"] == "mit_b0"
        assert t.user_attrs["fail_reason"].startswith("cannot build UnetPlusPlus on mit_b0")
    for t in trials:
        if t.number in handed_out:
            assert t.state == TrialState.RUNNING and t.user_attrs["config"]["encoder"] == "resnet18"
            assert t.user_attrs["run_id"] == "run-1"
