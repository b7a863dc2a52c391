"""What a finished trial tells Optuna: one function for `run` (the recorder) and the replay benchmark."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState


def outcome(
    epochs_run: int, max_epochs: int, best_value: float | None, costs: list[float] | None = None
) -> tuple[TrialState, list[float] | None]:
    """COMPLETE, valued at its best epoch (and its costs, in a multi-objective study), when the trial ran every
    epoch; otherwise PRUNED (stopped at a rung, or by the end of the search), which Optuna values at its last
    reported epoch in a single-objective study and not at all in a multi-objective one (no front for it)."""
    if epochs_run >= max_epochs and best_value is not None and (costs is None or None not in costs):
        return TrialState.COMPLETE, [best_value, *(costs or [])]
    return TrialState.PRUNED, None


def tell(
    study: optuna.Study,
    number: int,
    epochs_run: int,
    max_epochs: int,
    best_value: float | None,
    costs: list[float] | None = None,
) -> TrialState:
    state, values = outcome(epochs_run, max_epochs, best_value, costs)
    study.tell(number, values, state=state)
    return state
