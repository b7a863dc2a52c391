"""The best model under a budget (issue 16): accuracy against latency, size and compute, searched together."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from segtune import spec as spec_mod
from segtune.errors import SpecError
from segtune.objectives import Point, dominates, pareto_front, violations, within
from tests.conftest import PETS_SAMPLE, segtune

MAX, MIN = "maximize", "minimize"


def test_the_front_on_constructed_values() -> None:
    points = [
        Point(0, (0.80, 30.0)),  # most accurate
        Point(1, (0.70, 10.0)),  # fastest of the good ones
        Point(2, (0.65, 12.0)),  # dominated by 1: slower and less accurate
        Point(3, (0.75, 20.0)),  # between: on the front
        Point(4, (0.90, 50.0), feasible=False),  # the best, but over the latency limit
        Point(5, (0.60, None)),  # cost not measured: not on any front
    ]
    assert dominates((0.70, 10.0), (0.65, 12.0), (MAX, MIN)) and not dominates((0.8, 30.0), (0.7, 10.0), (MAX, MIN))
    assert [p.number for p in pareto_front(points, (MAX, MIN))] == [0, 3, 1]  # most accurate first
    assert [p.number for p in pareto_front([Point(0, (0.5, 3.0)), Point(1, (0.5, 3.0))], (MAX, MIN))] == [0, 1]


def test_constraints_and_budgets_on_constructed_values() -> None:
    assert violations({"latency_ms": 25.0, "params_m": 4.0}, {"latency_ms": 20}) == [5.0]
    assert within({"latency_ms": 19.0}, {"latency_ms": 20}) and not within({"latency_ms": 21.0}, {"latency_ms": 20})
    assert not within({}, {"latency_ms": 20})  # not measured: not known to fit


def test_objectives_are_validated() -> None:
    base = {"study": "s", "dataset": {"name": "synthetic"}}
    spec = spec_mod.validate({**base, "search": {"objectives": ["val_dice", "gflops"], "constraints": {"params_m": 5}}})
    assert spec.search.metric == "val_dice" and spec.search.cost_names == ["params_m", "gflops"]
    for search, message in [
        ({"objectives": ["val_miou", "speed"]}, "objectives: unknown 'speed'"),
        ({"objectives": ["latency_ms"]}, "exactly one accuracy metric"),
        ({"objectives": ["val_miou", "val_dice"]}, "exactly one accuracy metric"),
        ({"objectives": ["val_miou", "latency_ms"], "metric": "val_dice"}, "metric: val_dice but the objectives"),
        ({"constraints": {"val_miou": 0.5}}, "constraints: 'val_miou' is not a cost"),
    ]:
        with pytest.raises(SpecError, match=message):
            spec_mod.validate({**base, "search": search})


@pytest.mark.e2e
def test_accuracy_against_cost_end_to_end(tmp_path: Path) -> None:
    """A tiny net, a light pretrained Unet and a heavy Unet: measured costs order as the models do, the two
    feasible ones make the front, the heavy one is marked infeasible, and export under a budget keeps to it."""
    models = ["SmallUNet/-", "Unet/timm-tf_efficientnet_lite0", "Unet/resnet34"]
    raw = {
        "study": "costs",
        # 160 of the sample's pictures per split: the costs do not depend on them, and the pretrained net still leads
        "dataset": {"name": "oxford_pets", "root": str(PETS_SAMPLE), "download": False, "image_size": 64, "limit": 160},
        "space": {
            "model": {"choice": models},
            "encoder_weights": {"choice": [None, "imagenet"], "when": {"encoder": "timm-tf_efficientnet_lite0"}},
            "augment": "none",
            "lr": 3.0e-3,
            "schedule": "none",
            "batch_size": 16,
        },
        "search": {
            "trials": 3,
            "max_epochs": 2,
            "scheduler": "none",
            "objectives": ["val_miou", "params_m", "gflops"],
            "constraints": {"params_m": 15},
            "starting_points": [
                {"model": models[0]},
                {"model": models[1], "encoder_weights": "imagenet"},
                {"model": models[2]},
            ],
        },
        "results_dir": str(tmp_path / "runs"),
    }
    (tmp_path / "costs.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))  # `when` needs model first
    url = f"sqlite:///{tmp_path / 'costs.db'}"
    segtune("run", str(tmp_path / "costs.yaml"), "--storage", url, cwd=tmp_path)
    study = optuna.load_study(study_name="costs", storage=url)
    assert study.metric_names == ["val_miou", "params_m", "gflops"] and len(study.directions) == 3
    by_model = {f"{t.user_attrs['config']['arch']}/{t.user_attrs['config']['encoder']}": t for t in study.trials}
    tiny, light, heavy = (by_model[m] for m in models)
    assert all(t.state == TrialState.COMPLETE for t in (tiny, light, heavy))
    for cost in ("params_m", "gflops"):  # measured, not looked up: they order as the models do
        assert tiny.user_attrs[cost] < light.user_attrs[cost] < heavy.user_attrs[cost], cost
    assert heavy.constraints == pytest.approx({"params_m": heavy.user_attrs["params_m"] - 15})
    assert tiny.values[1:] == [tiny.user_attrs["params_m"], tiny.user_attrs["gflops"]]
    assert len(tiny.user_attrs["epoch_values"]) == 2 and not tiny.intermediate_values  # one value per epoch

    status = segtune("status", "costs", "--storage", url).stdout
    assert "front" in status.splitlines()[1] and "feasible" in status.splitlines()[1]
    heavy_row = next(line for line in status.splitlines() if line.startswith(f"{heavy.number} "))
    assert " no " in heavy_row  # infeasible
    front_line = next(line for line in status.splitlines() if line.startswith("Pareto front"))
    assert f"trial {tiny.number}:" in front_line and f"trial {heavy.number}:" not in front_line
    assert front_line.count("trial ") >= 2 and f"trial {light.number}:" in front_line

    out = segtune("export", "costs", "--storage", url, "--max-params-m", "2", "-o", str(tmp_path / "small.yaml"))
    assert yaml.safe_load((tmp_path / "small.yaml").read_text())["provenance"]["trial"] == tiny.number, out.stdout
    refused = segtune("export", "costs", "--storage", url, "--max-params-m", "0.001", check=False)
    assert refused.returncode == 2 and f"the cheapest, trial {tiny.number}, has" in refused.stderr

    html = tmp_path / "costs.html"
    segtune("report", "costs", "--storage", url, "-o", str(html))
    assert "Accuracy against cost: the Pareto front" in html.read_text()

    changed = segtune(
        "run",
        str(tmp_path / "costs.yaml"),
        "--storage",
        url,
        "--set",
        "search.objectives=[val_miou, latency_ms]",
        check=False,
        cwd=tmp_path,
    )
    assert changed.returncode == 2 and "search.objectives:" in changed.stderr  # not comparable: refused
