"""`finish --top 3 --folds 5` on the cluster's slots against the same finish one model after another in one process.

    python benchmarks/finish_speed.py                       # 2 slots of a private local Ray cluster
    python benchmarks/finish_speed.py --slots 4 --epochs 8 --size 96
    python benchmarks/finish_speed.py --sequential-from /path/to/main   # main's own finish as the baseline

A small real search first (the demo spec on the Oxford-IIIT Pet sample shipped in segtune: 3 complete trials of one
architecture with three learning rates, so the top 3 are distinct), then the same finish twice into two folders, each
timed as a user waits for it (process start to exit):

- **slots**: ``segtune finish STUDY --top 3 --folds 5 --slots N``, the 15 trainings side by side on N slots of a
  private local Ray cluster (search/fits/), Ray's and the workers' start included;
- **sequential**: ``segtune finish STUDY --top 3 --folds 5 --device cpu``, the 15 trainings one after another in the
  driver's process on all its threads, the way `finish` trained before; or, with ``--sequential-from DIR``, the
  `segtune finish` of the checkout at DIR (main's code) without ``--device``.

It prints both wall times, their ratio (issue 41's goal: at most 0.6 on 2 slots), where the slots' run spent its time
(Ray and the workers' start, the trainings, the ensemble's test) from its lines as they came, and whether both chose
the same configuration and TTA with the same fold scores. The machine's load average before and after is printed: on
a shared machine, other work changes both figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def segtune(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, list[tuple[float, str]]]:
    """Run ``segtune ARGS`` to its end; the wall seconds and each output line with the second it came."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "segtune", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.monotonic() - started, line.rstrip("\n")))
    if proc.wait() != 0:
        raise SystemExit("\n".join(text for _, text in lines[-40:]) + f"\nsegtune {args[0]} failed")
    return time.monotonic() - started, lines


def search(tmp: Path, size: int, epochs: int) -> str:
    url = f"sqlite:///{tmp / 'store.db'}"
    sets = {
        "dataset.image_size": str(size),
        "space": "{arch: Unet, encoder: resnet18, encoder_weights: null, loss: ce, augment: flip, optimizer: adamw, "
        "schedule: cosine, batch_size: 8, lr: {choice: [0.003, 0.001, 0.0003]}}",
        "search.starting_points": "[]",
        "search.trials": "3",
        "search.max_epochs": str(epochs),
        "search.scheduler": "none",
        "search.sampler": "random",
        "results_dir": str(tmp / "runs"),
    }
    args = ["run", str(REPO / "search_spaces" / "demo.yaml"), "--storage", url, "--study", "speed"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    seconds, _ = segtune(args, tmp)
    print(f"search: 3 trials of {epochs} epochs at {size} px in {seconds:.0f} s", flush=True)
    return url


def phases(lines: list[tuple[float, str]]) -> tuple[str, float | None]:
    """Where a finish spent its time, from the lines it printed as they came; and its trainings' span (from the first
    training's start to the last one's end)."""

    def first(pattern: str) -> float | None:
        return next((t for t, text in lines if re.search(pattern, text)), None)

    up, start = first(r"worker\(s\) up in"), first(r"^  started ")
    ends = [t for t, text in lines if re.search(r"^  configuration \d+ \(trial \d+\), fold \d+/\d+: ", text)]
    parts = []
    if up is not None:
        parts.append(f"start and workers up {up:.0f} s")
    elif start is not None:
        parts.append(f"start {start:.0f} s")
    span = max(ends) - start if start is not None and ends else None
    if span is not None:
        parts.append(f"trainings {span:.0f} s")
        parts.append(f"ensemble test and exit {lines[-1][0] - max(ends):.0f} s")
    return ", ".join(parts), span


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--epochs", type=int, default=6, help="the search's max_epochs: each fold trains this many")
    p.add_argument("--size", type=int, default=64, help="image size (px)")
    p.add_argument("--sequential-from", help="a checkout (main) whose own `segtune finish` is the baseline")
    args = p.parse_args()
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")
    with tempfile.TemporaryDirectory(prefix="segtune-finish-speed-") as scratch:
        tmp = Path(scratch)
        print(f"load average before: {load()}", flush=True)
        url = search(tmp, args.size, args.epochs)
        finish = ["finish", "speed", "--storage", url, "--top", "3", "--folds", "5"]
        on_slots, slot_lines = segtune([*finish, "-o", str(tmp / "slots"), "--slots", str(args.slots)], tmp)
        slot_phases, slot_span = phases(slot_lines)
        print(f"slots ({args.slots}): {on_slots:.1f} s ({slot_phases})", flush=True)
        if args.sequential_from:
            baseline = ["-o", str(tmp / "sequential")]
            env = {"PYTHONPATH": str(Path(args.sequential_from).resolve())}
            what = f"{args.sequential_from}'s finish"
        else:
            baseline, env, what = ["-o", str(tmp / "sequential"), "--device", "cpu"], None, "--device cpu"
        sequential, sequential_lines = segtune([*finish, *baseline], tmp, env)
        sequential_phases, sequential_span = phases(sequential_lines)
        print(f"sequential ({what}): {sequential:.1f} s ({sequential_phases})", flush=True)
        a = json.loads((tmp / "slots" / "finish.json").read_text())
        b = json.loads((tmp / "sequential" / "finish.json").read_text())
        same = a["summary"]["winner"] == b["summary"]["winner"] and a["summary"]["flip_tta"] == b["summary"]["flip_tta"]
        scores = [(a["results"][k]["val_miou"], b["results"][k]["val_miou"]) for k in sorted(a["results"])]
        largest = max(abs(x - y) for x, y in scores)
        trained = sum(r["seconds"] for r in a["results"].values())
        print(
            f"ratio slots / sequential: {on_slots / sequential:.2f} (goal: at most 0.6); the slots' folds trained "
            f"{trained:.0f} s in all, {trained / on_slots:.2f} slot-seconds per wall second",
            flush=True,
        )
        if slot_span and sequential_span:  # main's finish prints no start lines
            print(f"trainings alone (first start to last end): {slot_span / sequential_span:.2f}", flush=True)
        print(
            f"same choice (winner, flip TTA): {'yes' if same else 'NO'}; largest fold score difference {largest:.2g} "
            "(a slot trains on its own threads, the one process on all: sums round differently, and the epochs carry "
            "it on; tests/test_cluster_phases.py compares both on equal threads, fold by fold, exactly)",
            flush=True,
        )
        print(f"load average after: {load()}", flush=True)


if __name__ == "__main__":
    main()
