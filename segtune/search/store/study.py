"""A search's study in the store: created or loaded, this run's spec and data recorded, and how many trials a run
(or a --resume) adds."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna

import segtune
from segtune import objectives
from segtune.data import SegData
from segtune.search import store
from segtune.search.store import comparable
from segtune.search.store import resume as resume_mod
from segtune.spec import BUILTIN_PREFIX, StudySpec, resolve_root, to_dict

DATA_ATTR = "data_description"


def describe_data(data: SegData) -> dict[str, Any]:
    """What the data is, to find studies on alike data: classes and their train shares, canvas, picture counts."""
    masks = data.masks[data.splits["train"]]
    counts = np.bincount(masks.ravel(), minlength=256)[: data.num_classes].astype(np.float64)
    shares = (counts / max(1.0, counts.sum())).round(4).tolist()
    return {
        "classes": len(data.classes),
        "shares": shares,
        "canvas": list(data.canvas),
        "images": {split: int(len(idx)) for split, idx in data.splits.items()},
    }


def stored_spec(spec: StudySpec) -> dict[str, Any]:
    """The spec as the study keeps it: no store password, the dataset root absolute (export and
    report may run from another folder)."""
    spec_dict = to_dict(spec)
    spec_dict["storage"] = store.redact(spec_dict["storage"])
    root = spec_dict["dataset"].get("root")
    if root and not root.startswith(BUILTIN_PREFIX):
        spec_dict["dataset"]["root"] = str(resolve_root(root))
    return spec_dict


def refuse_incomparable(
    spec: StudySpec, storage_url: str, study_name: str, data: SegData, allow_spec_change: bool, out: Any
) -> optuna.Study | None:
    """The study already in the store, if any, once this run is known to be comparable with its trials (a run that
    is not is refused, unless ``allow_spec_change``, which is said)."""
    existing = store.existing_study(storage_url, study_name)
    if existing is not None:
        changed = comparable.check(existing, stored_spec(spec), data, allow_spec_change)
        if changed:
            print(f"note: --allow-spec-change: adding trials to {study_name!r} although {'; '.join(changed)}", file=out)
    return existing


def prepare_study(
    spec: StudySpec, storage_url: str, study_name: str, data: SegData, run_id: str = "check"
) -> optuna.Study:
    """Create the study, or load it to add trials; record this run's spec (without password), the data's
    fingerprint and classes, and segtune's version."""
    storage = store.open_storage(storage_url)
    names = spec.search.objective_names
    study = optuna.create_study(
        study_name=study_name, storage=storage, load_if_exists=True, directions=[objectives.direction(n) for n in names]
    )
    study.set_metric_names(names)  # optuna-dashboard shows val_miou (and latency_ms), not "Objective 0"
    comparable.record_run(study, run_id, stored_spec(spec), data)
    study.set_user_attr("segtune_version", segtune.__version__)
    study.set_user_attr(DATA_ATTR, describe_data(data))  # what the data is: later studies compare theirs
    study.set_user_attr("metric", spec.search.metric)
    study.set_user_attr("max_epochs", spec.search.max_epochs)
    study.set_user_attr("budget_epochs", spec.search.budget_epochs)
    study.set_user_attr("objectives", names)
    study.set_user_attr("constraints", spec.search.constraints)
    return study


def plan(study: optuna.Study, spec: StudySpec, resume: bool, run_id: str, out: Any) -> int:
    """How many trials this run (``run_id``) adds. --resume: a dead driver's paused trials stay paused in this run,
    its other orphans are marked FAIL and the interrupted trials queued again, and the run goes on until the study
    holds ``search.trials``. Without it: all of ``search.trials``, with a note when a dead driver left trials
    RUNNING."""
    if not resume:
        lost = resume_mod.orphans(study)
        if lost:
            print(
                f"note: {len(lost)} trials of {study.study_name!r} are RUNNING under a driver that is gone; "
                "`segtune run --resume` keeps its paused trials paused, marks the others FAIL and re-runs them",
                file=out,
            )
        return spec.search.trials
    remaining = resume_mod.prepare_resume(study, spec.search.trials, run_id, out)
    if remaining == 0:
        print(
            f"study {study.study_name!r} already holds {spec.search.trials} finished trials (search.trials): "
            "nothing to run",
            file=out,
        )
    return remaining
