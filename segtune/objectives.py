"""What a study optimises: one accuracy metric, or accuracy against costs (latency, size, compute) together.

``search.objectives: [val_miou, latency_ms]`` makes the study multi-objective; the directions are implied
(a metric is maximised, a cost minimised). ``search.constraints: {latency_ms: 20}`` marks the trials
over a limit infeasible, and the sampler is told. The Pareto front, feasibility and "the most accurate
trial within a budget" are pure functions here, shared by `status`, the report and `export`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from segtune.config import METRICS

COSTS = {
    "latency_ms": "median ms per image at batch 1, after warm-up, on the trial's device",
    "params_m": "parameters, millions",
    "gflops": "GFLOPs of one forward pass at the canvas size, counted as PyTorch's flop counter does: "
    "2 per multiply-add",
}
NAMES = (*METRICS, *COSTS)


def direction(name: str) -> str:
    return "maximize" if name in METRICS else "minimize"


def accuracy_of(objectives: Sequence[str]) -> str:
    """The one accuracy metric among the objectives (ASHA prunes on it alone)."""
    return next(o for o in objectives if o in METRICS)


@dataclass(frozen=True)
class Point:
    """A trial as the objectives see it: its number and its value on each objective (None: not measured)."""

    number: int
    values: tuple[float | None, ...]
    feasible: bool = True


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """a is at least as good as b on every objective and better on one."""
    better = False
    for x, y, d in zip(a, b, directions, strict=True):
        if (x < y) if d == "maximize" else (x > y):
            return False
        better = better or ((x > y) if d == "maximize" else (x < y))
    return better


def pareto_front(points: Sequence[Point], directions: Sequence[str]) -> list[Point]:
    """The feasible points no other feasible point dominates, best first on the first objective."""
    candidates = [p for p in points if p.feasible and all(v is not None for v in p.values)]
    front = [p for p in candidates if not any(dominates(q.values, p.values, directions) for q in candidates)]
    first = directions[0] == "maximize"
    return sorted(front, key=lambda p: -p.values[0] if first else p.values[0])


def violations(costs: dict[str, Any], limits: dict[str, float]) -> list[float]:
    """Optuna's constraint values: cost - limit for each limit (<= 0 is feasible); a missing cost violates."""
    return [float(costs[k]) - float(v) if costs.get(k) is not None else float("inf") for k, v in limits.items()]


def within(costs: dict[str, Any], limits: dict[str, float]) -> bool:
    return all(v <= 0 for v in violations(costs, limits))


def study_objectives(user_attrs: dict[str, Any], metric: str) -> tuple[list[str], dict[str, float]]:
    """A study's objectives and constraints as `run` recorded them (single-objective studies: [metric])."""
    return list(user_attrs.get("objectives") or [metric]), dict(user_attrs.get("constraints") or {})


def trial_points(trials: Sequence[Any], names: Sequence[str], limits: dict[str, float]) -> list[Point]:
    """Complete trials as points on the objectives, read from their user attrs, with their feasibility."""
    out = []
    for t in trials:
        if t.state.name != "COMPLETE":
            continue
        attrs = t.user_attrs
        values = tuple(attrs.get(n, t.values[0] if n == names[0] and t.values else None) for n in names)
        out.append(Point(t.number, values, within(attrs, limits)))
    return out
