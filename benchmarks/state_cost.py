"""What a trial's resumable state costs per save, for the models the shipped specs search, on this machine.

    python benchmarks/state_cost.py

For each model: its state's size (weights, AdamW's two moments, scheduler, scaler, history), the time the training
thread spends taking the snapshot (copies on the CPU: training waits for this part), and the time the background
thread spends serialising and writing it (training goes on meanwhile; on a 2-core machine it still takes CPU from
the trial). Then one real epoch of the demo spec's model on the shipped pet sample at the demo's size, with a state
after each epoch and without, to see the whole cost against an epoch (the median of ``--repeats`` runs each).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from segtune.config import TrainSettings, TrialConfig
from segtune.data import build_dataset
from segtune.search.nodes.files import write_atomic
from segtune.search.nodes.keeper import dumps
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


def demo_epochs(repeats: int, epochs: int) -> tuple[float, float]:
    """Seconds per epoch of the demo's hand pick on the shipped sample, with a state every epoch and without."""
    spec = validate(
        {"study": "s", "dataset": {"name": "oxford_pets", "root": "builtin:oxford-pets-sample", "image_size": 96}}
    )
    data = build_dataset(spec.dataset, only=("train", "val"))
    config = TrialConfig(arch="Unet", encoder="resnet18", augment="flip", batch_size=8)
    settings = TrainSettings(threads=1, keep_best_state=False)
    out: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:

        def save(epoch: int, state: dict) -> None:  # as a trial's StateSaver does, without the thread
            write_atomic(Path(tmp) / "s.state", dumps(state))

        for _ in range(repeats):
            for with_state in (False, True):
                started = time.perf_counter()
                fit(config, data, epochs, None, "cpu", settings, on_state=save if with_state else None)
                out[with_state].append((time.perf_counter() - started) / epochs)
    return statistics.median(out[False]), statistics.median(out[True])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    print("model                          state MB  snapshot s (training waits)  serialise + write s (background)")
    for arch, encoder in MODELS:
        mb, taken, written = one_state(arch, encoder)
        print(f"{arch + ' / ' + encoder:30s} {mb:8.1f}  {taken:26.3f}  {written:32.3f}", flush=True)
    plain, with_state = demo_epochs(args.repeats, args.epochs)
    print(
        f"demo's Unet / ResNet18 on the shipped pet sample at 96 px, 1 thread: {plain:.2f} s per epoch without states, "
        f"{with_state:.2f} s with a state after every epoch written in line ({with_state / plain - 1:+.1%})"
    )


if __name__ == "__main__":
    main()
