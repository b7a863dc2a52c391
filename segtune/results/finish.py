"""`segtune finish STUDY`: from the search's single-split winner to a cross-validated choice and a final model.

The K best distinct complete configurations are retrained on F folds of train + val (stratified by the rarest class
an image holds) for the epochs its trial ran (the search's ``max_epochs``, or fewer where a budget shortened its
schedule, as `export` writes them); each is scored on its held-out fold with the weights of its last epoch (no epoch
is picked on the fold that scores it). The winner is the best mean.

- **Flip TTA** is kept only when it raises the winner's out-of-fold mean: each fold model is scored on
  its own held-out fold with and without horizontal flips.
- **Ensemble**: always the winner's F fold models, mean of their softmax, as nnU-Net does. Whether it
  helps cannot be judged on train + val (every image there trained most of the fold models), and an
  inner holdout would take data from small datasets, where finishing matters most.
- **Test**: only then, the ensemble (with TTA when chosen) on the test split at full resolution.

The K x F trainings run side by side on the Ray cluster's slots, each with a trial's resources (search/fits/), and
each scores its held-out fold where it trained; the ensemble's test runs on a slot too: the driver only orchestrates.
``--device`` trains and scores in this process instead, one model after another, as before. Every (configuration,
fold) result is written to ``finish.json`` and the study as soon as it exists, so an interrupted `finish` resumes
where it stopped; a fold that was running goes on from its newest state.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from segtune.config import TrainSettings, TrialConfig
from segtune.data import build_dataset
from segtune.data.base import SegData
from segtune.errors import StoreError
from segtune.results.export import planned_epochs, trial_config
from segtune.results.predict import TorchPredictor, full_resolution_note, split_metrics
from segtune.search import store
from segtune.search.fits import VAL_SPLIT, FitJob, FitOutcome, runner
from segtune.spec import ResourcesSpec, TrainSpec, validate
from segtune.tables import format_table
from segtune.training import checkpoint
from segtune.training.metrics import json_safe
from segtune.training.models import refuse_code
from segtune.training.weights import weights_dir

FINISH_ATTR = "finish"  # the study attr holding finish's results (the report reads it)


def distinct_best(study: optuna.Study, metric: str, top: int) -> list[tuple[optuna.trial.FrozenTrial, TrialConfig]]:
    """The ``top`` best complete trials whose configurations differ."""
    seen, out = set(), []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for t in sorted(complete, key=lambda t: store.objective_value(t) or -1.0, reverse=True):
        config = TrialConfig.from_dict(trial_config(study, t))
        key = json.dumps(config.to_dict(), sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append((t, config))
        if len(out) == top:
            break
    return out


def stratified_folds(data: SegData, pool: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Folds that each hold every class as evenly as the images allow: images sorted by the rarest class they
    hold (rare classes first), then dealt round-robin after a seeded shuffle."""
    counts = np.zeros(data.num_classes, np.int64)
    present = []
    for i in pool:
        classes = np.unique(data.masks[i])
        classes = classes[classes < data.num_classes]
        present.append(classes)
        counts[classes] += 1
    order = np.random.default_rng(seed).permutation(len(pool))
    rarest = [int(min(counts[c] for c in present[j])) if len(present[j]) else 0 for j in range(len(pool))]
    order = sorted(order, key=lambda j: rarest[j])
    assigned: list[list[int]] = [[] for _ in range(folds)]
    for n, j in enumerate(order):
        assigned[n % folds].append(int(pool[j]))
    return [np.array(sorted(f), np.int64) for f in assigned]


def search_settings(study: optuna.Study, spec: dict[str, Any], metric: str) -> TrainSettings:
    """The settings the search's trials trained with (precision, channels_last, loader workers), as the study
    recorded them; for a study older than that record, as its stored spec's ``train`` section gives them. What
    belongs to this machine or run is its own: the weights folder, no GPU memory cap and torch's own threads (the
    slot's on the cluster: search/fits/slots.py), no costs measured, no copy of the best state (the last epoch's
    weights are scored)."""
    recorded = study.user_attrs.get("train_settings")
    if recorded:
        settings = TrainSettings.from_dict(recorded)
    else:
        train = TrainSpec.model_validate(spec.get("train", {}))
        workers = 0 if train.loader_workers == "auto" else train.loader_workers
        settings = TrainSettings(precision=train.precision, channels_last=train.channels_last, loader_workers=workers)
    return settings.replace(
        metric=metric,
        weights_dir=str(weights_dir()),
        gpu_memory_fraction=None,
        threads=None,
        costs=(),
        keep_best_state=False,
    )


@dataclass
class FinishPlan:
    configs: list[tuple[int, TrialConfig, float]]  # (trial number, config, search value)
    folds: int
    epochs: int


def held_out_scores(model: torch.nn.Module, data: SegData, device: torch.device, settings: TrainSettings) -> dict:
    """Where the fold model trained: its score on its held-out fold at the training size, without and with flip
    TTA, on the study's metric."""
    name = settings.metric.removeprefix("val_")
    scores = {}
    for flip in (False, True):
        predictor = TorchPredictor([model], data.classes, data.resize, device, flip=flip, precision=settings.precision)
        scores["flip" if flip else "plain"] = split_metrics(predictor, data, VAL_SPLIT, full_resolution=False)[name]
    return scores


def ensemble_test(
    data: SegData, device: torch.device, settings: TrainSettings, models: list[bytes], flip: bool, trust_code: bool
) -> dict[str, Any]:
    """Where the folds trained: the ensemble of the winner's fold models (their files' bytes), with flip TTA when it
    was kept, on the test split at full resolution."""
    with tempfile.TemporaryDirectory(prefix="segtune-ensemble-") as scratch:
        loaded = []
        for k, content in enumerate(models):
            path = Path(scratch) / f"fold{k}.pt"
            path.write_bytes(content)
            loaded.append(checkpoint.load(path, device, trust_code=trust_code)[0])
    predictor = TorchPredictor(loaded, data.classes, data.resize, device, flip=flip, precision=settings.precision)
    return split_metrics(predictor, data, "test", full_resolution=True)


def finish(
    study: optuna.Study,
    out_dir: Path,
    top: int = 3,
    folds: int = 5,
    device: str | None = None,
    out: Any = None,
    seed: int = 0,
    trust_code: bool = False,
    address: str | None = None,
    slots: int | None = None,
) -> dict[str, Any]:
    """The K x F fold trainings on the Ray cluster at ``address`` (default: a private local one), at most ``slots``
    at once; with ``device``, one after another in this process on that device."""
    out = out or sys.stdout
    spec = study.user_attrs.get("spec")
    if not spec:
        raise StoreError(f"study {study.study_name!r} was not made by segtune run (no spec in its attributes)")
    metric = store.study_metric(study)
    chosen = distinct_best(study, metric, top)
    if not chosen:
        raise StoreError(f"study {study.study_name!r} has no complete trial to finish")
    for trial, config in chosen:  # before anything is built: a shared store is not a place to run code from
        refuse_code(config.arch, trust_code, f"study {study.study_name!r} trial {trial.number}")
    if folds < 2:
        raise StoreError("--folds: at least 2")
    if slots is not None and slots < 1:
        raise StoreError("--slots: at least 1")
    # each configuration for the epochs its trial's schedule ran (as `export` writes them): max_epochs, or fewer for
    # a trial the end of an exact or a time budget shortened
    planned = [planned_epochs(study, t, spec) for t, _ in chosen]
    epochs = max(planned)
    per_epoch = [s for t, _ in chosen for s in t.user_attrs.get("epoch_seconds", [])]
    runs = len(chosen) * folds
    minutes = ""
    if per_epoch:  # as the search's trials trained: one model at a time on a slot
        minutes = f", about {folds * sum(planned) * statistics.median(per_epoch) / 60:.1f} min of training on one slot"
    shown = f"{epochs}" if len(set(planned)) == 1 else "/".join(map(str, planned))
    print(
        f"finish {study.study_name!r}: {len(chosen)} configurations x {folds} folds = {runs} trainings of "
        f"{shown} epochs{minutes}",
        file=out,
        flush=True,
    )
    data = build_dataset(
        validate({"study": "finish", "dataset": spec["dataset"]}, source="study spec").dataset, full_res=("test",)
    )
    pool = np.concatenate([data.splits["train"], data.splits["val"]])
    fold_sets = stratified_folds(data, pool, folds, seed)
    settings = search_settings(study, spec, metric)
    out_dir.mkdir(parents=True, exist_ok=True)
    record_path = out_dir / "finish.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if record.get("configs") and record["configs"] != [c.to_dict() for _, c in chosen]:
        raise StoreError(f"{record_path}: another finish of other configurations; use another -o folder")
    record.update(
        study=study.study_name,
        metric=metric,
        folds=folds,
        epochs=epochs,
        epochs_per_config=planned,
        seed=seed,
        trials=[t.number for t, _ in chosen],
        search_values=[store.objective_value(t) for t, _ in chosen],
        configs=[c.to_dict() for _, c in chosen],
    )
    record.setdefault("settings", settings.to_dict())  # what the folds trained and were scored with: the search's
    results: dict[str, dict[str, Any]] = record.setdefault("results", {})

    def save() -> None:
        record_path.write_text(json.dumps(json_safe(record), indent=2, allow_nan=False))
        study.set_user_attr(FINISH_ATTR, json_safe(record))  # the report's finish section reads it

    jobs = []
    for ci, (trial, config) in enumerate(chosen):
        for k in range(folds):
            label = f"configuration {ci + 1} (trial {trial.number}), fold {k + 1}/{folds}"
            if f"{ci}/{k}" in results:
                print(f"  {label}: done earlier, {results[f'{ci}/{k}'][metric]:.4f}", file=out, flush=True)
                continue
            jobs.append(
                FitJob(
                    number=ci * folds + k,
                    label=label,
                    config=config,
                    epochs=planned[ci],
                    train=np.concatenate([f for j, f in enumerate(fold_sets) if j != k]),
                    val=fold_sets[k],
                    destination=str((out_dir / f"config{ci}" / f"fold{k}" / checkpoint.FILENAME).resolve()),
                    seed=seed + k,
                    evaluate=held_out_scores,
                    checkpoint_extra={"fold": k, "trial": trial.number, "dataset": spec["dataset"]},
                )
            )

    def landed(job: FitJob, outcome: FitOutcome) -> None:
        key = f"{job.number // folds}/{job.number % folds}"
        results[key] = {
            metric: outcome.evaluation["plain"],
            f"{metric}_flip": outcome.evaluation["flip"],
            "images": len(job.val),
            "seconds": outcome.seconds,
            "checkpoint": job.destination,
            "started": outcome.started,  # wall clock where it trained: the folds' overlap on the slots
            "ended": outcome.ended,
            "host": outcome.host,
            "device": outcome.device,
            "restarts": outcome.restarts,
            "resumed_from": outcome.resumed_from,
        }
        save()
        again = f", went on from epoch {outcome.resumed_from}" if outcome.resumed_from else ""
        print(
            f"  {job.label}: {results[key][metric]:.4f} (flip TTA {results[key][metric + '_flip']:.4f}), "
            f"{outcome.seconds:.0f} s on {outcome.host}{again}",
            file=out,
            flush=True,
        )

    study_spec = spec.get("resources", {}), spec.get("train", {})
    resources, train = ResourcesSpec.model_validate(study_spec[0]), TrainSpec.model_validate(study_spec[1])
    with runner(data, settings, out_dir, len(jobs), resources, train, address, slots, device, out) as fits:
        if jobs:
            record["settings"] = fits.settings.to_dict()  # the search's, with this slot's threads and GPU share
            fits.run(jobs, landed)
        summary = summarise(record, chosen, metric, folds)
        record["summary"] = summary
        winner = summary["winner"]
        models = [Path(results[f"{winner}/{k}"]["checkpoint"]).read_bytes() for k in range(folds)]
        test = fits.call(ensemble_test, models, summary["flip_tta"], trust_code)  # where the folds trained
    record["test"] = {
        "miou": test["miou"],
        "dice": test["dice"],
        "pixel_acc": test["pixel_acc"],
        "iou_per_class": dict(zip(data.classes, test["iou_per_class"], strict=True)),
        "images": len(data.splits["test"]),
        "resolution": full_resolution_note(data),
        "model": f"ensemble of the {folds} fold models of configuration {winner + 1}"
        + (", flip TTA" if summary["flip_tta"] else ", no TTA"),
    }
    record["ensemble"] = {
        "checkpoints": [results[f"{winner}/{k}"]["checkpoint"] for k in range(folds)],
        "flip": summary["flip_tta"],
    }  # export-model reads it
    save()
    print(finish_table(record, metric), file=out)
    for line in summary["notes"]:
        print(line, file=out)
    print(
        f"test ({record['test']['model']}, {record['test']['images']} images at full resolution): mIoU "
        f"{test['miou']:.4f}, Dice {test['dice']:.4f}; wrote {record_path}",
        file=out,
    )
    return record


def summarise(record: dict[str, Any], chosen: list, metric: str, folds: int) -> dict[str, Any]:
    results = record["results"]
    means = []
    for ci in range(len(chosen)):
        scores = [results[f"{ci}/{k}"][metric] for k in range(folds)]
        flips = [results[f"{ci}/{k}"][metric + "_flip"] for k in range(folds)]
        means.append((statistics.mean(scores), statistics.stdev(scores) if folds > 1 else 0.0, statistics.mean(flips)))
    winner = max(range(len(chosen)), key=lambda i: means[i][0])
    flip = means[winner][2] > means[winner][0]
    notes = []
    if winner != 0:
        notes.append(
            f"the folds changed the search's ranking: configuration {winner + 1} (trial "
            f"{record['trials'][winner]}) wins on the mean, the search's best (trial {record['trials'][0]}) "
            "on one split"
        )
    notes.append(
        f"flip TTA: {'kept' if flip else 'not kept'} (out-of-fold mean {means[winner][2]:.4f} with, "
        f"{means[winner][0]:.4f} without)"
    )
    notes.append(
        f"ensemble: the {folds} fold models of configuration {winner + 1}, always (as nnU-Net does): "
        "train + val cannot judge it, and a holdout would cost small datasets training data"
    )
    return {
        "means": [m for m, _, _ in means],
        "stds": [s for _, s, _ in means],
        "flip_means": [f for _, _, f in means],
        "winner": winner,
        "flip_tta": flip,
        "notes": notes,
    }


def finish_table(record: dict[str, Any], metric: str) -> str:
    s = record["summary"]
    rows = []
    for ci, config in enumerate(record["configs"]):
        folds = [record["results"][f"{ci}/{k}"][metric] for k in range(record["folds"])]
        rows.append(
            [
                ci + 1,
                record["trials"][ci],
                record["search_values"][ci],
                s["means"][ci],
                s["stds"][ci],
                s["flip_means"][ci],
                " ".join(f"{v:.3f}" for v in folds),
                f"{config['arch']}/{config['encoder']} {config['loss']} lr={config['lr']:.2g}"
                + (" <- winner" if ci == s["winner"] else ""),
            ]
        )
    return format_table(["config", "trial", "search", "fold mean", "std", "mean, flip", "folds", "configuration"], rows)
