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


def test_a_resumed_rerun_of_a_trial_the_budgets_end_was_finishing_is_not_judged_again(tmp_path: Path) -> None:
    """The exact budget's end was finishing trial 0 (Rungs.finish_one) when its driver died: --resume queues it
    again, and the re-run (a new trial number) must still run to the end of its schedule, not pause at the next
    rung as a new trial with a low value would."""
    import io

    from segtune.search import store
    from segtune.search.scheduling.rungs import Rungs
    from segtune.search.store.resume import FINISHING, prepare_resume

    raw = {**RAW, "space": {**RAW["space"], "encoder": "resnet18"}, "search": {**RAW["search"], "max_epochs": 9}}
    spec = spec_mod.validate(raw)
    url = f"sqlite:///{tmp_path / 's.db'}"
    prepare_study(spec, url, "pairs", build_dataset(spec.dataset))
    dead = OptunaStoreSearcher(url, "pairs", "run-1", spec).suggest("ray-0")[TRIAL_KEY]
    study = optuna.load_study(study_name="pairs", storage=url)
    store.trial_handle(study, dead).set_user_attr(FINISHING, True)  # its driver (this process) is gone for --resume

    out = io.StringIO()
    prepare_resume(study, target=6, run_id="run-2", out=out)
    assert f"trial {dead}: interrupted; queued again" in out.getvalue()
    rungs = Rungs(max_epochs=9, grace_period=1, reduction_factor=3, promote=True)
    for other in (100, 101, 102):  # earlier trials set a high bar at the first rung
        rungs.stop(other, 1, 0.9)
    rerun = OptunaStoreSearcher(url, "pairs", "run-2", spec, rungs=rungs).suggest("ray-1")[TRIAL_KEY]
    assert study.trials[rerun].user_attrs["retry_of"] == dead
    assert not rungs.stop(rerun, 1, 0.1), "the re-run of a finishing trial was paused at a rung"
    assert not rungs.stop(rerun, 3, 0.1)
    assert rungs.stop(103, 1, 0.1), "a trial not finishing, as low, stops there (the bar is real)"


def test_a_resumed_rerun_near_an_exact_budgets_end_keeps_its_own_schedule(tmp_path: Path) -> None:
    """A re-run goes on from its dead trial's state: near the end of an exact budget it gets the rest of that trial's
    schedule, not a new trial's grant counted from epoch 0 (which, at 4 epochs left for a trial whose state is after
    epoch 7 of 9, told it to end at epoch 4: it trained nothing and was recorded COMPLETE with 4 epochs planned)."""
    from segtune.search.ray_trials import EPOCHS_KEY
    from segtune.search.store.budget import Budget

    raw = {**RAW, "space": {**RAW["space"], "encoder": "resnet18"}, "search": {**RAW["search"], "max_epochs": 9}}
    spec = spec_mod.validate(raw)
    url = f"sqlite:///{tmp_path / 's.db'}"
    prepare_study(spec, url, "pairs", build_dataset(spec.dataset))
    study = optuna.load_study(study_name="pairs", storage=url)
    dead = study.ask()
    study.tell(dead, state=TrialState.FAIL)
    for left, schedule in ((4, 9), (1, 8)):  # the rest of its schedule (2 epochs) fits in 4; in 1 it ends at 8
        study.enqueue_trial(
            {"encoder": "resnet18", "lr": 1e-3},
            user_attrs={"retry_of": dead.number, "resume_from": {"path": str(tmp_path / "state.pt"), "epoch": 7}},
        )
        budget = Budget(8 + left, used=8, rule="exact", max_epochs=9)  # the dead trial trained 8 epochs
        config = OptunaStoreSearcher(url, "pairs", f"run-{left}", spec, budget=budget).suggest(f"ray-{left}")
        rerun = optuna.load_study(study_name="pairs", storage=url).trials[config[TRIAL_KEY]]
        assert rerun.user_attrs["retry_of"] == dead.number
        assert config.get(EPOCHS_KEY, 9) == schedule, config
        assert rerun.user_attrs.get("epochs_planned", 9) == schedule
        assert budget.left == left - (schedule - 7), "the re-run reserves the epochs it will train, no more"
