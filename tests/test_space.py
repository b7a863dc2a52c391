"""Search space -> Optuna define-by-run sampling, conditionals included, on a real SQLite store."""

from __future__ import annotations

import optuna
import pytest

from segtune import space
from segtune.config import DEFAULTS
from segtune.errors import SpecError

RAW = {
    "arch": {"choice": ["Unet", "FPN"]},
    "loss": {"choice": ["ce", "tversky", "dice+focal"]},
    "tversky_alpha": {"uniform": [0.3, 0.7], "when": {"loss": "tversky"}},
    "lr": {"loguniform": [1e-5, 1e-2]},
    "batch_size": {"int": [4, 16], "step": 4},
    "encoder": "resnet18",
    "schedule": {"value": "onecycle", "when": {"arch": ["FPN"]}},
}


def test_sampling_respects_ranges_conditions_and_fixed_values(tmp_path) -> None:
    params = space.parse_space(RAW)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", sampler=optuna.samplers.RandomSampler(seed=1))
    seen_losses = set()
    for _ in range(40):
        trial = study.ask()
        cfg = space.sample(trial, params)
        study.tell(trial, 0.5)
        seen_losses.add(cfg.loss)
        assert cfg.encoder == "resnet18" and "encoder" not in trial.params  # fixed: in the config, not a param
        assert ("tversky_alpha" in trial.params) == (cfg.loss == "tversky")
        if cfg.loss != "tversky":
            assert cfg.tversky_alpha == DEFAULTS["tversky_alpha"]
        else:
            assert 0.3 <= cfg.tversky_alpha <= 0.7
        assert cfg.schedule == ("onecycle" if cfg.arch == "FPN" else DEFAULTS["schedule"])
        assert 1e-5 <= cfg.lr <= 1e-2 and cfg.batch_size in (4, 8, 12, 16)
    assert seen_losses == {"ce", "tversky", "dice+focal"}
    stored = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path / 's.db'}")
    assert len(stored.trials) == 40


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"lr": {"uniform": [0.1, 0.01]}}, "low must be below high"),
        ({"lr": {"choice": []}}, "non-empty list"),
        ({"lr": {"uniform": [0.1, 0.2], "loguniform": [0.1, 0.2]}}, "exactly one of"),
        ({"tversky_alpha": {"uniform": [0.3, 0.7], "when": {"loss": "tversky"}}}, "must be a parameter listed before"),
    ],
)
def test_malformed_entries_name_the_parameter(raw, message) -> None:
    with pytest.raises(SpecError, match=message):
        space.parse_space(raw)


def test_values_are_checked_against_the_registries() -> None:
    with pytest.raises(SpecError, match="space.optimizer: unknown optimizer 'lion'"):
        space.validate_space(space.parse_space({"optimizer": {"choice": ["adam", "lion"]}}), num_classes=3)
    with pytest.raises(SpecError, match="space.class_weights: must be null, median_frequency, or a list of 3"):
        space.validate_space(space.parse_space({"class_weights": [1.0, 2.0]}), num_classes=3)
    space.validate_space(space.parse_space(RAW), num_classes=3)
