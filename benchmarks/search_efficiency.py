"""TPE + ASHA against random search without early stopping, on the same budget of trial-epochs.

    python benchmarks/search_efficiency.py --data-root ../shared/datasets/oxford-iiit-pet-sample

Both arms search the same space on the Oxford-IIIT Pet sample (3-class trimaps, 128 px) in their own
study of a temporary SQLite store, on one local Ray cluster, and stop once they have trained the
budget of trial-epochs. Printed: the best val mIoU each arm reached, the wall time each needed to
reach a common target (95% of the weaker arm's best), and the ratios.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from ray import tune

from segtune import spec as spec_mod
from segtune.data import build_dataset
from segtune.search import run as search
from segtune.tables import format_table

SPACE = {
    "arch": {"choice": ["Unet", "FPN", "Linknet"]},
    "encoder": {"choice": ["resnet18", "mobilenet_v2"]},
    "loss": {"choice": ["ce", "dice+focal", "tversky"]},
    "augment": {"choice": ["none", "light", "strong"]},
    "optimizer": {"choice": ["adam", "adamw", "sgd"]},
    "lr": {"loguniform": [1.0e-4, 3.0e-2]},
    "weight_decay": {"loguniform": [1.0e-6, 1.0e-3]},
    "schedule": {"choice": ["none", "cosine", "onecycle"]},
    "batch_size": {"choice": [8, 16]},
}


class BudgetStopper(tune.Stopper):
    """Counts trial-epochs across the search, stops everything at the budget, and timestamps results."""

    def __init__(self, budget: int, metric: str):
        self.budget, self.metric = budget, metric
        self.epochs = 0
        self.started = time.monotonic()
        self.curve: list[tuple[float, float]] = []  # (seconds since start, best metric so far)

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.epochs += 1
        value = result.get(self.metric)
        best = max([value if value is not None and math.isfinite(value) else -1.0] + [b for _, b in self.curve[-1:]])
        self.curve.append((time.monotonic() - self.started, best))
        return False

    def stop_all(self) -> bool:
        return self.epochs >= self.budget

    def time_to(self, target: float) -> float | None:
        return next((t for t, best in self.curve if best >= target), None)


def arm(name: str, sampler: str, scheduler: str, trials: int, args: argparse.Namespace, data, store: str):
    raw = {
        "study": name,
        "dataset": {"name": "oxford_pets", "root": args.data_root, "download": False, "image_size": args.size},
        "space": SPACE,
        "search": {
            "sampler": sampler, "scheduler": scheduler, "trials": trials, "max_epochs": args.max_epochs,
            "grace_period": 1, "reduction_factor": 3, "seed": args.seed,
        },
        "resources": {"cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": "auto"},
        "results_dir": str(Path(store).parent / "runs"),
    }  # fmt: skip
    spec = spec_mod.validate(raw)
    stopper = BudgetStopper(args.budget, "val_miou")
    study = search.run_study(spec, f"sqlite:///{store}", name, data=data, stopper=stopper)
    return study, stopper


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--budget", type=int, default=48, help="trial-epochs per arm")
    p.add_argument("--max-epochs", type=int, default=8)
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    ds = spec_mod.OxfordPetsSpec(name="oxford_pets", root=args.data_root, download=False, image_size=args.size)
    data = build_dataset(ds)
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "bench.db")
        results = {}
        for name, sampler, scheduler, trials in (
            ("tpe-asha", "tpe", "asha", 10 * args.budget),
            ("random-full", "random", "none", math.ceil(args.budget / args.max_epochs)),
        ):
            started = time.monotonic()
            study, stopper = arm(name, sampler, scheduler, trials, args, data, store)
            results[name] = (study, stopper, time.monotonic() - started)

    best = {k: max((v for _, v in s.curve), default=float("nan")) for k, (_, s, _) in results.items()}
    target = 0.95 * min(best.values())
    rows = []
    for name, (study, stopper, wall) in results.items():
        ran = [t for t in study.trials if "ray_trial_id" in t.user_attrs]
        states = {s: sum(t.state.name == s for t in ran) for s in ("COMPLETE", "PRUNED", "FAIL")}
        rows.append([name, len(ran), stopper.epochs, best[name], stopper.time_to(target), wall,
                     f"{states['COMPLETE']}/{states['PRUNED']}/{states['FAIL']}"])  # fmt: skip
    print(f"\nbudget {args.budget} trial-epochs per arm, max {args.max_epochs} epochs a trial, {args.size} px")
    print(format_table(["arm", "trials", "epochs", "best val_mIoU", f"s to {target:.3f}", "wall s", "C/P/F"], rows))
    a, b = results["tpe-asha"][1], results["random-full"][1]
    print(f"best mIoU ratio (tpe-asha / random-full): {best['tpe-asha'] / best['random-full']:.3f}")
    ta, tb = a.time_to(target), b.time_to(target)
    if ta and tb:
        print(f"time-to-target ratio (random-full / tpe-asha): {tb / ta:.2f}x")


if __name__ == "__main__":
    main()
