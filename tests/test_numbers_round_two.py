"""Numbers you can trust, round two (issue 28): importances for the study's direction, code named in a store never
run without --trust-code, no unfaithful ONNX file left behind, `finish` with the search's settings."""

from __future__ import annotations

import json
import os
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
from segtune.search.nodes.resources import DEFAULT_GPU_FRACTION
from segtune.search.trial import costs
from segtune.search.trial.costs import measure
from segtune.training.device import pick_device, precision_for
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


def top_shift(study: optuna.Study, best_first: bool, quantile: float = 0.1, bins: int = 10) -> dict[str, float]:
    """How far each parameter's values among the top ``quantile`` of complete trials (ranked on the first objective,
    highest first when ``best_first``, else lowest first) stray from its values among all of them: the total
    variation distance of the two histograms. Computed here from the trials alone, without Optuna's evaluators: a
    parameter that decides which trials reach the top shows it."""
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    ranked = sorted(trials, key=lambda t: t.values[0], reverse=best_first)
    top = ranked[: max(2, int(len(ranked) * quantile))]
    shift = {}
    for name in trials[0].params:
        edges = np.linspace(0, 1, bins + 1)
        every = np.histogram([t.params[name] for t in trials], edges)[0] / len(trials)
        best = np.histogram([t.params[name] for t in top], edges)[0] / len(top)
        shift[name] = float(np.abs(best - every).sum() / 2)
    return shift


def test_importances_explain_the_best_trials_of_a_maximised_study() -> None:
    """The chart puts first the parameter the top trials of the study's direction show, computed independently (the
    one that decides the highest values), and below it the one that decides the lowest values (what a chart for the
    other direction would put first)."""
    study = constructed_study(["maximize"])
    chart = charted(study)
    shift = top_shift(study, best_first=True)
    assert max(chart, key=chart.get) == max(shift, key=shift.get) == "good", (chart, shift)
    wrong_way = top_shift(study, best_first=False)  # the lowest values first: what makes trials bad
    assert max(wrong_way, key=wrong_way.get) == "bad" and chart["good"] > chart["bad"], (chart, wrong_way)


def test_importances_of_a_multi_objective_study_rank_by_its_accuracy() -> None:
    study = constructed_study(["maximize", "minimize"])
    chart = charted(study)
    shift = top_shift(study, best_first=True)  # its accuracy, the first objective, maximised
    assert max(chart, key=chart.get) == max(shift, key=shift.get) == "good", (chart, shift)


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


# A model that writes down the dtype its layer computed in, at every forward pass: in training and in scoring.
DTYPE_PROBE = """
from pathlib import Path
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, in_channels=3, classes=2):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, classes, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        with open(Path(__file__).with_name("dtypes.log"), "a") as log:
            log.write(f"{'train' if self.training else 'score'} {y.dtype}\\n")
        return y
"""


def test_finish_trains_and_scores_with_the_settings_the_search_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search trained at bf16: finish records the search's settings and trains and scores every fold in the
    precision they give on this machine, seen from inside the model (the dtype its layer computes in: bf16 on a card
    that has it; fp32 on the CPU, where segtune runs fp32 whatever the setting, training.device.precision_for). A
    finish that scored at another precision than the search's (fp32 on a card, or autocast on the CPU) fails here."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "dtype_probe.py").write_text(DTYPE_PROBE)
    monkeypatch.syspath_prepend(str(code))
    # the folds train in the Ray cluster's workers (search/fits/): the model's module must be importable there too
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH")) if p))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    dataset = {"name": "synthetic", "num_classes": 2, "image_size": 32, "num_images": 12}
    train = {"precision": "bf16", "channels_last": True, "loader_workers": 1}
    study.set_user_attr("spec", {"study": "s", "dataset": dataset, "search": {"max_epochs": 1}, "train": train})
    study.set_user_attr("max_epochs", 1)
    searched = TrainSettings(precision="bf16", channels_last=True, loader_workers=1, threads=1, metric="val_miou")
    study.set_user_attr("train_settings", searched.to_dict())  # what `segtune run` records
    trial = study.ask()
    trial.set_user_attr("config", TrialConfig(arch="dtype_probe:Net", batch_size=4).to_dict())
    study.tell(trial, 0.5)
    finish = ["finish", "s", "--storage", url, "--top", "1", "--folds", "2", "-o", str(tmp_path / "f"), "--trust-code"]
    assert cli.main(finish) == 0
    used = json.loads((tmp_path / "f" / "finish.json").read_text())["settings"]
    assert used["channels_last"] is True and used["loader_workers"] == 1 and used["precision"] == "bf16"
    # each fold trains on a slot: the trials' share of a GPU (gpus_per_trial: auto), none on CPUs
    share = DEFAULT_GPU_FRACTION if torch.cuda.is_available() else None
    assert used["keep_best_state"] is False and used["gpu_memory_fraction"] == share

    expected = str(precision_for("bf16", pick_device()).dtype or torch.float32)
    seen = [line.split() for line in (code / "dtypes.log").read_text().splitlines()]
    assert {phase for phase, _ in seen} == {"train", "score"}
    assert {dtype for _, dtype in seen} == {expected}, sorted(set(map(tuple, seen)))


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
