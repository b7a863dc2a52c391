"""Plain-text tables for the terminal: what `segtune run` and `segtune status` print."""

from __future__ import annotations

import math
from typing import Any

import optuna

from segtune.config import METRICS
from segtune.objectives import COSTS, direction, pareto_front, study_objectives, trial_points, within
from segtune.search import store


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


HEADERS = {"val_miou": "val_mIoU", "val_dice": "val_Dice", "val_pixel_acc": "pix_acc"}


def metric_columns(metric: str) -> list[str]:
    """The three validation metrics, the study's own (what it ranks by) first."""
    return [metric] + [m for m in METRICS if m != metric]


def best_first(trials: list[optuna.trial.FrozenTrial], metric: str = "val_miou") -> list[optuna.trial.FrozenTrial]:
    """Trials by the value of ``metric`` a user sees (a pruned trial's best epoch), trials without one last."""

    def key(t: optuna.trial.FrozenTrial) -> tuple[int, float]:
        shown = store.shown_value(t, metric)
        return (0 if shown is not None else 1, -(shown if shown is not None else 0.0))

    return sorted(trials, key=key)


def trials_table(study: optuna.Study, limit: int | None = None) -> str:
    """Trials sorted best first (finished before unfinished): what a user reads after a search."""
    metric = store.study_metric(study)
    columns = metric_columns(metric)
    names, limits = study_objectives(study.user_attrs, metric)
    costs = [c for c in COSTS if c in names or c in limits]
    trials = study.get_trials(deepcopy=False)
    front = {p.number for p in pareto_front(trial_points(trials, names, limits), [direction(n) for n in names])}
    rows = []
    for t in best_first(trials, metric)[:limit]:
        a = t.user_attrs
        values = [store.shown_value(t, m) if m == metric else a.get(m) for m in columns]
        extra = [a.get(c) for c in costs]
        if len(names) > 1:
            extra.append("*" if t.number in front else "")
        if limits:
            extra.append("-" if not costs or a.get(costs[0]) is None else "yes" if within(a, limits) else "no")
        rows.append(
            [
                t.number,
                t.state.name,
                *values,
                *extra,
                a.get("epochs_run"),
                _seconds(a.get("wall_time_s")),
                params_text(t.params),
            ]
        )
    headers = [
        "trial",
        "state",
        *[HEADERS[m] for m in columns],
        *costs,
        *(["front"] if len(names) > 1 else []),
        *(["feasible"] if limits else []),
        "epochs",
        "seconds",
        "params",
    ]
    return format_table(headers, rows)


def front_text(study: optuna.Study) -> str | None:
    """A multi-objective study's Pareto front, one line: what `status` prints under its table."""
    metric = store.study_metric(study)
    names, limits = study_objectives(study.user_attrs, metric)
    if len(names) < 2:
        return None
    front = pareto_front(trial_points(study.get_trials(deepcopy=False), names, limits), [direction(n) for n in names])
    shown = "; ".join(
        f"trial {p.number}: " + ", ".join(f"{n} {fmt(v)}" for n, v in zip(names, p.values, strict=True)) for p in front
    )
    where = f" (feasible trials: {', '.join(f'{k} <= {v:g}' for k, v in limits.items())})" if limits else ""
    return f"Pareto front of {' vs '.join(names)}{where}: {shown or 'no complete trial yet'}"


def studies_table(storage: optuna.storages.BaseStorage) -> str:
    """One row per study: trial counts by state, best value, last activity."""
    rows = []
    for frozen in storage.get_all_studies():
        trials = storage.get_all_trials(storage.get_study_id_from_name(frozen.study_name), deepcopy=False)
        count = {s: sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
        values = [t.values[0] for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.values]
        stamps = [t.datetime_complete or t.datetime_start for t in trials if t.datetime_complete or t.datetime_start]
        rows.append(
            [
                frozen.study_name,
                len(trials),
                count[optuna.trial.TrialState.COMPLETE],
                count[optuna.trial.TrialState.PRUNED],
                count[optuna.trial.TrialState.FAIL],
                count[optuna.trial.TrialState.RUNNING],
                max(values) if values else None,
                max(stamps).strftime("%Y-%m-%d %H:%M") if stamps else None,
            ]
        )
    if not rows:
        return "no studies in this store"
    return format_table(["study", "trials", "complete", "pruned", "failed", "running", "best", "last update"], rows)


def study_line(study: optuna.Study) -> str:
    """The line above a study's table: its trials, the trial-epochs they trained, and the budget if it has one."""
    trials = study.get_trials(deepcopy=False)
    trained = sum(int(t.user_attrs.get("epochs_run") or 0) for t in trials)
    budget = ((study.user_attrs.get("spec") or {}).get("search") or {}).get("budget_epochs")
    spent = f" of a budget of {budget}" if budget else ""
    # starting points and the start-up design wait in the study until a run asks for them
    queued = sum(t.state == optuna.trial.TrialState.WAITING for t in trials)
    waiting = f" ({queued} queued, not started)" if queued else ""
    return f"study {study.study_name!r}: {len(trials) - queued} trials{waiting}, {trained} trial-epochs trained{spent}"
