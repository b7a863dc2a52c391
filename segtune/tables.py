"""Plain-text tables for the terminal: what `segtune run` and `segtune status` print."""

from __future__ import annotations

import math
from typing import Any

import optuna


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 else f"{value:.3g}"
    return str(value)


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, rule, *body])


def _seconds(value: float | None) -> str | None:
    return None if value is None else f"{value:.0f}"


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


def best_first(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Trials by the val mIoU a user sees (a pruned trial's best epoch), trials without one last."""

    def key(t: optuna.trial.FrozenTrial) -> tuple[int, float]:
        shown = t.user_attrs.get("val_miou", t.value)
        return (0 if shown is not None else 1, -(shown if shown is not None else 0.0))

    return sorted(trials, key=key)


def trials_table(study: optuna.Study, limit: int | None = None) -> str:
    """Trials sorted best first (finished before unfinished): what a user reads after a search."""
    rows = []
    for t in best_first(study.get_trials(deepcopy=False))[:limit]:
        a = t.user_attrs
        rows.append(
            [
                t.number,
                t.state.name,
                a.get("val_miou", t.value),
                a.get("val_dice"),
                a.get("val_pixel_acc"),
                a.get("epochs_run"),
                _seconds(a.get("wall_time_s")),
                params_text(t.params),
            ]
        )
    return format_table(["trial", "state", "val_mIoU", "Dice", "pix_acc", "epochs", "seconds", "params"], rows)


def studies_table(storage: optuna.storages.BaseStorage) -> str:
    """One row per study: trial counts by state, best value, last activity."""
    rows = []
    for frozen in storage.get_all_studies():
        trials = storage.get_all_trials(frozen._study_id, deepcopy=False)
        count = {s: sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
        values = [t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
        stamps = [t.datetime_complete or t.datetime_start for t in trials if t.datetime_complete or t.datetime_start]
        rows.append([
            frozen.study_name, len(trials), count[optuna.trial.TrialState.COMPLETE],
            count[optuna.trial.TrialState.PRUNED], count[optuna.trial.TrialState.FAIL],
            count[optuna.trial.TrialState.RUNNING], max(values) if values else None,
            max(stamps).strftime("%Y-%m-%d %H:%M") if stamps else None,
        ])  # fmt: skip
    if not rows:
        return "no studies in this store"
    return format_table(["study", "trials", "complete", "pruned", "failed", "running", "best", "last update"], rows)
