"""A study's search policy for one run: its rungs, with what its earlier trials recorded there, and the trials it
runs before the sampler decides (the spec's starting points, earlier studies' winners, a start-up design)."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from segtune import space
from segtune.data import SegData
from segtune.search.scheduling import defaults
from segtune.search.scheduling.rungs import Rungs
from segtune.search.scheduling.searcher import STARTING_POINT
from segtune.search.store.resume import ADOPTED
from segtune.search.store.study import describe_data
from segtune.spec import StudySpec, num_classes


def plateau(data: SegData) -> float:
    """The validation value of predicting the majority class everywhere: its share of the train pixels over the
    classes present (mIoU averages over them; the majority scores its share, the others 0)."""
    shares = describe_data(data)["shares"]
    present = [x for x in shares if x > 0]
    return max(present) / len(present) if present else 0.0


def study_rungs(
    study: optuna.Study, spec: StudySpec, chosen: defaults.SearchSettings, data: SegData, run_id: str = ""
) -> Rungs:
    """The rung policy the spec asks for, with what the study's earlier trials recorded at the rungs (from the store:
    a second run or --resume judges with everything recorded), and the paused trials this run took over from a dead
    driver (--resume: search/store/resume.py), paused at their rungs again."""
    # a promoted trial goes on from its state: no states, no promotion
    rungs = Rungs.from_settings(spec.search.max_epochs, chosen, plateau(data), spec.train.checkpoint_every > 0)
    study.set_user_attr("plateau", rungs.plateau)  # what rung 1 waited for (the replay of this study reads it)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
        adopted = t.state == TrialState.RUNNING and t.user_attrs.get("run_id") == run_id and t.user_attrs.get(ADOPTED)
        if t.state == TrialState.RUNNING and not adopted:
            continue  # running under this run (none yet) or another live driver: not this run's to judge
        if t.intermediate_values:
            if t.user_attrs.get(STARTING_POINT) and not chosen.protects_starting_points:
                rungs.prior.add(t.number)
            rungs.record(
                t.number,
                dict(t.intermediate_values),
                paused=bool(adopted),
                protected=bool(t.user_attrs.get(STARTING_POINT)) and chosen.protects_starting_points,
            )
            if t.state != TrialState.RUNNING:
                rungs.ended(t.number)  # a list member that ended short of the list's milestone: the list goes on
    return rungs


def starting_points(spec: StudySpec) -> list[dict[str, Any]]:
    """The spec's starting points as the params Optuna enqueues (validated against the space)."""
    params = space.parse_space(spec.space)
    n = num_classes(spec.dataset)
    return [
        space.starting_point_params(params, point, n, f"search.starting_points[{i}]")
        for i, point in enumerate(spec.search.own_starting_points)
    ]
