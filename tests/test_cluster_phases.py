"""Every training phase on the cluster (issue 41, item 3): `finish`'s folds side by side on the slots of a real local
Ray cluster, choosing what one process choosing alone chooses; a worker killed mid-fold costs that fold a few epochs,
not its result; `retrain` on a slot writes the metrics.json it wrote in the driver's own process.

The one-process runs (``--device cpu``, the way both commands trained before) get as many torch threads as each slot
had (the cluster's run says how many): a different count changes a float's last bits, and the comparisons are exact.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from itertools import combinations
from pathlib import Path

import pytest

from tests.conftest import Background, segtune
from tests.test_finish import finish_args, searched_lesions
from tests.test_trust import lesion_folder

pytestmark = pytest.mark.e2e


def overlap(a: dict, b: dict) -> float:
    """Seconds two folds trained at the same time (their own start and end stamps)."""
    return min(a["ended"], b["ended"]) - max(a["started"], b["started"])


def kill_a_fold_mid_training(run: Background, out: Path) -> int:
    """SIGKILL the worker process of configuration 2's first fold (job 2) once the fold saved its first state (it has
    5 epochs): Ray loses the worker, as it would with its node. Returns the killed process's id."""
    run.wait_for("started configuration 2 (trial")
    line = next(line for line in run.lines if "started configuration 2 (trial" in line and "fold 1/2" in line)
    pid = int(re.search(r"worker pid (\d+)", line).group(1))
    deadline = time.monotonic() + 300
    while not list((out / "states").glob("trial_0002.e*.state")):
        assert time.monotonic() < deadline and run.proc.poll() is None, run.output
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return pid


def test_finish_trains_folds_side_by_side_on_the_slots_and_chooses_as_one_process_does(tmp_path: Path) -> None:
    url = searched_lesions(tmp_path)
    out = tmp_path / "cluster"
    run = Background(*finish_args(url, out), "--slots", "2", cwd=tmp_path)
    try:
        killed = kill_a_fold_mid_training(run, out)
        assert run.wait(600) == 0, run.output
    finally:
        run.kill()
    text = run.output
    assert "training on a local Ray cluster: 2 slot(s)" in text and "2 worker(s) up in" in text
    assert f"worker pid {killed}, cpu) was lost" in text and "goes on from its newest state" in text
    record = json.loads((out / "finish.json").read_text())
    folds = record["results"]
    assert sorted(folds) == ["0/0", "0/1", "1/0", "1/1"]

    # side by side: configuration 1's two folds trained at the same time; never more folds at once than slots (a fold
    # runs from its first start to its end, restarts included)
    assert overlap(folds["0/0"], folds["0/1"]) > 0
    for stamp in (f[key] for f in folds.values() for key in ("started", "ended")):
        assert sum(f["started"] <= stamp < f["ended"] for f in folds.values()) <= 2
    # the killed fold went on from its state on another worker
    assert folds["1/0"]["restarts"] == 1 and folds["1/0"]["resumed_from"] >= 1
    assert sum(f["restarts"] for f in folds.values()) == 1
    assert not (out / "states").exists()  # every fold's states went once its model was on the driver's disk

    # the same folds, one after another in this process, as finish trained before: the same scores and choice (the
    # killed fold's included: it trained as if nothing had happened)
    threads = record["settings"]["threads"]
    here = tmp_path / "here"
    proc = segtune(*finish_args(url, here), "--device", "cpu", cwd=tmp_path, env={"OMP_NUM_THREADS": str(threads)})
    assert "Ray cluster" not in proc.stdout and "started configuration 1 (trial" in proc.stdout
    alone = json.loads((here / "finish.json").read_text())
    for key, fold in folds.items():
        assert (fold["val_miou"], fold["val_miou_flip"], fold["images"]) == (
            alone["results"][key]["val_miou"],
            alone["results"][key]["val_miou_flip"],
            alone["results"][key]["images"],
        ), key
    assert alone["summary"] == record["summary"] and alone["test"] == record["test"]
    assert max(overlap(a, b) for a, b in combinations(alone["results"].values(), 2)) <= 0  # one after another


def retrain_spec(tmp: Path) -> Path:
    root = tmp / "lesions"
    lesion_folder(root, n=48)
    spec = tmp / "retrain.yaml"
    spec.write_text(
        json.dumps(
            {
                "name": "les",
                "dataset": {
                    "name": "folder",
                    "root": str(root),
                    "classes": ["skin", "lesion"],
                    "image_size": 64,
                    "split": {"val": 0.25, "test": 0.25, "seed": 1},
                },
                "config": {"arch": "SmallUNet", "augment": "none", "lr": 0.01, "batch_size": 4},
                "epochs": 3,
            }
        )
    )
    return spec


def test_retrain_on_a_slot_writes_the_metrics_it_wrote_in_the_drivers_process(tmp_path: Path) -> None:
    spec = retrain_spec(tmp_path)
    on_slot = segtune("retrain", str(spec), "--out", str(tmp_path / "slot"), cwd=tmp_path).stdout
    assert "training on a local Ray cluster: 1 slot(s)" in on_slot and "started SmallUNet" in on_slot
    assert "epoch 3/3: train loss" in on_slot  # every epoch's line, as it comes from the slot
    threads = re.search(r"each fit on (\d+) thread", on_slot).group(1)
    here = segtune(
        "retrain",
        str(spec),
        "--out",
        str(tmp_path / "here"),
        "--device",
        "cpu",
        cwd=tmp_path,
        env={"OMP_NUM_THREADS": threads},
    ).stdout
    assert "Ray cluster" not in here and "epoch 3/3: train loss" in here
    slot = json.loads((tmp_path / "slot" / "metrics.json").read_text())
    alone = json.loads((tmp_path / "here" / "metrics.json").read_text())
    assert slot == alone  # the same fields, the same values
    assert {"test_miou", "test_at_training_size", "best_val_epoch", "val_miou", "provenance"} <= set(slot)
    for run in ("slot", "here"):
        assert (tmp_path / run / "model.pt").is_file() and len(list((tmp_path / run / "overlays").glob("*.png"))) == 6


def test_the_compose_driver_needs_no_gpu_and_sends_every_phase_to_the_cluster() -> None:
    """In docker/compose.yaml the driver reserves no GPU, and any segtune command run in it (`finish`, `retrain`) trains
    on the Ray cluster's workers: its RAY_ADDRESS is the head's, so none starts a private local Ray in the container."""
    import yaml

    from tests.conftest import REPO

    services = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())["services"]
    driver = services["driver"]
    assert "deploy" not in driver and "runtime" not in driver  # no GPU reserved
    head = next(a for a in driver["command"] if a.endswith(":6379"))
    assert driver["environment"]["RAY_ADDRESS"] == head == "ray-head:6379"


def test_a_fit_on_a_node_without_the_drivers_disk_sends_its_states_and_model_through_ray(tmp_path: Path) -> None:
    """A worker whose node does not share the driver's disk (its token does not read back): each state goes to the
    keeper on the driver's node, the model comes back as bytes, and the same fit run again (its worker was lost) goes
    on from the keeper's newest state to the same result, the best epoch's weights kept across the restart."""
    import ray
    import torch

    from segtune.config import TrainSettings, TrialConfig
    from segtune.data import build_dataset
    from segtune.search.fits import FitJob
    from segtune.search.fits.worker import FitWorker
    from segtune.search.nodes.keeper import start_keeper
    from segtune.spec import validate

    spec = {"study": "s", "dataset": {"name": "synthetic", "num_classes": 2, "image_size": 32, "num_images": 24}}
    data = build_dataset(validate(spec, check_root=False).dataset)
    driver = tmp_path / "driver"
    job = FitJob(
        number=3,
        label="a fit",
        config=TrialConfig(arch="SmallUNet", batch_size=4, lr=0.01),
        epochs=4,
        train=data.splits["train"],
        val=data.splits["val"],
        destination=str(driver / "model.pt"),
        keep="best",
    )
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        keeper = start_keeper(driver / "states")
        settings = TrainSettings(threads=1, checkpoint_every=1)
        worker = FitWorker.options(num_cpus=1).remote(ray.put(data), settings, str(driver), "not its token", keeper)
        first = ray.get(worker.run.remote(job))
        assert first.model_bytes is not None and not (driver / "model.pt").exists()
        assert sorted(p.name for p in (driver / "states").iterdir()) == ["trial_0003.e0003.state"]  # the newest only
        again = ray.get(worker.run.remote(job))  # as after a lost worker: the driver runs the same job once more
    finally:
        ray.shutdown()
    assert (first.resumed_from, again.resumed_from) == (0, 3) and again.started == first.started

    def scores(row: dict) -> dict:  # an epoch's row without its clock
        return {k: v for k, v in row.items() if k not in ("epoch_seconds", "started_at")}

    assert again.best_epoch == first.best_epoch and scores(again.best) == scores(first.best)
    assert scores(again.last) == scores(first.last) and again.evaluation == first.evaluation

    def weights(content: bytes) -> dict[str, torch.Tensor]:
        path = tmp_path / "m.pt"
        path.write_bytes(content)
        return torch.load(path, weights_only=True)["state_dict"]

    kept, resumed = weights(first.model_bytes), weights(again.model_bytes)
    assert all(torch.equal(kept[k], resumed[k]) for k in kept)
