"""The Ray trainable: one trial = one `fit`, reporting every epoch to Tune.

Trials run in reused worker processes (Tune's actor reuse), so a trial leaves nothing behind: `fit`
sets its own seeds, threads and cuDNN flags, and the trial frees its model and the GPU cache when
it ends. The best weights are written straight into the trial's folder of ``results_dir`` when
they improve (atomically), instead of being copied through Tune's checkpoint storage every time.
"""

from __future__ import annotations

import contextlib
import io
import math
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from PIL import Image
from ray import tune

from segtune.config import TrainSettings, TrialConfig
from segtune.data import SegData
from segtune.search.nodes.files import write_atomic
from segtune.search.nodes.keeper import STATES, StateSaver, load_state, shared_with_driver
from segtune.search.nodes.quiet import NodeQuiet
from segtune.search.nodes.warmup import WARMUP_KEY, WARMUP_PREFIX, is_warmup, wait_at
from segtune.search.nodes.worker_process import assigned_device, release_memory, settle_worker, warm_up
from segtune.search.ray_trials import EPOCHS_KEY, HIDDEN_PREFIX, RESUME_KEY, SEED_KEY, TRIAL_KEY
from segtune.search.trial.costs import measure
from segtune.training import checkpoint
from segtune.training.loop import fit
from segtune.training.metrics import json_safe
from segtune.training.models import build_model

OVERLAY = "overlay.png"
LOADED_AT = time.time()  # when this worker process had imported torch, smp and Ray Tune (this module's imports)


def trial_dirname(number: int) -> str:
    """The folder of Optuna trial ``number`` inside the run's folder (Tune's trial folder too)."""
    return f"trial_{number:04d}"


def tune_trial_name(config: dict[str, Any]) -> str:
    """Tune's name and folder for a Ray trial: the Optuna trial's, or ``warmup_N`` for slot N's warm-up."""
    if is_warmup(config):
        return f"{WARMUP_PREFIX}{config[WARMUP_KEY]}"
    return trial_dirname(int(config[TRIAL_KEY]))


def resident_mb() -> float:
    """This process's resident memory (Linux), to see that a reused worker does not grow trial after trial."""
    try:
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return round(kb / 1024, 1)
    except (OSError, StopIteration, ValueError):
        return float("nan")


def render_overlay(model: torch.nn.Module, data: SegData, device: torch.device, count: int = 4) -> bytes:
    """image | truth | prediction of the first ``count`` validation pictures, as PNG bytes: what a trial's best
    epoch does, for the report and the dashboard (uploaded beside its weights)."""
    from segtune.data.overlay import strip
    from segtune.training.loop import Normalizer

    idx = data.splits["val"][:count]
    with torch.no_grad():
        x = torch.from_numpy(data.images[idx].transpose(0, 3, 1, 2).copy()).to(device)
        preds = model.eval()(Normalizer().to(device)(x)).argmax(1).cpu().numpy().astype("uint8")
    rows = [strip(data.images[i], data.masks[i], preds[j]) for j, i in enumerate(idx)]
    grid = np.concatenate([part for r in rows for part in (r, np.full((4, r.shape[1], 3), 255, np.uint8))][:-1])
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    return buf.getvalue()


def failure(error: BaseException) -> str:
    """An exception as the one line the store keeps (``fail_reason``)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"[:500]


def train_trial(
    config: dict[str, Any],
    data: SegData,
    settings: TrainSettings,
    max_epochs: int,
    run_dir: str,
    gate: Any = None,
    keeper: Any = None,
    token: str = "",
) -> None:
    """One trial: `fit` the configuration, report every epoch to Tune, keep the best weights (and their overlay) on
    disk, save a resumable state every ``settings.checkpoint_every`` epochs. A slot's warm-up instead readies the
    worker and waits at ``gate`` until real trials wait for it.

    An error of the trial's own (NaN, out of memory, a bad configuration) is reported as the trial's last result
    (``failed``): it ends FAIL and Tune does not retry it. A worker or node that dies is Tune's to retry: the
    retried trial goes on from its newest state (search/nodes/keeper.py)."""
    if is_warmup(config):
        warm_up()
        wait_at(gate)
        return
    number = int(config[TRIAL_KEY])
    max_epochs = int(config.get(EPOCHS_KEY, max_epochs))  # an exact budget's last trial: a shorter schedule
    settle_worker()
    # the previous trial's leftovers first: a trial Tune stopped (paused, pruned) left through an exception whose
    # traceback held its frames (model, optimizer) while its own `finally` collected, so they wait for this collection
    release_memory()
    rss_start = resident_mb()  # what the worker holds before this trial builds anything: flat if nothing leaks
    cfg = TrialConfig.from_dict({k: v for k, v in config.items() if not k.startswith(HIDDEN_PREFIX)})
    metric = settings.metric
    folder = Path(run_dir) / trial_dirname(number)
    states = Path(run_dir) / STATES
    shared = shared_with_driver(Path(run_dir), token)  # the driver reads this node's files where they are written
    best: dict[str, Any] = {}
    host = socket.gethostname()
    node_id = ray.get_runtime_context().get_node_id()
    gpu_ids, device = assigned_device()
    measured: dict[str, Any] = {}
    saving = settings.checkpoint_every > 0 and keeper is not None
    saver = StateSaver(states, number, keeper, shared, folder) if saving else None
    last_epoch = 0
    carried: list[dict[str, Any]] = []

    def on_epoch(epoch: int, row: dict[str, Any], model: torch.nn.Module | None) -> None:
        nonlocal best, last_epoch
        last_epoch = epoch
        value = row[metric] if not math.isnan(row[metric]) else -1.0
        if model is not None and (not best or value > best[metric]):
            best = dict(row)
            checkpoint.save(
                folder / checkpoint.FILENAME,
                model,
                cfg,
                data.classes,
                data.resize,
                epoch=epoch,
                metrics=json_safe(row),
                trial=number,
            )
            write_atomic(folder / OVERLAY, render_overlay(model, data, device))
        if saver is not None and epoch == max_epochs:  # no state follows: the keeper takes the last best files now
            saver.send_best()
        report = {k: json_safe(v) for k, v in row.items()}
        report.update({f"best_{k}": json_safe(v) for k, v in best.items()})
        report.update(
            hostname=host,
            node_id=node_id,
            checkpoint=str(folder),
            shared_with_driver=shared,
            rss_mb=resident_mb(),
            rss_start_mb=rss_start,
            worker_loaded_at=LOADED_AT,
            gpu_ids=gpu_ids,
            device=str(device),
            **{f"cost_{k}": v for k, v in measured.items()},
        )
        if saver is not None:
            report.update(state_epoch=saver.saved_epoch, state_seconds=round(saver.seconds, 3))
        if carried:  # a --resume re-run: what the epochs before its state were (the recorder keeps them)
            report["resumed_history"] = [json_safe(r) for r in carried]
            carried.clear()
        tune.report(report)

    # a study that times its models: every trial's steps hold the node's timing off (search/nodes/quiet.py)
    node = NodeQuiet() if "latency_ms" in settings.costs else None
    guard = node.step if node is not None else contextlib.nullcontext
    resume: dict[str, Any] | None = None
    try:
        resume = load_state(states, number, keeper, shared, folder, config.get(RESUME_KEY)) if saving else None
        if resume is not None:
            last_epoch = resume["epoch"]
            if config.get(RESUME_KEY):
                carried.extend({k: r[k] for k in ("epoch", "epoch_seconds", metric)} for r in resume["history"][:-1])
            # its last epoch once more: the state was saved before that epoch's report, which may not have landed
            # (the recorder keeps the first value of an epoch it already has)
            if resume["best_epoch"] == resume["epoch"]:
                # the state was saved before that epoch's best files were written: they come from its weights
                restored = build_model(cfg.replace(encoder_weights=None), data.num_classes, settings.weights_dir)
                restored.load_state_dict(resume["model"])
                on_epoch(resume["epoch"], resume["history"][-1], restored.to(device))
                del restored
            else:
                best = dict(resume["best"])
                on_epoch(resume["epoch"], resume["history"][-1], None)
        if settings.costs:  # before training, with the trial's own threads (search.objectives / constraints)
            if settings.threads:
                torch.set_num_threads(settings.threads)
            measured.update(measure(cfg, data.num_classes, data.canvas, device, list(settings.costs), node))
        fit(
            cfg,
            data,
            max_epochs,
            on_epoch,
            device=device,
            settings=settings,
            seed=int(config.get(SEED_KEY, number)),  # the searcher decides it (search.seed, a re-run's line)
            step_guard=guard,
            on_state=saver.save if saver is not None else None,
            state_every=settings.checkpoint_every,
            resume=resume,
        )
    except Exception as e:  # noqa: BLE001 - the trial's own error: its outcome, never retried by Tune
        # the metric, as Tune wants it in every result: no value (the recorder and the rungs skip this result)
        tune.report({"epoch": last_epoch, "failed": failure(e), metric: float("nan"), "hostname": host})
    finally:  # the worker serves the next trial: free this one's memory (the state it resumed from included)
        if saver is not None:
            saver.wait()
        if node is not None:
            node.close()
        resume = saver = None
        release_memory()
