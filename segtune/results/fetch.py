"""A model named by path, or a study's trial fetched from its artifact store: what `predict`, `export-model` and
the report take. A checkpoint named by path still works; a name that is no path is a study in the store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from segtune.errors import StoreError
from segtune.search import store
from segtune.search.store import artifacts


def trial_number(study: optuna.Study, trial: int | None, rank: int) -> int:
    """``--trial N``, else the ``rank``-th best complete trial (1: the best)."""
    if trial is not None:
        if not 0 <= trial < len(study.trials):
            raise StoreError(f"--trial: study {study.study_name!r} has no trial {trial}")
        return trial
    from segtune.results.export import ranked_complete

    ranked = ranked_complete(study)
    if not 1 <= rank <= len(ranked):
        held = f"study {study.study_name!r} has {len(ranked)} complete trials"
        raise StoreError(f"--rank: {rank} is out of range; {held}")
    return ranked[rank - 1].number


def trial_model(study: optuna.Study, number: int, artifacts_url: str | None = None, folder: Path | None = None) -> Path:
    """Trial ``number``'s best weights: where the trial wrote them when this machine sees that folder, else fetched
    from the study's artifact store; either way the model stored at the trial's end (its sha256), else an error
    naming both files."""
    local = study.trials[number].user_attrs.get("checkpoint")
    where = artifacts.study_location(study, artifacts_url)
    if local and Path(local, artifacts.MODEL).is_file():
        path = Path(local, artifacts.MODEL)
        stored = artifacts.stored_file(study, number, where)
        artifacts.verify(study, number, path, f"the stored one: {stored}" if stored else "no store holds it")
        return path
    if where is None:
        raise StoreError(
            f"trial {number}'s model is not on this machine ({local}) and study {study.study_name!r} recorded no "
            "artifact store; pass --artifacts URL"
        )
    fetched = artifacts.fetch(study, number, artifacts.MODEL, artifacts.open_store(where), folder)
    artifacts.verify(study, number, fetched, f"fetched from {artifacts.stored_file(study, number, where)}")
    return fetched


@dataclass
class Source:
    """A model to load: its file, and the dataset it learned when a study says (a trial's checkpoint does not)."""

    path: Path
    dataset: dict[str, Any] | None = None


def resolve(
    model: str,
    storage_url: str,
    trial: int | None = None,
    rank: int = 1,
    artifacts_url: str | None = None,
) -> Source:
    """``model`` as a path when it is one, else a study of the store at ``storage_url`` (its trial ``trial``, or its
    ``rank``-th best complete trial), its model fetched."""
    path = Path(model)
    if path.exists():
        return Source(path)
    try:
        study = store.load_study(store.open_storage(storage_url, must_exist=True), model)
    except StoreError as e:
        raise StoreError(f"{model}: no such file, and not a study of {store.redact(storage_url)} ({e})") from None
    dataset = (study.user_attrs.get("spec") or {}).get("dataset")
    return Source(trial_model(study, trial_number(study, trial, rank), artifacts_url), dataset)
