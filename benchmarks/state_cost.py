"""What a trial's resumable state costs per save, for the models the shipped specs search, on this machine.

    python benchmarks/state_cost.py

For each model: its state's size (weights, AdamW's two moments, scheduler, scaler, history), the time the training
thread spends taking the snapshot (copies on the CPU: training waits for this part), and the time the background
thread spends serialising and writing it (training goes on meanwhile; on a 2-core machine it still takes CPU from
the trial). Then real epochs of the demo spec's model on the shipped pet sample at the demo's size, with and without
states, as a trial saves them: after every epoch but the last (no state follows a last epoch), each written by a
trial's own :class:`~segtune.search.nodes.keeper.StateSaver` on a background thread into a ``states/`` folder on this
disk (a trial that shares the driver's disk), the last one waited for, as a trial does before it ends. A run of
``--epochs`` epochs saves ``--epochs`` - 1 states, so what one state costs is the difference of the two runs over
that count: what a state after every epoch adds to an epoch (the median of ``--repeats`` runs each, in turns). Both
in wall-clock time (what the trial's clock says; on a machine other work keeps busy it moves with that work) and in
the process's CPU time (all its threads: the snapshot, the background write, and the training, which a busy machine
moves far less). The load average before and after says how busy the machine was.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from segtune.config import TrainSettings, TrialConfig
from segtune.data import build_dataset
from segtune.search.nodes.files import write_atomic
from segtune.search.nodes.keeper import StateSaver, dumps
from segtune.spec import validate
from segtune.training.loop import FitResult, _optimizer, _scheduler, fit, snapshot
from segtune.training.models import build_model

# the architecture / encoder pairs the shipped specs search (search_spaces/*.yaml), light to heavy
MODELS = [
    ("SmallUNet", "-"),
    ("Unet", "resnet18"),
    ("Unet", "resnet34"),
    ("FPN", "resnet34"),
    ("DeepLabV3Plus", "resnet34"),
    ("Segformer", "mit_b0"),
    ("UnetPlusPlus", "efficientnet-b3"),
]


def one_state(arch: str, encoder: str) -> tuple[float, float, float]:
    """(MB, snapshot s, serialise + write s) of a state after one optimizer step (AdamW's moments filled)."""
    config = TrialConfig(arch=arch, encoder=encoder, encoder_weights=None)
    model = build_model(config, 3)
    opt = _optimizer(config, model.parameters())
    sched = _scheduler(config, opt, 100)
    loss = model(torch.zeros(2, 3, 64, 64)).mean()
    loss.backward()
    opt.step()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    result = FitResult(best={"val_miou": 0.5}, best_epoch=1, best_state={}, history=[{"epoch": 1}])
    started = time.perf_counter()
    state = snapshot(1, model, opt, sched, scaler, result, 0.5)
    taken = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        data = dumps(state)
        write_atomic(Path(tmp) / "s.state", data)
        written = time.perf_counter() - started
    return len(data) / 1e6, taken, written


@dataclass
class Runs:
    """Seconds of whole runs, wall-clock and CPU (the process's, every thread), without states and with them."""

    wall: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})
    cpu: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})

    def cost(self, kind: str, epochs: int) -> tuple[float, float]:
        """(an epoch, what a state adds), medians, in wall-clock or CPU seconds."""
        times = self.wall if kind == "wall" else self.cpu
        plain, with_states = statistics.median(times[False]), statistics.median(times[True])
        return plain / epochs, (with_states - plain) / (epochs - 1)


def demo_epochs(repeats: int, epochs: int) -> Runs:
    """``epochs`` epochs of the demo's hand pick on the shipped sample, without states and with a state after each
    epoch but the last written in the background as a trial writes it, ``repeats`` times each, in turns."""
    spec = validate(
        {"study": "s", "dataset": {"name": "oxford_pets", "root": "builtin:oxford-pets-sample", "image_size": 96}}
    )
    data = build_dataset(spec.dataset, only=("train", "val"))
    config = TrialConfig(arch="Unet", encoder="resnet18", augment="flip", batch_size=8)
    settings = TrainSettings(threads=1, keep_best_state=False)
    runs = Runs()
    for _ in range(repeats):
        for with_states in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                saver = StateSaver(Path(tmp, "states"), 0, keeper=None, shared=True, best=Path(tmp, "trial_0000"))
                wall, cpu = time.perf_counter(), time.process_time()
                fit(config, data, epochs, None, "cpu", settings, on_state=saver.save if with_states else None)
                saver.wait()  # a trial waits for its last state before it ends
                runs.wall[with_states].append(time.perf_counter() - wall)
                runs.cpu[with_states].append(time.process_time() - cpu)
                assert saver.error is None and saver.saved_epoch == (epochs - 1 if with_states else 0)
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4, help="per run, at least 2 (a state after each but the last)")
    args = p.parse_args()
    torch.set_num_threads(1)
    print("model                          state MB  snapshot s (training waits)  serialise + write s (background)")
    for arch, encoder in MODELS:
        mb, taken, written = one_state(arch, encoder)
        print(f"{arch + ' / ' + encoder:30s} {mb:8.1f}  {taken:26.3f}  {written:32.3f}", flush=True)
    print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    runs = demo_epochs(args.repeats, args.epochs)
    print(
        f"demo's Unet / ResNet18 on the shipped pet sample at 96 px, 1 thread, {args.epochs} epochs a run, "
        f"{args.epochs - 1} states written in the background as a trial writes them, medians of {args.repeats}:"
    )
    for kind in ("wall", "cpu"):
        epoch, per_state = runs.cost(kind, args.epochs)
        print(
            f"  {kind:4s}: an epoch {epoch:.2f} s, a state {per_state:+.2f} s: a state after every epoch makes an "
            f"epoch {per_state / epoch:+.1%} longer"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
