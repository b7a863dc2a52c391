"""How much one model's measured latency moves between repeated measurements, and what a training neighbour does.

    python benchmarks/latency_spread.py                      # Unet / ResNet34 at 128 px, 1 thread, 10 times each

Three ways to time the same model (the median of 15 forward passes at batch 1 after warm-up, as
search/trial/costs.py does), each repeated ``--repeats`` times:

- **alone**: nothing else runs;
- **beside a neighbour**: another process trains a model meanwhile, as the slots of a node do (how latency was
  measured before: the figure moved with the load);
- **quiet**: the same neighbour, but its steps hold the node's shared lock and the timing takes it exclusively
  (search/nodes/quiet.py, what trials do now).

It prints each way's median, range and spread ((max - min) / median); the goal for quiet measurements is a
spread within 10%. Run it on a machine with nothing else running: other processes are neighbours too.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

import torch

from segtune.config import TrainSettings, TrialConfig
from segtune.data import build_dataset
from segtune.search.nodes.quiet import NodeQuiet
from segtune.search.trial.costs import latency_ms
from segtune.spec import validate
from segtune.training.loop import fit
from segtune.training.models import build_model


def neighbour(folder: str, guarded: bool, stop: object, ready: object) -> None:
    """A trial training on synthetic pictures until told to stop (its steps guarded by the node lock or not)."""
    torch.set_num_threads(1)
    spec = validate({"study": "n", "dataset": {"name": "synthetic", "num_images": 64, "image_size": 128}})
    data = build_dataset(spec.dataset)
    node = NodeQuiet(Path(folder))
    guard = node.step if guarded else None

    def on_epoch(*_: object) -> bool:
        ready.set()
        return stop.is_set()

    kwargs = {"step_guard": guard} if guard else {}
    config = TrialConfig(arch="Unet", encoder="resnet18", batch_size=8)
    fit(config, data, 1000, on_epoch, "cpu", TrainSettings(threads=1), **kwargs)


def spread(values: list[float]) -> str:
    median = statistics.median(values)
    return (
        f"median {median:7.2f} ms, range {min(values):7.2f}-{max(values):7.2f} ms, "
        f"spread {(max(values) - min(values)) / median:6.1%}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="Unet")
    p.add_argument("--encoder", default="resnet34")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = build_model(TrialConfig(arch=args.arch, encoder=args.encoder), 3).eval()
    example = torch.zeros(1, 3, args.size, args.size)
    folder = tempfile.mkdtemp(prefix="segtune-quiet-")
    node = NodeQuiet(Path(folder))
    results: dict[str, list[float]] = {}
    spawn = mp.get_context("spawn")
    for way in ("alone", "beside a neighbour", "quiet"):
        stop, ready = spawn.Event(), spawn.Event()
        proc = None
        if way != "alone":
            proc = spawn.Process(target=neighbour, args=(folder, way == "quiet", stop, ready))
            proc.start()
            ready.wait(600)  # it trains: its first epoch is done
        values = []
        for _ in range(args.repeats):
            if way == "quiet":
                with node.quiet():
                    values.append(latency_ms(model, example))
            else:
                values.append(latency_ms(model, example))
            time.sleep(0.5)
        if proc is not None:
            stop.set()
            proc.join(120)
        results[way] = values
        print(f"{way:20s} {spread(values)}", flush=True)
    print(
        f"{args.arch} / {args.encoder} at {args.size} px, 1 thread, {args.repeats} measurements each; "
        f"quiet against alone: {statistics.median(results['quiet']) / statistics.median(results['alone']):.2f}x, "
        f"beside a neighbour against alone: "
        f"{statistics.median(results['beside a neighbour']) / statistics.median(results['alone']):.2f}x"
    )


if __name__ == "__main__":
    main()
