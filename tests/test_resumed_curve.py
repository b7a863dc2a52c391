"""A --resume re-run goes on from the dead trial's newest state on the driver's disk. That state can be newer
than the dead driver's last write to the store (a CI run met it: the state after epoch 2 was on disk, the store
had epoch 1 only). The re-run's curve must still be whole: the epochs the store never got come from the state's
own history. Real SQLite store; the recorder is driven with the result Tune would hand it."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from segtune.search import store
from segtune.search.ray_trials import TRIAL_KEY
from segtune.search.store.recorder import StoreRecorder


def test_a_resumed_trial_takes_the_epochs_its_state_has_and_the_store_missed(tmp_path: Path) -> None:
    from ray.tune.experiment import Trial

    url = f"sqlite:///{tmp_path / 'store.db'}"
    study = optuna.create_study(study_name="s", storage=store.open_storage(url), direction="maximize")
    dead = study.ask()
    dead.report(0.1, step=1)  # the store's last write before the driver died
    study.tell(dead, state=TrialState.FAIL)
    retry = study.ask()
    retry.report(0.1, step=1)  # carried over from the store when it was asked (searcher._carry_over)

    recorder = StoreRecorder(url, "s", max_epochs=5, metric="val_miou")
    trial = Trial("segtune", config={TRIAL_KEY: retry.number}, stub=True)
    history = [{"epoch": e, "epoch_seconds": 1.0, "val_miou": v} for e, v in ((1, 0.1), (2, 0.2))]
    # its first result: the state's epoch (3) once more, with the epochs before it
    recorder.on_trial_result(0, [], trial, {"epoch": 3, "val_miou": 0.3, "resumed_history": history})
    recorder.on_trial_result(0, [], trial, {"epoch": 4, "val_miou": 0.4})
    recorder.writer.close()

    resumed = optuna.load_study(study_name="s", storage=url).trials[retry.number]
    assert resumed.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}
    assert resumed.user_attrs["epoch_seconds"] == [1.0, 1.0, 0.0, 0.0]
