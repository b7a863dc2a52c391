"""What a search leaves on disk. A trial's run folder and the copy kept beside its resumable states share the file (a
hard link) when they are on one filesystem; the artifact store holds a file of its own (a reflink where the
filesystem has them, else a copy: issue 38, a user's `torch.save` over the run folder's file rewrote a stored model
that shared it), so a stored model stays as it was uploaded whatever happens to the run folder afterwards. And the
states of paused trials (a few hundred MB each, most never promoted) go, least promising first, before the
driver's disk is fuller than the search allows (search.keep_free_gb).

Real searches, real SQLite stores, real files; /dev/shm (a tmpfs) is the other filesystem."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from segtune.search.nodes.files import write_atomic
from segtune.search.nodes.keeper import StateSaver, best_files
from segtune.search.store import artifacts
from tests.conftest import ONE_AT_A_TIME, demo_args, segtune


def test_a_search_stores_each_trials_model_as_a_file_of_its_own_with_its_hash(searched) -> None:
    tmp, _ = searched
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{tmp / 'store.db'}")
    folder = Path(study.user_attrs[artifacts.ATTR])
    ended = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(ended) >= 8
    for t in ended:
        in_run = Path(t.user_attrs["checkpoint"], artifacts.MODEL)
        stored = folder / artifacts.files_of(study, t.number)[artifacts.MODEL]
        assert not os.path.samefile(in_run, stored), f"trial {t.number}: the store holds the run folder's own file"
        assert artifacts.sha256(stored) == artifacts.sha256(in_run) == t.user_attrs[artifacts.SHA256_ATTR]


def one_trial_store(tmp_path: Path) -> tuple[optuna.Study, Path]:
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'store.db'}", direction="maximize")
    study.ask()  # the driver uploads a trial's files before it tells the store how the trial ended
    run = tmp_path / "runs" / "trial_0000"
    write_atomic(run / artifacts.MODEL, b"the weights of epoch 3")
    return study, run / artifacts.MODEL


def test_a_stored_model_stays_as_uploaded_when_its_run_folder_is_written_over_or_deleted(tmp_path: Path) -> None:
    study, model = one_trial_store(tmp_path)
    store = artifacts.open_store(str(tmp_path / "artifacts"))
    artifacts.upload(study, 0, model, store)
    stored = tmp_path / "artifacts" / artifacts.files_of(study, 0)[artifacts.MODEL]
    assert not os.path.samefile(model, stored)

    for fetched_into in ("a", "b", "c"):
        (tmp_path / fetched_into).mkdir()
    model.write_bytes(b"weights a user saved over it, in place")  # the same file, truncated and rewritten
    assert artifacts.fetch(study, 0, artifacts.MODEL, store, tmp_path / "a").read_bytes() == b"the weights of epoch 3"
    write_atomic(model, b"the weights of epoch 5")  # a promoted trial saves its new best over it
    assert artifacts.fetch(study, 0, artifacts.MODEL, store, tmp_path / "b").read_bytes() == b"the weights of epoch 3"
    shutil.rmtree(tmp_path / "runs")  # a user clears the run folders
    assert artifacts.fetch(study, 0, artifacts.MODEL, store, tmp_path / "c").read_bytes() == b"the weights of epoch 3"


def test_a_store_on_another_filesystem_gets_a_copy(tmp_path: Path) -> None:
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem here (/dev/shm)")
    study, model = one_trial_store(tmp_path)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as elsewhere:
        store = artifacts.open_store(elsewhere)
        artifacts.upload(study, 0, model, store)
        stored = Path(elsewhere, artifacts.files_of(study, 0)[artifacts.MODEL])
        assert stored.read_bytes() == b"the weights of epoch 3" and not os.path.samefile(model, stored)


def test_the_best_files_kept_beside_a_trials_states_are_its_own_files_until_a_new_best_replaces_them(
    tmp_path: Path,
) -> None:
    best, states = tmp_path / "run" / "trial_0000", tmp_path / "run" / "states"
    write_atomic(best / artifacts.MODEL, b"the weights of epoch 1")
    write_atomic(best / artifacts.OVERLAY, b"the overlay of epoch 1")
    saver = StateSaver(states, 0, keeper=None, shared=True, best=best)  # the trial shares the driver's disk
    saver.save(1, {"epoch": 1})
    saver.wait()
    assert saver.error is None
    for name in (artifacts.MODEL, artifacts.OVERLAY):
        assert os.path.samefile(best / name, states / f"trial_0000.{name}"), f"{name} is on disk twice"

    write_atomic(best / artifacts.MODEL, b"the weights of epoch 2")  # a new best, written over the old
    assert best_files(states, 0)[artifacts.MODEL] == b"the weights of epoch 1"  # the kept one is as it was
    saver.save(2, {"epoch": 2})
    saver.wait()
    assert best_files(states, 0) == {
        artifacts.MODEL: b"the weights of epoch 2",
        artifacts.OVERLAY: b"the overlay of epoch 1",
    }
    assert os.path.samefile(best / artifacts.MODEL, states / f"trial_0000.{artifacts.MODEL}")


def test_a_driver_short_of_disk_ends_pauses_at_once_and_says_so(tmp_path: Path) -> None:
    bad = segtune(*demo_args(tmp_path, 3), "--set", "search.keep_free_gb=-1", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "keep_free_gb" in bad.stderr, bad.stderr[-500:]
    assert not (tmp_path / "store.db").exists() or not optuna.get_all_study_names(f"sqlite:///{tmp_path / 'store.db'}")

    # more free disk than any machine has: every pause ends as it begins, as stops did before promotion
    args = (*demo_args(tmp_path, 5, epochs=3), *ONE_AT_A_TIME, "--set", "search.keep_free_gb=1000000")
    out = segtune(*args, cwd=tmp_path).stdout
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{tmp_path / 'store.db'}")
    ended = [t for t in study.trials if "pause_ended" in t.user_attrs]
    assert ended, "no trial was paused: the test proves nothing"  # the first rung waits for 3: trial 1 pauses
    for t in ended:
        assert t.state == TrialState.PRUNED and t.user_attrs["paused"] is False
        assert "below search.keep_free_gb (1e+06)" in t.user_attrs["pause_ended"]
        assert f"trial {t.number}'s pause ended (pruned)" in out
    assert not any("promoted_at_epoch" in t.user_attrs for t in study.trials)
    assert len(study.trials) == 5 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
