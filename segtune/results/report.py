"""`segtune report`: one self-contained HTML file of plotly figures describing a study."""

from __future__ import annotations

import html
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import plotly.graph_objects as go
import torch
from optuna.trial import FrozenTrial, TrialState

from segtune.config import METRIC_LABELS
from segtune.errors import SegtuneError, StoreError
from segtune.objectives import COSTS, direction, pareto_front, study_objectives, trial_points
from segtune.results import ensemble
from segtune.results.export import ranked_complete
from segtune.results.fetch import trial_model
from segtune.search import store
from segtune.tables import best_first, fmt, metric_columns, params_text
from segtune.training import checkpoint

STATE_COLOURS = {"COMPLETE": "#0072B2", "PRUNED": "#E69F00", "FAIL": "#D55E00", "RUNNING": "#999999"}


def _layout(fig: go.Figure, height: int = 420, **kw: Any) -> go.Figure:
    kw.setdefault("margin", dict(l=60, r=30, t=30, b=50))
    fig.update_layout(height=height, template="plotly_white", **kw)
    return fig


def history_figure(trials: list[FrozenTrial], metric: str) -> go.Figure:
    fig = go.Figure()
    for state in (TrialState.COMPLETE, TrialState.PRUNED):
        ts = [t for t in trials if t.state == state and store.shown_value(t, metric) is not None]
        fig.add_trace(
            go.Scatter(
                x=[t.number for t in ts],
                y=[store.shown_value(t, metric) for t in ts],
                mode="markers",
                name=state.name.lower(),
                marker=dict(
                    color=STATE_COLOURS[state.name], size=9, symbol="circle" if state == TrialState.COMPLETE else "x"
                ),
                text=[params_text(t.params) for t in ts],
                hovertemplate="trial %{x}: %{y:.4f}<br>%{text}",
            )
        )
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.values), key=lambda t: t.number)
    best, xs, ys = -math.inf, [], []
    for t in complete:
        best = max(best, t.values[0])
        xs.append(t.number)
        ys.append(best)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(shape="hv", color="#009E73"), name="best complete"))
    return _layout(fig, xaxis_title="trial", yaxis_title=f"{metric} (pruned: at its last epoch)")


def epoch_values(t: FrozenTrial) -> dict[int, float]:
    """One value per epoch: Optuna's intermediate values, or (multi-objective studies) the epoch_values attr."""
    if t.intermediate_values:
        return dict(t.intermediate_values)
    return {i + 1: v for i, v in enumerate(t.user_attrs.get("epoch_values") or []) if v is not None}


def curves_figure(trials: list[FrozenTrial], metric: str, max_epochs: int) -> go.Figure:
    fig = go.Figure()
    for t in trials:
        curve = epoch_values(t)
        if not curve:
            continue
        steps = sorted(curve)
        colour = STATE_COLOURS.get(t.state.name, "#999999")
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[curve[s] for s in steps],
                mode="lines+markers",
                name=f"trial {t.number}",
                line=dict(color=colour, dash="solid" if t.state == TrialState.COMPLETE else "dot"),
                marker=dict(
                    size=[5] * (len(steps) - 1) + [11],
                    symbol=["circle"] * (len(steps) - 1) + ["x" if t.state == TrialState.PRUNED else "circle"],
                ),
                hovertemplate=f"trial {t.number} ({t.state.name.lower()})<br>epoch %{{x}}: %{{y:.4f}}",
            )
        )
    fig.update_xaxes(range=[0.5, max_epochs + 0.5], dtick=1)
    title = f"{metric} (x: where ASHA stopped the trial)"
    return _layout(fig, xaxis_title="epoch", yaxis_title=title, showlegend=False)


def parallel_figure(trials: list[FrozenTrial], metric: str) -> go.Figure:
    valued = [
        t
        for t in trials
        if store.shown_value(t, metric) is not None and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]
    names = sorted({k for t in valued for k in t.params})
    dims = []
    for name in names:
        values = [t.params.get(name) for t in valued]
        present = [v for v in values if v is not None]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present) and present:
            log = min(present) > 0 and max(present) / min(present) >= 100
            nums = [(math.log10(v) if log else v) if v is not None else float("nan") for v in values]
            dims.append(dict(label=f"log10 {name}" if log else name, values=nums))
        else:
            cats = sorted({str(v) for v in values})
            dims.append(
                dict(
                    label=name,
                    values=[cats.index(str(v)) for v in values],
                    tickvals=list(range(len(cats))),
                    ticktext=cats,
                )
            )
    scores = [store.shown_value(t, metric) for t in valued]
    dims.append(dict(label=metric, values=scores))
    fig = go.Figure(go.Parcoords(line=dict(color=scores, colorscale="Viridis", showscale=True), dimensions=dims))
    return _layout(fig, height=460, margin=dict(l=80, r=60, t=60, b=40))


def importances(study: optuna.Study) -> dict[str, float]:
    """What decides the best trials. Optuna's default evaluator (PED-ANOVA) takes the study's direction from the
    study, but takes lower as better for any ``target``: so a single-objective study gives none, and a
    multi-objective one ranks by its accuracy (the first objective), negated when it is maximised."""
    if len(study.directions) == 1:
        return optuna.importance.get_param_importances(study)
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    with warnings.catch_warnings():  # its warning that a target is taken as lower-is-better: it is, here
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
        return optuna.importance.get_param_importances(study, target=lambda t: sign * t.values[0])


def importance_figure(study: optuna.Study) -> go.Figure | str:
    try:
        imp = importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        return f"Not enough complete trials to estimate importances yet ({e})."
    if not imp:
        return "Not enough complete trials to estimate importances yet."
    items = sorted(imp.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h", marker_color="#0072B2"))
    return _layout(fig, height=120 + 30 * len(items), xaxis_title="importance (PED-ANOVA, complete trials)")


def per_class_figure(best: FrozenTrial, classes: list[str]) -> go.Figure | str:
    ious = best.user_attrs.get("val_iou_per_class")
    if not ious:
        return "The best trial recorded no per-class IoU."
    fig = go.Figure(
        go.Bar(
            x=classes[: len(ious)],
            y=[v if v is not None else 0 for v in ious],
            marker_color="#009E73",
            text=[fmt(v) for v in ious],
            textposition="outside",
        )
    )
    return _layout(fig, height=360, yaxis_title=f"val IoU, trial {best.number}", yaxis_range=[0, 1.05])


def pareto_figure(study: optuna.Study, trials: list[FrozenTrial], metric: str) -> go.Figure | None:
    """Accuracy against each cost: every complete trial, the Pareto front joined, infeasible trials crossed."""
    names, limits = study_objectives(study.user_attrs, metric)
    costs = [n for n in names if n in COSTS]
    if not costs:
        return None
    points = trial_points(trials, names, limits)
    front = {p.number for p in pareto_front(points, [direction(n) for n in names])}
    by_number = {t.number: t for t in trials}
    cost = costs[0]
    fig = go.Figure()
    groups = [
        ("trials", lambda p: p.feasible and p.number not in front, "circle", "#0072B2"),
        ("infeasible", lambda p: not p.feasible, "x", "#999999"),
        ("Pareto front", lambda p: p.number in front, "diamond", "#D55E00"),
    ]
    for label, chosen, symbol, colour in groups:
        ps = sorted((p for p in points if chosen(p)), key=lambda p: p.values[names.index(cost)] or 0)
        fig.add_trace(
            go.Scatter(
                x=[p.values[names.index(cost)] for p in ps],
                y=[p.values[0] for p in ps],
                name=label,
                mode="lines+markers" if label == "Pareto front" else "markers",
                marker=dict(symbol=symbol, size=10, color=colour),
                line=dict(shape="hv", color=colour),
                text=[f"trial {p.number}: {params_text(by_number[p.number].params)}" for p in ps],
                hovertemplate="%{text}<br>" + cost + " %{x:.3g}<br>" + metric + " %{y:.4f}",
            )
        )
    for name, limit in limits.items():
        if name == cost:
            fig.add_vline(x=limit, line_dash="dash", line_color="#999999", annotation_text=f"{name} <= {limit:g}")
    return _layout(fig, xaxis_title=f"{cost} ({COSTS[cost].split(',')[0]})", yaxis_title=metric)


def table_figure(trials: list[FrozenTrial], metric: str, limit: int = 15) -> go.Figure:
    top = best_first(trials, metric)[:limit]
    columns = metric_columns(metric)
    cols = [
        [t.number for t in top],
        [t.state.name for t in top],
        *[[fmt(store.shown_value(t, m) if m == metric else t.user_attrs.get(m)) for t in top] for m in columns],
        [t.user_attrs.get("epochs_run", "-") for t in top],
        [params_text(t.params) for t in top],
    ]
    fig = go.Figure(
        go.Table(
            columnwidth=[40, 70, 60, 60, 60, 50, 500],
            header=dict(
                values=["trial", "state", *[METRIC_LABELS[m] for m in columns], "epochs", "params"],
                fill_color="#ddd",
                align="left",
            ),
            cells=dict(values=cols, align="left", height=24),
        )
    )
    return _layout(fig, height=90 + 48 * len(top))  # params wrap onto two lines


def finish_figure(record: dict[str, Any], metric: str) -> go.Figure:
    """`segtune finish`: each re-checked configuration's fold scores, its mean, and the search's single split."""
    fig = go.Figure()
    s = record["summary"]
    for ci, config in enumerate(record["configs"]):
        name = f"config {ci + 1} (trial {record['trials'][ci]}): {config['arch']}/{config['encoder']}"
        folds = [record["results"][f"{ci}/{k}"][metric] for k in range(record["folds"])]
        colour = "#009E73" if ci == s["winner"] else "#0072B2"
        fig.add_trace(
            go.Box(
                y=folds,
                name=name,
                boxpoints="all",
                marker_color=colour,
                showlegend=False,
                hovertemplate="fold score %{y:.4f}",
            )
        )
        star = dict(symbol="star", size=13, color="#D55E00")
        fig.add_trace(
            go.Scatter(
                x=[name],
                y=[record["search_values"][ci]],
                mode="markers",
                showlegend=ci == 0,
                marker=star,
                name="search (one split)",
            )
        )
    return _layout(fig, height=420, yaxis_title=f"{metric} on each held-out fold")


def finish_text(record: dict[str, Any]) -> str:
    lines = list(record["summary"]["notes"])
    test = record.get("test")
    if test:
        lines.append(
            f"test: {test['model']}: mIoU {test['miou']:.4f}, Dice {test['dice']:.4f} on {test['images']} "
            "images at full resolution"
        )
    return " ".join(lines)


def ensemble_figure(selection: ensemble.Selection) -> go.Figure:
    """`segtune ensemble`: every candidate, its own val, and how often the selection took it."""
    rows = sorted(selection.candidates, key=lambda c: (-c.weight, -(c.val or 0.0)))
    colour = ["#d8f0e4" if c.weight else "white" for c in rows]
    cols = [
        [c.label for c in rows],
        [c.state.lower() or "checkpoint" for c in rows],
        [c.weight or "-" for c in rows],
        [fmt(c.val) for c in rows],
        [fmt(c.recorded) for c in rows],
        [f"{c.size_mb:.1f}" for c in rows],
        [c.config for c in rows],
    ]
    label = METRIC_LABELS.get(selection.metric, selection.metric)
    fig = go.Figure(
        go.Table(
            columnwidth=[70, 70, 50, 90, 70, 50, 300],
            header=dict(
                values=["model", "state", "weight", f"{label} alone", "recorded", "MB", "configuration"],
                fill_color="#ddd",
                align="left",
            ),
            cells=dict(values=cols, align="left", height=24, fill_color=[colour]),
        )
    )
    return _layout(fig, height=90 + 30 * len(rows))


def ensemble_text(selection: ensemble.Selection) -> str:
    return " ".join(ensemble.report_lines(selection))


def images_figure(
    study: optuna.Study, best: FrozenTrial, count: int, trust_code: bool = False, artifacts_url: str | None = None
) -> go.Figure | str:
    """image | ground truth | best trial's prediction, for the first validation images (the model from where the
    trial wrote it, or from the study's artifact store)."""
    from segtune.data import build_dataset
    from segtune.data.overlay import strip
    from segtune.results.predict import TorchPredictor, predict_canvases
    from segtune.spec import validate

    try:
        ckpt = trial_model(study, best.number, artifacts_url)
    except StoreError as e:
        return f"The best trial's model cannot be had here: {e}; no predictions to show."
    spec_raw = dict(study.user_attrs["spec"])
    spec_raw["dataset"] = {**spec_raw["dataset"], "limit": count, "allow_missing_classes": True}  # val images only
    try:
        data = build_dataset(validate(spec_raw, source="study spec").dataset)
    except Exception as e:  # noqa: BLE001 - the dataset may have moved since the search; say so, keep the report
        return f"The study's dataset cannot be read here: {str(e)[:300]}"
    try:
        model, _ = checkpoint.load(ckpt, trust_code=trust_code)
    except SegtuneError as e:  # a checkpoint that names code outside segtune is not run without --trust-code
        print(f"segtune report: {e}", file=sys.stderr)
        return f"No predictions shown: {e}"
    idx = data.splits["val"][:count]
    preds = predict_canvases(TorchPredictor([model], data.classes, data.resize, torch.device("cpu")), data.images[idx])
    rows = [strip(data.images[i], data.masks[i], preds[j]) for j, i in enumerate(idx)]
    gap = np.full((6, rows[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([part for r in rows for part in (r, gap)][:-1], axis=0)
    fig = go.Figure(go.Image(z=grid, hoverinfo="skip"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    names = ", ".join(data.names[i] for i in idx)
    return _layout(
        fig,
        height=min(1400, 40 + grid.shape[0] * 3),
        margin=dict(l=10, r=10, t=30, b=10),
        title=dict(text=f"image | ground truth | trial {best.number} prediction ({names})", font=dict(size=12)),
    )


def build(
    study: optuna.Study, out: Path, images: int = 4, trust_code: bool = False, artifacts_url: str | None = None
) -> tuple[Path, int]:
    """Write the report; returns its path and the number of plotly figures in it."""
    trials = study.get_trials(deepcopy=False)
    metric = store.study_metric(study)
    max_epochs = int(study.user_attrs.get("max_epochs", max((len(t.intermediate_values) for t in trials), default=1)))
    classes = study.user_attrs.get("classes") or []
    ranked = ranked_complete(study)
    best = ranked[0] if ranked else None
    counts = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}

    sections: list[tuple[str, go.Figure | str]] = [
        ("Optimisation history", history_figure(trials, metric)),
        (
            "Learning curves: one value per epoch; dotted lines were stopped by ASHA",
            curves_figure(trials, metric, max_epochs),
        ),
        ("Parameters of every trial (parallel coordinates)", parallel_figure(trials, metric)),
        ("Hyperparameter importances", importance_figure(study)),
    ]
    if best is not None:
        sections.append((f"Per-class IoU of the best trial ({best.number})", per_class_figure(best, classes)))
    pareto = pareto_figure(study, trials, metric)
    if pareto is not None:
        sections.append(("Accuracy against cost: the Pareto front (hover: the configuration)", pareto))
    sections.append(("Top trials", table_figure(trials, metric)))
    finished = study.user_attrs.get("finish")
    if finished and finished.get("summary"):
        sections.append(
            (
                f"Finish: the best {len(finished['configs'])} configurations on {finished['folds']} folds",
                finish_figure(finished, metric),
            )
        )
        sections.append(("Finish: what was chosen, and why", finish_text(finished)))
    selection = ensemble.recorded(study)
    if selection is not None:
        held = f", held-out gain {selection.heldout_gain:+.4f}" if selection.heldout_gain is not None else ""
        sections.append(
            (
                f"Ensemble of the search's models ({'kept' if selection.kept else 'not kept'}): "
                + " + ".join(f"{m.weight} x {m.label}" for m in selection.members)
                + f", val gain {selection.gain:+.4f}{held}",
                ensemble_figure(selection),
            )
        )
        sections.append(("Ensemble: what was chosen, and why", ensemble_text(selection)))
    if best is not None:
        sections.append(
            (
                "Validation images with the best trial's prediction",
                images_figure(study, best, images, trust_code, artifacts_url),
            )
        )

    parts, figures = [], 0
    for title, body in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if isinstance(body, str):
            parts.append(f"<p class='note'>{html.escape(body)}</p>")
        else:
            parts.append(
                body.to_html(
                    full_html=False,
                    include_plotlyjs=figures == 0,
                    div_id=f"figure-{figures}",
                    config={"displaylogo": False},
                )
            )
            figures += 1
    best_text = (
        f"best {METRIC_LABELS[metric]} {best.values[0]:.4f} (trial {best.number})" if best else "no complete trial yet"
    )
    summary = (
        f"{len(trials)} trials: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} "
        f"failed, {counts['RUNNING']} running; {best_text}"
    )
    doc = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>segtune report: {html.escape(study.study_name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}
h2{{margin-top:2em;font-size:1.15em}} .note{{color:#666}}</style></head>
<body><h1>Study {html.escape(study.study_name)}</h1><p>{html.escape(summary)}</p>
{"".join(parts)}
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc)
    return out, figures
