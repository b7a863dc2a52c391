"""Numbers you can trust, round two (issue 28): importances for the study's direction, code named in a store never
run without --trust-code, no unfaithful ONNX file left behind, `finish` with the search's settings."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from segtune import cli
from segtune.config import TrainSettings, TrialConfig
from segtune.data.resize import ResizePolicy
from segtune.errors import SegtuneError
from segtune.results.report import importance_figure
from segtune.search.nodes.quiet import NodeQuiet
from segtune.search.trial import costs
from segtune.search.trial.costs import measure
from segtune.training.models import build_model
from tests.test_trust import EVIL


def constructed_study(directions: list[str]) -> optuna.Study:
    """``good`` decides the best trials (only good > 0.9 reaches the top), ``bad`` the worst (bad < 0.1 sinks)."""

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        good, bad = trial.suggest_float("good", 0, 1), trial.suggest_float("bad", 0, 1)
        noise = trial.suggest_float("noise", 0, 1)
        value = 0.5 + (0.3 if good > 0.9 else 0.0) - (0.3 if bad < 0.1 else 0.0) + 0.01 * noise
        return value if len(directions) == 1 else (value, noise)

    study = optuna.create_study(directions=directions, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=300)
    return study


def charted(study: optuna.Study) -> dict[str, float]:
    figure = importance_figure(study)
    assert not isinstance(figure, str), figure
    bar = figure.data[0]
    return dict(zip(bar.y, bar.x, strict=True))


def test_importances_explain_the_best_trials_of_a_maximised_study() -> None:
    study = constructed_study(["maximize"])
    chart = charted(study)
    assert max(chart, key=chart.get) == "good", chart  # what makes trials good, not what makes them bad
    assert chart == pytest.approx(optuna.importance.get_param_importances(study))  # Optuna's direction-aware call


def test_importances_of_a_multi_objective_study_rank_by_its_accuracy() -> None:
    chart = charted(constructed_study(["maximize", "minimize"]))
    assert max(chart, key=chart.get) == "good", chart


def store_naming_code(tmp_path: Path) -> str:
    """A shared store whose best complete trial's model is ``evil_mod:Net`` (a module that marks its import)."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "evil_mod.py").write_text(EVIL)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    study = optuna.create_study(study_name="shared", storage=url, direction="maximize")
    dataset = {"name": "synthetic", "num_classes": 2, "image_size": 32, "num_images": 8}
    study.set_user_attr("spec", {"study": "shared", "dataset": dataset, "search": {"max_epochs": 1}})
    study.set_user_attr("max_epochs", 1)
    trial = study.ask()
    trial.set_user_attr("config", TrialConfig(arch="evil_mod:Net").to_dict())
    study.tell(trial, 0.5)
    return url


def test_configurations_from_a_store_that_name_code_are_refused_before_any_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = store_naming_code(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))  # importable: only the refusal keeps it from running
    marker = tmp_path / "code" / "IMPORTED"
    for command in (
        ["finish", "shared", "-o", str(tmp_path / "f")],
        ["export", "shared", "-o", str(tmp_path / "b.yaml")],
    ):
        assert cli.main([*command, "--storage", url]) == 2
        err = capsys.readouterr().err
        assert "'evil_mod:Net', code outside segtune" in err and "(module evil_mod)" in err and "--trust-code" in err
        assert err.count("\n") == 1 and not marker.exists()
    assert not (tmp_path / "b.yaml").exists() and not (tmp_path / "f").exists()

    assert cli.main(["export", "shared", "-o", str(tmp_path / "b.yaml"), "--storage", url, "--trust-code"]) == 0
    assert "imports module evil_mod" in capsys.readouterr().out  # export names the module it would import
    assert "retraining it imports and runs module evil_mod" in (tmp_path / "b.yaml").read_text()
    assert cli.main(["retrain", str(tmp_path / "b.yaml"), "--out", str(tmp_path / "r")]) == 2  # the file it wrote
    assert "--trust-code" in capsys.readouterr().err and not marker.exists()


def test_an_export_that_fails_its_check_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segtune.results import onnx as onnx_mod

    model = build_model(TrialConfig(arch="SmallUNet"), 2).eval()
    canvases = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    out = tmp_path / "model.onnx"
    monkeypatch.setattr(onnx_mod, "AGREEMENT", 1.01)  # a bar no export meets: the check fails
    with pytest.raises(SegtuneError, match="not exported faithfully, nothing written"):
        onnx_mod.export_model([model], ["bg", "fg"], ResizePolicy(64, 64), canvases, out)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a partial one
    monkeypatch.setattr(onnx_mod, "AGREEMENT", 0.999)
    report = onnx_mod.export_model([model], ["bg", "fg"], ResizePolicy(64, 64), canvases, out)
    assert report.path == out and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_finish_trains_and_scores_with_the_settings_the_search_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    dataset = {"name": "synthetic", "num_classes": 2, "image_size": 32, "num_images": 12}
    train = {"precision": "fp32", "channels_last": True, "loader_workers": 1}
    study.set_user_attr("spec", {"study": "s", "dataset": dataset, "search": {"max_epochs": 1}, "train": train})
    study.set_user_attr("max_epochs", 1)
    searched = TrainSettings(precision="fp32", channels_last=True, loader_workers=1, threads=1, metric="val_miou")
    study.set_user_attr("train_settings", searched.to_dict())  # what `segtune run` records
    trial = study.ask()
    trial.set_user_attr("config", TrialConfig(arch="SmallUNet", batch_size=4).to_dict())
    study.tell(trial, 0.5)
    assert cli.main(["finish", "s", "--storage", url, "--top", "1", "--folds", "2", "-o", str(tmp_path / "f")]) == 0
    used = json.loads((tmp_path / "f" / "finish.json").read_text())["settings"]
    assert used["channels_last"] is True and used["loader_workers"] == 1 and used["precision"] == "fp32"
    assert used["keep_best_state"] is False and used["gpu_memory_fraction"] is None  # finish's own: it runs alone


def test_a_model_is_timed_only_while_its_neighbours_wait_between_steps(tmp_path: Path) -> None:
    """Neighbours hold the node's shared lock around each step; the timing takes it exclusively: it starts only
    once the step in flight has ended, and no step runs until it is done."""
    steps: list[tuple[float, float]] = []
    stop = threading.Event()

    def neighbour() -> None:  # a trial training: back-to-back 20 ms steps
        node = NodeQuiet(tmp_path)
        while not stop.is_set():
            with node.step():
                started = time.monotonic()
                time.sleep(0.02)
                steps.append((started, time.monotonic()))
        node.close()

    threads = [threading.Thread(target=neighbour) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    timer = NodeQuiet(tmp_path)
    with timer.quiet():
        quiet_from = time.monotonic()
        time.sleep(0.2)
        quiet_to = time.monotonic()
    time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    assert not [s for s in steps if s[0] < quiet_to and s[1] > quiet_from], "a step ran while the model was timed"
    assert any(s[1] <= quiet_from for s in steps) and any(s[0] >= quiet_to for s in steps)
    assert timer.waited_s < 0.1  # a step's length, not starved by neighbours whose steps follow back to back


def test_every_trial_on_a_node_stores_the_same_latency_for_one_model(tmp_path: Path) -> None:
    config, canvas = TrialConfig(arch="SmallUNet"), (64, 64)
    first = measure(config, 2, canvas, torch.device("cpu"), ["latency_ms"], NodeQuiet(tmp_path))
    costs._cache.clear()  # another worker process: nothing cached in it
    second = measure(config, 2, canvas, torch.device("cpu"), ["latency_ms"], NodeQuiet(tmp_path))
    assert first["latency_ms"] == second["latency_ms"] > 0
    assert "latency_quiet_wait_s" in first and "latency_quiet_wait_s" not in second  # timed once, in quiet
