"""What the search and its trials say to each other through Ray: the keys of a trial's config that are no
hyperparameter, and what the driver reads of a Ray trial (is it an Optuna trial, the error it raised, what Tune may
pickle of a callback)."""

from __future__ import annotations

from typing import Any

from ray import cloudpickle

HIDDEN_PREFIX = "_segtune"  # config keys that are no hyperparameter: what the search tells a trial
TRIAL_KEY = "_segtune_trial"  # the Optuna trial number, carried in each Ray trial's config
RESUME_KEY = "_segtune_resume_from"  # --resume: the state (on the driver's disk) a re-run trial goes on from
EPOCHS_KEY = "_segtune_epochs"  # an exact budget's last trials: the epochs their schedule ends at (< max_epochs)
PROMOTED_KEY = "_segtune_promoted"  # a paused trial promoted: the epoch it was paused at (it goes on from its state)
FINISHING_KEY = "_segtune_finishing"  # the promotion is the budget's end finishing it (Rungs.finish_one), not ASHA's
SEED_KEY = "_segtune_seed"  # the trial's training seed (its user attr "seed"): a --resume re-run keeps its line's


def is_optuna_trial(trial: Any) -> bool:
    """A Ray trial that is an Optuna trial (not a slot's warm-up, which has no number and is never stored)."""
    return TRIAL_KEY in trial.config


NO_WORKER = "interrupted: Ray could not hand this trial a worker process (its reset failed)"


LOST = ("ActorDiedError", "RayActorError", "NodeDiedError", "OwnerDiedError", "WorkerCrashedError", "died")


def error_reason(trial: Any) -> str:
    """The exception a trial raised, as one line. Read from the trial's local error files: when Tune
    calls back, they are written there but not yet synced to where ``get_pickled_error`` looks."""
    cause = None
    try:
        with open(trial.pickled_error_file, "rb") as f:
            err = cloudpickle.load(f)
        cause = getattr(err, "cause", None) or err
    except Exception:  # noqa: BLE001 - no pickle (or not loadable): fall back to the text file
        pass
    if cause is not None:
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[-1] if text else ''}"[:500]
    try:
        with open(trial.error_file) as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1][:500] if lines else "trial raised an error"
    except (OSError, TypeError):
        return "trial raised an error (no error file)"
