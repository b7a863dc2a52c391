"""A real (not replayed) check of the search: segtune's defaults against random search without early
stopping and against the hand pick, at the same budget of trial-epochs, judged on the test split.

    python benchmarks/confirm_search.py --data-root ../shared/datasets/oxford-iiit-pet-sample --out confirm
    python benchmarks/confirm_search.py --data-root ... --target binary --size 96 --out confirm-binary

Every arm goes through the command line a user types: `segtune run` (its own study in one SQLite file,
``search.budget_epochs`` = ``--budget``), `segtune export` (the best complete trial), `segtune retrain`
(train on train, keep the best val epoch, score the test split at the pictures' own size). The hand pick
is the first of benchmarks/record_curves.py's HAND_PICKS, retrained the same way without a search. The
space is the recording's (fixed before any result was seen). One seed per arm: a real run costs minutes
of CPU per trial, so this confirms the replay's ranking rather than measuring it (benchmarks/replay.py
does, over 30 seeds). Resumable: an arm whose metrics.json exists is read, not run again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from record_curves import HAND_PICKS, SPACE

from segtune.tables import format_table

ARMS: list[tuple[str, str, dict[str, Any]]] = [  # (name, folder, search settings)
    ("random, no stopping", "random", {"sampler": "random", "scheduler": "none"}),
    ("segtune defaults (TPE + ASHA, auto)", "defaults", {}),
    ("segtune defaults + the hand picks first", "defaults-hand", {"starting_points": HAND_PICKS[:2]}),
]


def segtune(*args: str, log: Path) -> None:
    """One command, its output appended to ``log``; a failure stops the benchmark with the log's tail."""
    with log.open("a") as f:
        f.write(f"\n$ segtune {' '.join(args)}\n")
        f.flush()
        proc = subprocess.run([sys.executable, "-m", "segtune", *args], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"segtune {args[0]} failed (exit {proc.returncode}); see {log}:\n" + log.read_text()[-2000:])


def dataset(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": "oxford_pets",
        "root": str(Path(args.data_root).resolve()),
        "download": False,
        "target": args.target,
        "image_size": args.size,
        "val_fraction": 0.2,
        "seed": 42,
    }


def run_arm(slug: str, search: dict[str, Any], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    folder = out / slug
    folder.mkdir(parents=True, exist_ok=True)
    log, store = folder / "log.txt", f"sqlite:///{out / 'confirm.db'}"
    spec = {
        "study": f"confirm-{slug}",
        "dataset": dataset(args),
        "space": SPACE,
        "search": {
            "trials": 1000,
            "max_epochs": args.max_epochs,
            "budget_epochs": args.budget,
            "seed": args.seed,
            **search,
        },
        "resources": {"cpus_per_trial": 1},
        "results_dir": str(folder / "runs"),
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    started = time.monotonic()
    segtune("run", str(folder / "spec.yaml"), "--storage", store, log=log)
    searched = time.monotonic() - started
    segtune("export", spec["study"], "--storage", store, "-o", str(folder / "best.yaml"), log=log)
    segtune("retrain", str(folder / "best.yaml"), "--out", str(folder / "retrain"), log=log)
    status = subprocess.run(
        [sys.executable, "-m", "segtune", "status", spec["study"], "--storage", store], capture_output=True, text=True
    ).stdout
    (folder / "status.txt").write_text(status)
    best = yaml.safe_load((folder / "best.yaml").read_text())
    return {"search_s": round(searched), "best_val": best["provenance"]["val_miou"], "config": best["config"]}


def hand_pick(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    folder = out / "hand-pick"
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": "hand-pick",
        "dataset": dataset(args),
        "config": HAND_PICKS[0],
        "epochs": args.max_epochs,
        "metric": "val_miou",
    }
    (folder / "best.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    segtune("retrain", str(folder / "best.yaml"), "--out", str(folder / "retrain"), log=folder / "log.txt")
    return {"search_s": 0, "best_val": None, "config": HAND_PICKS[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True, help="folder holding oxford-iiit-pet/ (torchvision's layout)")
    p.add_argument("--target", choices=["trimap", "binary"], default="trimap")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--max-epochs", type=int, default=12)
    p.add_argument("--budget", type=int, default=96, help="trial-epochs per arm (96: eight full trials)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("confirm"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    arms: list[tuple[str, str, dict[str, Any] | None]] = [("hand pick (no search)", "hand-pick", None)]
    arms += ARMS
    for name, slug, search in arms:
        done = args.out / slug / "summary.json"
        if not done.is_file():
            print(f"{name}: running (log: {args.out / slug / 'log.txt'})", flush=True)
            summary = hand_pick(args, args.out) if search is None else run_arm(slug, search, args, args.out)
            done.write_text(json.dumps(summary, indent=2))
        summary = json.loads(done.read_text())
        test = json.loads((args.out / slug / "retrain" / "metrics.json").read_text())
        c = summary["config"]
        rows.append(
            [
                name,
                f"{c['arch']} / {c['encoder']}, {c['loss']}, {c.get('augment', '-')}, lr {c['lr']:.2g}",
                "-" if summary["best_val"] is None else f"{summary['best_val']:.3f}",
                f"{test['test_miou']:.3f}",
                summary["search_s"],
            ]
        )
    print(
        f"\nOxford-IIIT Pet sample, {args.target}, {args.size} px; budget {args.budget} trial-epochs per search, "
        f"{args.max_epochs} epochs a trial; winners retrained on train, scored on the test split"
    )
    print(format_table(["arm", "winner", "its val mIoU in the search", "test mIoU (retrained)", "search s"], rows))


if __name__ == "__main__":
    main()
