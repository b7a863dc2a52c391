"""A study's trials stay comparable: a re-run that changes what a trial's value means is refused.

TPE models every trial of a study as one history, and `status` ranks them in one list, so a trial
scored on other data, at another size or over more epochs must not join them silently. What may
change freely between runs: ``search.trials``, seeds, resources, and the space itself. The data is
compared by what it is (its fingerprint), not by where it is mounted.
"""

from __future__ import annotations

import json
import time
from typing import Any

import optuna

from segtune.data import SegData
from segtune.errors import SpecError
from segtune.spec import dataset_defaults

FREE_DATASET_FIELDS = ("root", "download")  # where the data is, not what it is
COMPARED_SEARCH_FIELDS = ("max_epochs", "metric", "objectives", "constraints")
RUNS_ATTR = "runs"  # every run's spec, oldest first (the study attr "spec" is the latest)
# what a field meant before it existed: a spec stored then must not match today's default by accident
LEGACY = {"resize": "squash"}  # segtune 0.1 stretched every picture to a square


def identity(spec: dict[str, Any], classes: list[str] | None, fingerprint: str | None) -> dict[str, Any]:
    """What must match between two runs of one study, as dotted field -> value."""
    spec = json.loads(json.dumps(spec))  # as the store holds it: mapping keys are strings
    dataset = {**dataset_defaults(spec["dataset"]), **LEGACY, **spec["dataset"]}
    out = {f"dataset.{k}": v for k, v in sorted(dataset.items()) if k not in FREE_DATASET_FIELDS}
    search = spec.get("search", {})
    out.update({f"search.{k}": search.get(k) for k in COMPARED_SEARCH_FIELDS})
    if classes is not None:
        out["classes"] = classes
    if fingerprint:
        out["dataset files"] = fingerprint
    return out


def differences(study: optuna.Study, spec_dict: dict[str, Any], data: SegData) -> list[str]:
    """Each field whose value differs between the study and this run, with both values."""
    stored = study.user_attrs.get("spec")
    if not stored:
        return []  # a study segtune did not make, or one that never ran: nothing to compare with
    old = identity(stored, study.user_attrs.get("classes"), study.user_attrs.get("data_fingerprint"))
    new = identity(spec_dict, data.classes, data.fingerprint)
    return [f"{k}: {old[k]!r} in the study, {new.get(k)!r} now" for k in old if k in new and old[k] != new[k]]


def check(study: optuna.Study, spec_dict: dict[str, Any], data: SegData, allow_change: bool) -> list[str]:
    """Refuse (SpecError) a run whose trials would not be comparable with the study's, unless allowed."""
    changed = differences(study, spec_dict, data)
    if changed and not allow_change:
        raise SpecError(
            f"study {study.study_name!r} holds trials of another setup ({'; '.join(changed)}): its trials would not "
            "be comparable; use another --study name, or --allow-spec-change to add them anyway"
        )
    return changed


def record_run(study: optuna.Study, run_id: str, spec_dict: dict[str, Any], data: SegData) -> None:
    """Keep every run's spec (the latest also as the ``spec`` attr, which export and report read)."""
    runs = list(study.user_attrs.get(RUNS_ATTR, []))
    runs.append(
        {
            "run_id": run_id,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "spec": spec_dict,
            "data_fingerprint": data.fingerprint,
        }
    )
    study.set_user_attr(RUNS_ATTR, runs)
    study.set_user_attr("spec", spec_dict)
    study.set_user_attr("data_fingerprint", data.fingerprint)
    study.set_user_attr("classes", data.classes)
