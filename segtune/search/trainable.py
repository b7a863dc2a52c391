"""The Ray trainable: one trial = one `fit`, reporting every epoch to Tune."""

from __future__ import annotations

import math
import socket
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from segtune.config import DEFAULTS
from segtune.data import SegData
from segtune.search.recorder import TRIAL_KEY, clean
from segtune.training import checkpoint
from segtune.training.loop import fit


def train_trial(config: dict[str, Any], data: SegData, settings: dict[str, Any], max_epochs: int, metric: str) -> None:
    """The Ray trainable: one trial = one `train.fit`, reporting every epoch to Tune."""
    cpus = max(1, int(settings.get("cpus", 1)))
    torch.set_num_threads(cpus)
    number = int(config[TRIAL_KEY])
    cfg = {k: config[k] for k in DEFAULTS}
    best: dict[str, Any] = {}
    host = socket.gethostname()
    node_id = ray.get_runtime_context().get_node_id()

    def on_epoch(epoch: int, row: dict[str, Any], model: torch.nn.Module) -> None:
        nonlocal best
        value = row[metric] if not math.isnan(row[metric]) else -1.0
        improved = not best or value > best[metric]
        if improved:
            best = dict(row)
        report = {k: clean(v) for k, v in row.items()}
        report.update({f"best_{k}": clean(v) for k, v in best.items()})
        report["hostname"], report["node_id"] = host, node_id
        if not improved:
            tune.report(report)
            return
        with tempfile.TemporaryDirectory() as tmp:  # Tune copies it into the trial's storage
            checkpoint.save(Path(tmp) / checkpoint.FILENAME, model, cfg, data.classes, data.image_size,
                            epoch=epoch, metrics=report, trial=number)  # fmt: skip
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))

    fit(cfg, data, max_epochs, on_epoch, settings=settings, seed=number)
