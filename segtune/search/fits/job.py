"""One fit: a configuration trained on given indices of the shared data, its model kept and scored where it trained.

The same function runs in a slot's worker on the cluster (search/fits/worker.py) and, for ``--device``, in the
driver's own process (search/fits/runners.py). Where it can (a worker on the cluster), it saves a resumable state
every ``settings.checkpoint_every`` epochs on the driver's disk, as a trial does (search/nodes/keeper.py), and goes on
from the newest one when it runs again after its worker or node was lost, or after the driver was interrupted.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn

from segtune.config import TrainSettings, TrialConfig
from segtune.data import SegData
from segtune.search.nodes.keeper import StateSaver, load_state
from segtune.training import checkpoint
from segtune.training.loop import fit
from segtune.training.metrics import json_safe

TRAIN_SPLIT = "fit_train"  # the job's training indices, as a split of the data it trains on
VAL_SPLIT = "fit_val"  # its validation indices (finish: the held-out fold)

# What the worker computes with the kept model before it returns (finish: the held-out fold's scores with and
# without flips; retrain: the test split). A module-level function (pickled by name): it runs where the model is.
Evaluate = Callable[[nn.Module, SegData, torch.device, TrainSettings], dict[str, Any]]


@dataclass(frozen=True)
class FitJob:
    """A training to run: ``config`` on ``train``, validated on ``val`` every epoch, for ``epochs``."""

    number: int  # unique among one run's jobs: names its resumable states (states/trial_NNNN.eEEEE.state)
    label: str  # its lines: "configuration 1 (trial 3), fold 2/5"
    config: TrialConfig
    epochs: int
    train: np.ndarray  # indices into the shared data
    val: np.ndarray
    destination: str  # the model file, on the driver's disk
    seed: int = 0
    keep: Literal["last", "best"] = "last"  # the last epoch's weights, or those of the epoch that validated best
    evaluate: Evaluate | None = None
    checkpoint_extra: dict[str, Any] = field(default_factory=dict)  # more keys of the model file (fold, trial, ...)


@dataclass
class FitOutcome:
    """What a fit left: its model file (on the driver's disk once the driver has it), scores and where it ran."""

    number: int
    evaluation: dict[str, Any]  # what the job's ``evaluate`` returned
    best: dict[str, Any]  # the validation row of the best epoch
    best_epoch: int
    last: dict[str, Any]  # the last epoch's row
    epochs_run: int
    started: float  # wall clock (time.time()) where it trained: when it began, on the first worker it ran on
    ended: float
    host: str
    device: str
    resumed_from: int = 0  # the epoch of the state it went on from (0: it trained from the start)
    model_bytes: bytes | None = None  # the model file, when its node does not share the driver's disk
    restarts: int = 0  # times its worker was lost and it ran again (the driver counts)

    @property
    def seconds(self) -> float:
        return round(self.ended - self.started, 1)


@dataclass(frozen=True)
class DriverDisk:
    """Where a job's states go: the run's ``states`` folder on the driver's disk, written straight there when this
    node shares that disk (``shared``), else through the keeper actor on the driver's node."""

    states: Path
    keeper: Any
    shared: bool


EpochCallback = Callable[[dict[str, Any]], None]


def run_job(
    job: FitJob,
    data: SegData,
    device: torch.device,
    settings: TrainSettings,
    disk: DriverDisk | None = None,
    on_epoch: EpochCallback | None = None,
) -> FitOutcome:
    """Train ``job`` here, evaluate it, and write its model file (straight to ``job.destination`` when this process
    shares the driver's disk, else into :attr:`FitOutcome.model_bytes`). ``disk``: save resumable states there and go
    on from the newest one; None: no states (the driver's own process, as `finish` and `retrain` always ran)."""
    started = time.time()
    view = dataclasses.replace(data, splits={**data.splits, TRAIN_SPLIT: job.train, VAL_SPLIT: job.val})
    settings = settings.replace(keep_best_state=False)  # the kept weights are tracked here (``keep``)
    saving = disk is not None and settings.checkpoint_every > 0
    saver, resume = None, None
    if saving:
        assert disk is not None
        # no best-epoch files beside the states (a trial's model.pt): a job keeps its best weights in its state
        nowhere = Path(tempfile.gettempdir()) / f"segtune-fit-{uuid.uuid4().hex}"  # a folder that never holds any
        saver = StateSaver(disk.states, job.number, disk.keeper, disk.shared, nowhere)
        resume = load_state(disk.states, job.number, disk.keeper, disk.shared, nowhere)
    started = resume.get("fit_started", started) if resume else started  # its first start, on whichever worker
    best_weights: dict[str, torch.Tensor] | None = resume.get("kept_best") if resume else None
    best_value = resume["best_value"] if resume else -math.inf

    def epoch_done(epoch: int, row: dict[str, Any], model: nn.Module) -> None:
        nonlocal best_weights, best_value
        value = row[settings.metric] if not math.isnan(row[settings.metric]) else -1.0
        if job.keep == "best" and value > best_value:
            best_value = value
            best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(json_safe(row))

    def save_state(epoch: int, state: dict[str, Any]) -> None:
        assert saver is not None
        if job.keep == "best":  # the state comes before its epoch's epoch_done: its own weights when it is the best
            state["kept_best"] = state["model"] if state["best_epoch"] == epoch else best_weights
        state["fit_started"] = started
        saver.save(epoch, state)

    try:
        result = fit(
            job.config,
            view,
            job.epochs,
            epoch_done,
            device=device,
            settings=settings,
            train_split=TRAIN_SPLIT,
            val_split=VAL_SPLIT,
            seed=job.seed,
            on_state=save_state if saver is not None else None,
            state_every=settings.checkpoint_every,
            resume=resume,
        )
    finally:
        if saver is not None:
            saver.wait()
    model = result.model
    assert model is not None
    if job.keep == "best" and best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    evaluation = job.evaluate(model, view, device, settings) if job.evaluate is not None else {}
    model_bytes = write_model(job, model, data, shared=disk.shared if disk is not None else True)
    return FitOutcome(
        number=job.number,
        evaluation=json_safe(evaluation),
        best=json_safe(result.best),
        best_epoch=result.best_epoch,
        last=json_safe(result.history[-1]) if result.history else {},
        epochs_run=result.epochs_run,
        started=started,
        ended=time.time(),
        host=socket.gethostname(),
        device=str(device),
        resumed_from=int(resume["epoch"]) if resume else 0,
        model_bytes=model_bytes,
    )


def write_model(job: FitJob, model: nn.Module, data: SegData, shared: bool) -> bytes | None:
    """The model file: at ``job.destination`` when this node shares the driver's disk, else its bytes (the driver
    writes them there)."""
    args = (model, job.config, data.classes, data.resize)
    if shared:
        checkpoint.save(Path(job.destination), *args, **job.checkpoint_extra)
        return None
    with tempfile.TemporaryDirectory(prefix="segtune-fit-") as scratch:
        path = checkpoint.save(Path(scratch) / checkpoint.FILENAME, *args, **job.checkpoint_extra)
        return path.read_bytes()
