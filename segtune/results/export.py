"""Best (or N-th best) complete trial -> a retrain spec: the dataset, fixed hyperparameters, epochs, provenance."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

import segtune
from segtune import space
from segtune.errors import StoreError
from segtune.objectives import within
from segtune.search import store
from segtune.training.models import code_module, refuse_code


def ranked_complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(done, key=lambda t: store.objective_value(t) or float("-inf"), reverse=True)


def trial_config(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The trial's full configuration: recorded at suggestion time, else rebuilt from the spec's space."""
    if "config" in trial.user_attrs:
        return dict(trial.user_attrs["config"])
    params = space.parse_space(study.user_attrs.get("spec", {}).get("space", {}))
    return space.sample(optuna.trial.FixedTrial(trial.params), params).to_dict()  # replays the trial's draws


def within_budget(study: optuna.Study, ranked: list[optuna.trial.FrozenTrial], budget: dict[str, float]) -> list:
    """The complete trials whose measured costs meet ``budget`` (--max-latency-ms ...), most accurate first."""
    for name in budget:
        if not any(t.user_attrs.get(name) is not None for t in ranked):
            raise StoreError(
                f"--max-{name.replace('_', '-')}: study {study.study_name!r} measured no {name} (name it "
                "in search.objectives or search.constraints to measure it)"
            )
    kept = [t for t in ranked if within(t.user_attrs, budget)]
    if not kept:
        missed = next(n for n in budget if all((t.user_attrs.get(n) or float("inf")) > budget[n] for t in ranked))
        cheapest = min(ranked, key=lambda t: t.user_attrs.get(missed) or float("inf"))
        raise StoreError(
            f"no complete trial has {missed} <= {budget[missed]:g}; the cheapest, trial "
            f"{cheapest.number}, has {cheapest.user_attrs.get(missed):g}"
        )
    return kept


def planned_epochs(study: optuna.Study, trial: optuna.trial.FrozenTrial, spec: dict[str, Any]) -> int:
    """The epochs a trial's schedule ran: the search's ``max_epochs``, or fewer for a trial an exact budget
    shortened (search/store/budget.py): it retrains as it ran."""
    planned = trial.user_attrs.get("epochs_planned")
    return int(planned or study.user_attrs.get("max_epochs", spec["search"]["max_epochs"]))


def export(
    study: optuna.Study,
    storage_url: str,
    rank: int = 1,
    epochs: int | None = None,
    budget: dict[str, float] | None = None,
    trust_code: bool = False,
) -> dict[str, Any]:
    ranked = ranked_complete(study)
    if not ranked:
        raise StoreError(f"study {study.study_name!r} has no complete trial to export yet")
    if budget:
        ranked = within_budget(study, ranked, budget)
    if not 1 <= rank <= len(ranked):
        raise StoreError(
            f"--rank: {rank} is out of range; study {study.study_name!r} has {len(ranked)} complete trials"
        )
    trial = ranked[rank - 1]
    config = trial_config(study, trial)
    refuse_code(config.get("arch"), trust_code, f"study {study.study_name!r} trial {trial.number}")
    metric = store.study_metric(study)
    spec = study.user_attrs.get("spec")
    if not spec:
        raise StoreError(f"study {study.study_name!r} was not made by segtune run (no spec in its attributes)")
    return {
        "name": f"{study.study_name}-trial{trial.number}",
        "dataset": spec["dataset"],
        "config": config,
        "epochs": epochs or planned_epochs(study, trial, spec),
        **({"seed": trial.user_attrs["seed"]} if trial.user_attrs.get("seed") is not None else {}),
        "metric": metric,
        "train": spec.get("train", {}),
        "resources": spec.get("resources", {}),  # retrain trains on a slot with a trial's resources
        "provenance": {
            "storage": store.redact(storage_url),
            "study": study.study_name,
            "trial": trial.number,
            "rank": rank,
            "metric": metric,
            metric: store.objective_value(trial),
            "epochs_run": trial.user_attrs.get("epochs_run"),
            "checkpoint": trial.user_attrs.get("checkpoint"),
            **({"budget": budget, **{k: trial.user_attrs.get(k) for k in budget}} if budget else {}),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "segtune_version": segtune.__version__,
        },
    }


def write(doc: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# segtune retrain spec, exported from study {doc['provenance']['study']!r}\n"
    module = code_module(doc["config"].get("arch"))
    if module is not None:  # say it where the next reader of the file will look
        header += (
            f"# its model is {doc['config']['arch']!r}: retraining it imports and runs module {module} "
            "(segtune retrain refuses it without --trust-code)\n"
        )
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    return path
