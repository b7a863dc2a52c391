"""A node lost between a trial's last epoch and the fetch of its model (the docker smoke test met it: the fetch
waits for a worker process on that busy node, and the worker was killed in that window). The trial's values are
real, so it must not end as a failure of its own: its model comes from the copy it sent beside its states when
that copy is of its best epoch, and else the trial ends FAIL (interrupted) with its state kept, for --resume.

Real Ray (a local one-node cluster: a node that is not in it is a node that is gone), a real SQLite store, real
checkpoints; the recorder is driven with the results Tune would hand it."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import ray
import torch
from optuna.trial import TrialState

from segtune.config import TrialConfig
from segtune.data.resize import ResizePolicy
from segtune.search import store
from segtune.search.ray_trials import TRIAL_KEY
from segtune.search.store import artifacts
from segtune.search.store.recorder import StoreRecorder
from segtune.search.store.resume import prepare_resume
from segtune.training import checkpoint
from segtune.training.models import build_model

GONE = "ab" * 28  # a node id Ray does not know: the node the trials trained on, lost since


@pytest.fixture()
def local_ray() -> Iterator[None]:
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def kept_model(states: Path, number: int, epoch: int) -> None:
    """The best epoch's model as a trial's StateSaver sends it beside its states (trial_0000.model.pt)."""
    cfg = TrialConfig.from_dict({"arch": "SmallUNet", "encoder": "-"})
    model = build_model(cfg, 2)
    path = states / f"trial_{number:04d}.model.pt"
    checkpoint.save(path, model, cfg, ["bg", "fg"], ResizePolicy.from_spec(32), epoch=epoch)
    (states / f"trial_{number:04d}.e0002.state").write_bytes(b"its state after epoch 2")


def end_on_a_lost_node(recorder: StoreRecorder, number: int, best_epoch: int) -> None:
    from ray.tune.experiment import Trial

    trial = Trial("segtune", config={TRIAL_KEY: number}, stub=True)
    for epoch in (1, 2, 3):
        result = {
            "epoch": epoch,
            "val_miou": 0.1 * epoch if epoch <= best_epoch else 0.05,
            "epoch_seconds": 1.0,
            "best_epoch": min(epoch, best_epoch),
            "best_val_miou": 0.1 * min(epoch, best_epoch),
            "checkpoint": f"/on/the/lost/node/trial_{number:04d}",
            "node_id": GONE,
            "shared_with_driver": False,
            "state_epoch": 2 if epoch >= 2 else 0,
        }
        recorder.on_trial_result(0, [], trial, result)
    recorder.on_trial_complete(0, [], trial)


def test_a_model_lost_with_its_node_comes_from_the_kept_copy_or_the_trial_runs_again(
    tmp_path: Path, local_ray: None
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    study = optuna.create_study(study_name="s", storage=store.open_storage(url), direction="maximize")
    states = tmp_path / "states"
    states.mkdir()
    for _ in range(2):
        t = study.ask()
        t.set_user_attr("ray_trial_id", f"ray{t.number}")
        t.set_user_attr("state_folder", str(states))
    kept_model(states, 0, epoch=2)  # trial 0's best was epoch 2, before its state after epoch 2 was sent: kept
    kept_model(states, 1, epoch=1)  # trial 1's best is epoch 3, after its last state: nowhere but the lost node
    recorder = StoreRecorder(
        url, "s", max_epochs=3, metric="val_miou", artifacts=str(tmp_path / "artifacts"), states=str(states)
    )
    end_on_a_lost_node(recorder, 0, best_epoch=2)
    end_on_a_lost_node(recorder, 1, best_epoch=3)
    recorder.writer.close()

    study = optuna.load_study(study_name="s", storage=url)
    first, second = study.trials
    assert first.state == TrialState.COMPLETE, first.user_attrs.get("fail_reason")
    stored = artifacts.fetch(study, 0, artifacts.MODEL, artifacts.open_store(str(tmp_path / "artifacts")))
    assert torch.load(io.BytesIO(stored.read_bytes()), weights_only=True)["epoch"] == 2  # its best epoch's model

    assert second.state == TrialState.FAIL
    assert second.user_attrs["fail_reason"].startswith("interrupted: its node"), second.user_attrs["fail_reason"]
    assert (states / "trial_0001.e0002.state").is_file()  # kept: the trial goes on from it
    assert recorder.lost_models == [f"trial 1: ended FAIL (interrupted): {second.user_attrs['fail_reason'][13:]}"]

    out = io.StringIO()
    assert prepare_resume(study, target=2, run_id="resumed", out=out) == 1  # trial 0 counts; trial 1 runs again
    assert "trial 1: interrupted; queued again from its state after epoch 2" in out.getvalue()
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["retry_of"] for t in queued] == [1]


def test_a_paused_trial_ended_at_the_search_end_takes_its_kept_model_when_its_node_is_gone(
    tmp_path: Path, local_ray: None
) -> None:
    """promotion: a trial nobody promoted ends PRUNED when the search ends (prune_paused), its files fetched then,
    long after its last epoch: its node may be gone by then, and its best epoch's copy beside its states serves."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    study = optuna.create_study(study_name="s", storage=store.open_storage(url), direction="maximize")
    states = tmp_path / "states"
    states.mkdir()
    trial = study.ask()
    attrs = {"run_id": "r1", "paused": True, "best_epoch": 2, "files_at": ["/lost/trial_0000", GONE, False]}
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    trial.report(0.2, step=2)
    kept_model(states, 0, epoch=2)
    recorder = StoreRecorder(
        url, "s", max_epochs=3, metric="val_miou", artifacts=str(tmp_path / "artifacts"), states=str(states)
    )
    assert recorder.prune_paused("r1") == 1
    study = optuna.load_study(study_name="s", storage=url)
    ended = study.trials[0]
    assert ended.state == TrialState.PRUNED, ended.user_attrs.get("fail_reason")
    stored = artifacts.fetch(study, 0, artifacts.MODEL, artifacts.open_store(str(tmp_path / "artifacts")))
    assert torch.load(io.BytesIO(stored.read_bytes()), weights_only=True)["epoch"] == 2


def test_a_trial_on_a_node_without_the_drivers_disk_sends_its_last_best_files_before_its_last_report(
    tmp_path: Path, local_ray: None
) -> None:
    """The window the copies beside the states left open: no state follows a trial's last epoch, so an improvement
    made in that epoch was only on the trial's node until the driver fetched it. The trial (real Tune, real keeper
    actor, a run folder whose token says "not the driver's disk") now sends those files to the keeper before its
    last report, so the kept copy is of its best epoch whichever epoch that was."""
    from ray import tune

    from segtune.config import TrainSettings
    from segtune.data import build_dataset
    from segtune.search.nodes.keeper import kept_best_files, start_keeper
    from segtune.search.trial.trainable import train_trial
    from segtune.spec import SyntheticSpec

    data = build_dataset(SyntheticSpec(name="synthetic", num_images=16, num_classes=2, image_size=32, seed=0))
    run_dir, states = tmp_path / "run", tmp_path / "driver-states"
    keeper = start_keeper(states)  # writes where the driver is; the trial's own folder is not shared with it
    settings = TrainSettings(metric="val_miou", checkpoint_every=10)  # 3 epochs: no state at all, only the end
    trainable = tune.with_parameters(
        train_trial, data=data, settings=settings, max_epochs=3, run_dir=str(run_dir), keeper=keeper, token="other"
    )
    config = {TRIAL_KEY: 0, "arch": "SmallUNet", "encoder": "-", "batch_size": 4, "lr": 3e-3}
    results = tune.Tuner(
        trainable, param_space=config, run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0)
    ).fit()
    last = results[0].metrics
    assert last["epoch"] == 3 and last["shared_with_driver"] is False
    assert not list(states.glob("*.state"))  # no state was due: the copy comes from the last epoch alone
    kept = kept_best_files(states, 0, int(last["best_epoch"]))
    assert kept is not None, "the keeper holds no copy of the trial's best epoch"
    assert set(kept) == {"model.pt", "overlay.png"}
