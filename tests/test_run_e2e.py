"""`segtune run` end to end: the real CLI, a local Ray cluster, a real SQLite store, real pet images."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tests.conftest import ONE_AT_A_TIME, REPO, SPACES, demo_search, segtune

pytestmark = pytest.mark.e2e

# all-background on the demo's val images scores about 0.21 mIoU (background IoU ~0.63, pet and border 0)
MIOU_FLOOR = 0.30


def load(tmp: Path) -> optuna.Study:
    return optuna.load_study(study_name="e2e", storage=f"sqlite:///{tmp / 'store.db'}")


def test_store_tells_the_truth(searched) -> None:
    tmp, _ = searched
    study = load(tmp)
    first_run = study.trials[0].user_attrs["run_id"]  # another test adds a second run to this study later
    ran = [t for t in study.trials if "ray_trial_id" in t.user_attrs and t.user_attrs["run_id"] == first_run]
    assert len(ran) == 8
    states = {t.state for t in ran}
    assert TrialState.COMPLETE in states and TrialState.PRUNED in states, states
    assert TrialState.RUNNING not in {t.state for t in study.trials}
    for t in ran:
        a = t.user_attrs
        assert a["epochs_run"] == len(t.intermediate_values) == max(t.intermediate_values)
        assert sorted(t.intermediate_values) == list(range(1, a["epochs_run"] + 1))  # one value per epoch run
        if t.state == TrialState.COMPLETE:
            assert a["epochs_run"] == 4 and t.value == pytest.approx(max(t.intermediate_values.values()))
        else:
            assert a["epochs_run"] < 4 and t.value == pytest.approx(t.intermediate_values[a["epochs_run"]])
        assert 0 <= a["val_dice"] <= 1 and 0 <= a["val_pixel_acc"] <= 1 and a["wall_time_s"] > 0
        assert len(a["val_iou_per_class"]) == 3 and a["best_epoch"] <= a["epochs_run"]
        assert Path(a["checkpoint"], "model.pt").is_file()
        assert {"arch", "encoder", "loss", "lr"} <= set(t.params)
    assert study.best_value > MIOU_FLOOR
    assert study.user_attrs["segtune_version"] and study.user_attrs["spec"]["study"] == "demo"
    assert study.user_attrs["classes"] == ["background", "pet", "border"]


def test_trials_reuse_their_worker_processes_and_store_their_training_seconds(searched) -> None:
    """Every trial-second trains: a slot's worker process serves trial after trial (no start-up per trial),
    and each trial stores its train + validation seconds per epoch (what slot utilisation is computed from)."""
    tmp, _ = searched
    study = load(tmp)
    first_run = study.trials[0].user_attrs["run_id"]
    ran = [t for t in study.trials if "ray_trial_id" in t.user_attrs and t.user_attrs["run_id"] == first_run]
    slots = study.user_attrs["slots"]
    assert len({t.user_attrs["worker_pid"] for t in ran}) <= slots < len(ran)
    for t in ran:
        seconds = t.user_attrs["epoch_seconds"]
        assert len(seconds) == t.user_attrs["epochs_run"] and all(s > 0 for s in seconds)
        assert sum(seconds) <= t.user_attrs["wall_time_s"]


def test_every_slot_s_worker_is_up_before_the_first_trial_is_asked(searched) -> None:
    """A slot's worker process (torch, smp and Ray Tune imported, the data fetched) starts before the search asks
    Optuna for its first trial, so no trial's time in the store holds a worker's start-up; every warm worker
    then serves trials (none is lost in Tune's hand-over), and the warm-ups leave no folder and no Tune line."""
    tmp, proc = searched
    study = load(tmp)
    first_run = study.trials[0].user_attrs["run_id"]
    ran = [t for t in study.trials if "ray_trial_id" in t.user_attrs and t.user_attrs["run_id"] == first_run]
    first_ask = min(t.datetime_start for t in ran).timestamp()
    loaded = {t.user_attrs["worker_pid"]: t.user_attrs["worker_loaded_at"] for t in ran}
    late = {pid: round(at - first_ask, 2) for pid, at in loaded.items() if at >= first_ask}
    assert not late, f"workers that started after the first ask (seconds after it): {late}"
    assert len(loaded) == min(study.user_attrs["slots"], len(ran)), loaded
    assert not list((tmp / "runs").glob("*/warmup_*"))
    assert "trial worker(s) up in" in proc.stdout and "warmup_" not in proc.stdout


GROWTH_MB = 150  # before each worker gave its memory back: +230 to +340 MB from its 2nd to its 4th trial here;
# before a trial collected what a stopped one left (its frames held by the exception Tune stopped it with): +195
# and +209 MB in one step after a trial stopped at its first rung (CI, and here); since: +25 to +45 over 4-5 trials


def test_a_reused_worker_does_not_grow_trial_after_trial(searched) -> None:
    """What a worker holds when a trial begins (after the previous trial freed its own) stays level: from its
    second trial on (the first begins before torch has allocated anything) it may move with the allocator,
    not climb by a model's worth per trial."""
    tmp, _ = searched
    study = load(tmp)
    first_run = study.trials[0].user_attrs["run_id"]
    ran = [t for t in study.trials if "ray_trial_id" in t.user_attrs and t.user_attrs["run_id"] == first_run]
    by_worker: dict[int, list[tuple[float, float]]] = {}
    for t in ran:
        a = t.user_attrs
        by_worker.setdefault(a["worker_pid"], []).append((a["train_started_at"], a["worker_rss_start_mb"]))
    served = [sorted(starts) for starts in by_worker.values() if len(starts) >= 3]
    assert served, f"no worker served 3 trials: {by_worker}"
    for starts in served:
        second, last = starts[1][1], starts[-1][1]
        assert last <= second + GROWTH_MB, [round(mb) for _, mb in starts]


def test_progress_and_final_table_are_printed(searched) -> None:
    _, proc = searched
    out = proc.stdout
    assert "decoded 48 images at 64x64 px (pad) once for all trials (train 36, val 12, test 0)" in out  # test: retrain
    assert "8/8 done: 0 running" in out and "best val_miou" in out
    table = out.split("best trials of study 'e2e'")[1]
    for column in ("trial", "state", "val_mIoU", "Dice", "pix_acc", "epochs", "params"):
        assert column in table
    assert "COMPLETE" in table and "PRUNED" in table


def test_a_second_run_adds_trials_and_keeps_the_first(searched, tmp_path: Path) -> None:
    # on a copy (SQLite's backup: the store runs in WAL mode), so the shared search stays as the others read it
    source, copy = sqlite3.connect(searched[0] / "store.db"), sqlite3.connect(tmp_path / "store.db")
    source.backup(copy)
    source.close(), copy.close()
    tmp = tmp_path
    before_trials = load(tmp).trials
    before = {t.number: (t.state, t.value, dict(t.intermediate_values)) for t in before_trials}
    ran_before = sum("ray_trial_id" in t.user_attrs for t in before_trials)
    demo_search(tmp, 2, one_at_a_time=True)
    # one trial at a time: a local cluster of one CPU, so Tune has no room for a worker no trial will use
    assert load(tmp).user_attrs["slots"] == 1
    after = load(tmp).trials
    assert sum("ray_trial_id" in t.user_attrs for t in after) == ran_before + 2
    for t in after:
        if t.number in before:
            assert (t.state, t.value, dict(t.intermediate_values)) == before[t.number]


def test_a_trial_that_raises_ends_fail_with_its_reason_and_the_search_goes_on(tmp_path: Path) -> None:
    db = tmp_path / "fail.db"
    proc = segtune(
        "run",
        str(SPACES / "demo.yaml"),
        "--storage",
        f"sqlite:///{db}",
        "--study",
        "nan",
        *ONE_AT_A_TIME,
        "--set",
        "dataset={name: synthetic, num_images: 64, image_size: 32}",
        "--set",
        "search.trials=2",
        "--set",
        "search.max_epochs=2",
        "--set",
        "space={arch: Unet, encoder: resnet18, lr: 1.0e+6, optimizer: sgd}",
        "--set",
        "search.starting_points=[]",
        "--set",
        f"results_dir={tmp_path / 'runs'}",
        cwd=tmp_path,
    )
    assert "2/2 done: 0 running, 0 complete, 0 pruned, 2 failed" in proc.stdout
    assert "FAILED (NonFiniteLoss: loss is" in proc.stdout
    trials = optuna.load_study(study_name="nan", storage=f"sqlite:///{db}").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    for t in trials:
        assert t.user_attrs["fail_reason"].startswith("NonFiniteLoss: loss is")
        assert "lr=1e+06" in t.user_attrs["fail_reason"]


class OOMAbove8(torch.nn.Module):
    """Stands in for a model too big for the card: a batch above 8 raises what PyTorch raises then."""

    def __init__(self, in_channels: int = 3, classes: int = 2):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 8 and self.training:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (forced by the test)")
        return self.conv(x)


def test_a_trial_out_of_memory_fails_with_the_reason_and_the_others_run(tmp_path: Path) -> None:
    db = tmp_path / "oom.db"
    proc = segtune(
        "run",
        str(SPACES / "demo.yaml"),
        "--storage",
        f"sqlite:///{db}",
        "--study",
        "oom",
        *ONE_AT_A_TIME,
        "--set",
        "dataset={name: synthetic, num_images: 48, image_size: 32}",
        "--set",
        "search.trials=4",
        "--set",
        "search.max_epochs=1",
        "--set",
        "search.grace_period=1",
        "--set",
        "search.sampler=random",
        "--set",
        "search.seed=0",  # draws 16, 8, 16, 16
        "--set",
        "space={arch: 'tests.test_run_e2e:OOMAbove8', batch_size: {choice: [8, 16]}}",
        "--set",
        "search.starting_points=[]",
        "--set",
        f"results_dir={tmp_path / 'runs'}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO)},
    )
    trials = optuna.load_study(study_name="oom", storage=f"sqlite:///{db}").trials
    by_batch = {b: [t for t in trials if t.params["batch_size"] == b] for b in (8, 16)}
    assert by_batch[8] and by_batch[16], "the seed draws both batch sizes"
    for t in by_batch[16]:
        assert t.state == TrialState.FAIL
        assert t.user_attrs["fail_reason"].startswith("OutOfMemoryError: CUDA out of memory at batch size 16 ")
    assert all(t.state == TrialState.COMPLETE for t in by_batch[8])
    assert "FAILED (OutOfMemoryError: CUDA out of memory" in proc.stdout
