"""Studies that learn from each other: ``search.starting_points: auto`` starts a study from the winners of earlier
studies in the same store, the ones on the most alike data first.

Each study records what its data is (``describe_data`` in search/store/study.py: classes and each one's share of the
train pixels, the canvas, how many pictures), beside the fingerprint that says which files they were. Two studies'
data are alike (:func:`distance`) when they have as many classes with alike shares (the shares sorted, so names do
not matter), at an alike size, with alike numbers of pictures. From the nearest studies, their best distinct
complete configurations join the spec's own starting points, as long as they lie inside this study's space; those
that do not are dropped, and `run` says which and why. Studies made before segtune recorded the description are
skipped, with a note: their data cannot be compared.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from segtune import space
from segtune.config import DEFAULTS, TrialConfig
from segtune.data import SegData
from segtune.errors import SpecError
from segtune.search import store
from segtune.search.store.study import DATA_ATTR, describe_data
from segtune.tables import params_text

AUTO = "auto"
PER_STUDY = 2  # the best distinct configurations taken from each earlier study
MOST = 4  # starting points added in all


def distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """0 for the same kind of data; about 1 per unlike class count, per unlike class balance, per doubling of the
    canvas or of the train pictures."""
    shares_a, shares_b = sorted(a["shares"], reverse=True), sorted(b["shares"], reverse=True)
    n = max(len(shares_a), len(shares_b))
    padded = [np.pad(s, (0, n - len(s))) for s in (shares_a, shares_b)]
    balance = float(np.abs(padded[0] - padded[1]).sum())  # 0..2
    area = math.log2(max(1, a["canvas"][0] * a["canvas"][1]) / max(1, b["canvas"][0] * b["canvas"][1])) / 2
    pictures = math.log2(max(1, a["images"].get("train", 1)) / max(1, b["images"].get("train", 1)))
    return abs(a["classes"] - b["classes"]) + balance + abs(area) + abs(pictures) / 2


@dataclass
class Candidate:
    study: str
    trial: int
    value: float
    distance: float
    config: dict[str, Any]


def candidates(
    storage: optuna.storages.BaseStorage, this: str, here: dict[str, Any]
) -> tuple[list[Candidate], list[str]]:
    """The best distinct complete configurations of the other studies, nearest data first; and the studies skipped."""
    found, skipped = [], []
    for summary in storage.get_all_studies():
        if summary.study_name == this:
            continue
        attrs = summary.user_attrs
        if DATA_ATTR not in attrs:
            skipped.append(summary.study_name)
            continue
        study = store.load_study(storage, summary.study_name)
        d = distance(here, attrs[DATA_ATTR])
        seen: set[str] = set()
        for t in sorted(
            study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
            key=lambda t: store.objective_value(t) or -math.inf,
            reverse=True,
        ):
            config = t.user_attrs.get("config")
            key = json.dumps(config, sort_keys=True)
            if not config or key in seen:
                continue
            seen.add(key)
            found.append(Candidate(summary.study_name, t.number, store.objective_value(t) or 0.0, d, config))
            if len(seen) == PER_STUDY:
                break
    found.sort(key=lambda c: (c.distance, -c.value))
    return found, skipped


def starting_points(
    storage: optuna.storages.BaseStorage,
    this: str,
    data: SegData,
    params: dict[str, Any],
    num_classes: int,
    own: list[dict[str, Any]],
    out: Any,
) -> list[tuple[dict[str, Any], str]]:
    """Up to MOST winners of earlier studies inside the space (as Optuna params, with where each comes from), none
    of them one of ``own`` (the spec's starting points); what was dropped and skipped is said on ``out``."""
    found, skipped = candidates(storage, this, describe_data(data))
    kept: list[tuple[dict[str, Any], str]] = []
    dropped = []
    for c in found:
        if len(kept) >= MOST:
            break
        config = TrialConfig.from_dict(c.config)
        where = f"study {c.study} trial {c.trial}"
        # what the space does not search must be what this study's trials get: a value or the default
        fixed = {k: v for k, v in config.to_dict().items() if k in params}
        unset = [k for k, v in config.to_dict().items() if k not in params and v != DEFAULTS[k]]
        try:
            if unset:
                raise SpecError(f"{where}: {unset[0]}={c.config[unset[0]]!r}, which this study's space does not set")
            space.starting_point_params(params, fixed, num_classes, where)
            point = space.active_params(params, config)
        except SpecError as e:
            dropped.append(str(e))
            continue
        if point not in own and point not in [p for p, _ in kept]:
            kept.append((point, f"{c.study}/{c.trial}"))
            print(
                f"starting point from study {c.study!r} trial {c.trial} (value {c.value:.4f}, data distance "
                f"{c.distance:.2f}): {params_text(point)}",
                file=out,
            )
    for reason in dropped:
        print(f"starting point dropped, outside this study's space: {reason}", file=out)
    if skipped:
        print(
            f"note: {len(skipped)} studies of this store recorded no data description (made before segtune "
            f"recorded it): not used as starting points ({', '.join(skipped[:5])})",
            file=out,
        )
    return kept
