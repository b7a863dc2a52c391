"""What `segtune ensemble`'s selection costs on a large val set: its stride, memory, disk and time.

    python benchmarks/ensemble_selection.py                          # 1000 val pictures, 12 classes, 384 x 480
    python benchmarks/ensemble_selection.py --pictures 101           # CamVid's val split (SegNet layout)
    python benchmarks/ensemble_selection.py --pictures 200 --classes 2 --size 64 64

The models' forward passes are left out (they are each candidate's one pass over val, as any scoring costs):
the candidates' probabilities are drawn here, each a noisy copy of the truth (a different noise per candidate,
so ensembles of them help and the greedy runs several steps), and go through the same cache, greedy selection and
held-out bootstrap as `segtune ensemble` (segtune/results/ensemble.py). Prints the stride the budget chose, the
cache's bytes, whether it was memory-mapped, the selection's and the held-out judgement's seconds, and the
process's peak resident memory.
"""

from __future__ import annotations

import argparse
import math
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from segtune.results.ensemble import (
    BUDGET_MB,
    IN_MEMORY_MB,
    MAX_STEPS,
    ProbabilityCache,
    greedy,
    heldout,
    plan_stride,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pictures", type=int, default=1000)
    p.add_argument("--classes", type=int, default=12)
    p.add_argument("--size", type=int, nargs=2, default=[384, 480], metavar=("H", "W"))
    p.add_argument("--candidates", type=int, default=16)
    p.add_argument("--budget-mb", type=float, default=BUDGET_MB)
    args = p.parse_args()
    n, c, (h, w) = args.pictures, args.classes, args.size
    stride = plan_stride(n, c, (h, w), args.budget_mb)
    rows, cols = math.ceil(h / stride), math.ceil(w / stride)
    shape = (n, rows, cols, c)
    per_model = math.prod(shape)
    rng = np.random.default_rng(0)
    # blocky truth (8 x 8 patches of one class), so neighbouring pixels agree as in real masks
    truth = rng.integers(0, c, (n, math.ceil(rows / 8), math.ceil(cols / 8)), dtype=np.uint8)
    targets = np.ascontiguousarray(truth.repeat(8, 1).repeat(8, 2)[:, :rows, :cols])
    folder = (
        Path(tempfile.mkdtemp(prefix="segtune-ensemble-bench-"))
        if per_model * args.candidates > IN_MEMORY_MB * 1e6
        else None
    )
    cache = ProbabilityCache([], targets, stride, c, folder)
    started = time.monotonic()
    try:
        for k in range(args.candidates):
            probs = (
                np.lib.format.open_memmap(folder / f"{k}.npy", mode="w+", dtype=np.uint8, shape=shape)
                if folder is not None
                else np.empty(shape, np.uint8)
            )
            for i in range(0, n, 32):
                t = targets[i : i + 32]
                logits = rng.normal(0, 1.0 + 0.05 * k, (len(t), rows, cols, c)).astype(np.float32)
                true = t[..., None].astype(np.int64)
                np.put_along_axis(logits, true, np.take_along_axis(logits, true, -1) + 1.5, axis=-1)
                e = np.exp(logits - logits.max(-1, keepdims=True))
                probs[i : i + 32] = np.round(255 * e / e.sum(-1, keepdims=True)).astype(np.uint8)
            cache.probs.append(probs)
        drawn = time.monotonic() - started
        started, cpu = time.monotonic(), time.process_time()
        chosen = greedy(cache, np.arange(n), "val_miou", MAX_STEPS)
        selected, selected_cpu = time.monotonic() - started, time.process_time() - cpu
        started, cpu = time.monotonic(), time.process_time()
        judged = heldout(cache, "val_miou", 0, MAX_STEPS)
        held, held_cpu = time.monotonic() - started, time.process_time() - cpu
    finally:
        cache.close()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(
        f"{n} val pictures, {c} classes, canvas {h} x {w}, {args.candidates} candidates, budget {args.budget_mb:g} MB "
        f"a model: stride {stride} ({rows} x {cols} pixels a picture), {per_model / 1e6:.1f} MB a model, "
        f"{per_model * args.candidates / 1e6:.0f} MB in all ({'memory-mapped files' if folder else 'in memory'})"
    )
    print(
        f"greedy selection on all of val: {selected:.1f} s ({selected_cpu:.1f} s of CPU), "
        f"{sum(chosen.counts.values())} picks of "
        f"{len(chosen.counts)} models, mIoU {chosen.single_score:.4f} -> {chosen.score:.4f}; held-out judgement "
        f"(two half selections, {1000} bootstrap draws): {held:.1f} s ({held_cpu:.1f} s of CPU), gain {judged[0]:+.4f} "
        f"({judged[1][0]:+.4f} to {judged[1][1]:+.4f})"
        if judged
        else ""
    )
    print(f"peak resident memory {peak:.0f} MB (the drawn probabilities: {drawn:.1f} s, not part of the cost)")


if __name__ == "__main__":
    main()
