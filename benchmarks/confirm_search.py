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

With ``--spec`` (the spec `segtune init` wrote for any folder), it asks the question people ask at the compute
they spend: K hand-picked runs, or one search of the same trial-epochs?

    python benchmarks/confirm_search.py --spec kvasir.yaml --size 64 --limit 96 --hand-picks 3 \
        --seeds 0 1 2 --out confirm-kvasir

- hand picks: the first K of :data:`SPEC_HAND_PICKS` (fixed before any result), each trained for the spec's
  ``max_epochs`` with the training seed, the one that validated best kept: its test mIoU is the arm's figure;
- search: the spec's own search (its space, its one starting point: the pick a person tries first, which is
  also the first hand pick) with ``budget_epochs`` = K x ``max_epochs`` and ``budget_rule: exact``, so both arms
  train the same number of trial-epochs; its winner exported and retrained with the same seed, scored on test.
Both scored on the test split at the pictures' own size. A hand pick trained for one K and seed is read again,
not retrained, for a larger K.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
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


# What a person tries within the space `init` writes, in the order they would (fixed before any result): the
# usual pick (init's own starting point), then one change at a time: loss, architecture, encoder, learning rate,
# augmentation, schedule.
USUAL = {k: v for k, v in HAND_PICKS[0].items() if k != "batch_size"}  # the spec fixes its own batch size
SPEC_HAND_PICKS: list[dict[str, Any]] = [
    USUAL,
    {**USUAL, "loss": "dice+focal"},
    {**USUAL, "arch": "FPN"},
    {**USUAL, "arch": "DeepLabV3Plus"},
    {**USUAL, "encoder": "efficientnet-b0"},
    {**USUAL, "lr": 3e-4},
    {**USUAL, "lr": 3e-3},
    {**USUAL, "augment": "light", "aug_strength": 0.5},
    {**USUAL, "schedule": "cosine"},
    {**USUAL, "arch": "DeepLabV3Plus", "loss": "dice+focal"},
]


def describe(c: dict[str, Any]) -> str:
    return f"{c['arch']} / {c['encoder']}, {c['loss']}, {c.get('augment', '-')}, lr {c['lr']:.2g}, {c['schedule']}"


def spec_dataset(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    data = dict(spec["dataset"])
    if args.size:
        data["image_size"] = args.size
    if args.limit:
        data["limit"] = args.limit
    return data


def retrained(doc: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``segtune retrain`` of one configuration (once: a finished folder is read again)."""
    if not (folder / "metrics.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spec.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        segtune("retrain", str(folder / "spec.yaml"), "--out", str(folder / "retrain"), log=folder / "log.txt")
        (folder / "metrics.json").write_text((folder / "retrain" / "metrics.json").read_text())
    return json.loads((folder / "metrics.json").read_text())


def hand_picks_arm(spec: dict[str, Any], k: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """K hand picks trained with ``seed``; the one that validated best is the arm's model."""
    runs = []
    for i, pick in enumerate(SPEC_HAND_PICKS[:k]):
        doc = {
            "name": f"pick{i}-seed{seed}",
            "dataset": spec_dataset(spec, args),
            "config": {**spec_fixed(spec), **pick},
            "epochs": spec["search"]["max_epochs"],
            "seed": seed,
        }
        print(f"  hand pick {i + 1}/{k}, seed {seed}: {describe(pick)}", flush=True)
        runs.append((retrained(doc, args.out / "hand-picks" / f"pick{i}-seed{seed}"), pick))
    best, pick = max(runs, key=lambda r: r[0]["val_miou"])
    return {"config": pick, "val": best["val_miou"], "test": best["test_miou"], "trial_epochs": k * doc["epochs"]}


def spec_fixed(spec: dict[str, Any]) -> dict[str, Any]:
    """The space's fixed values (``batch_size: 8``): a hand pick trains with them, as the search's trials do."""
    return {k: v for k, v in spec["space"].items() if not isinstance(v, dict)}


def search_arm(spec: dict[str, Any], k: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The spec's own search at K runs' trial-epochs, exactly; its winner exported and retrained with ``seed``."""
    folder = args.out / f"search-k{k}-seed{seed}"
    done = folder / "summary.json"
    if not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        log, store = folder / "log.txt", f"sqlite:///{(folder / 'study.db').resolve()}"
        budget = k * spec["search"]["max_epochs"]
        run_spec = {
            **{key: v for key, v in spec.items() if key != "storage"},
            "study": f"confirm-k{k}-seed{seed}",
            "dataset": spec_dataset(spec, args),
            "search": {
                **spec["search"],
                "trials": budget,
                "budget_epochs": budget,
                "budget_rule": "exact",
                "seed": seed,
            },
            "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
            "results_dir": str((folder / "runs").resolve()),
        }
        (folder / "spec.yaml").write_text(yaml.safe_dump(run_spec, sort_keys=False))
        print(f"  search, {budget} trial-epochs, seed {seed} (log: {log})", flush=True)
        started = time.monotonic()
        segtune("run", str(folder / "spec.yaml"), "--storage", store, log=log)
        searched = time.monotonic() - started
        segtune("export", run_spec["study"], "--storage", store, "-o", str(folder / "best.yaml"), log=log)
        best = yaml.safe_load((folder / "best.yaml").read_text())
        study = optuna.load_study(study_name=run_spec["study"], storage=store)
        trial_epochs = sum(len(t.intermediate_values) for t in study.trials)
        test = retrained({**best, "seed": seed}, folder / "winner")
        summary = {
            "config": best["config"],
            "val": best["provenance"]["val_miou"],
            "test": test["test_miou"],
            "trial_epochs": trial_epochs,
            "search_s": round(searched),
        }
        done.write_text(json.dumps(summary, indent=2))
    return json.loads(done.read_text())


def compare_on_spec(args: argparse.Namespace) -> None:
    spec = yaml.safe_load(Path(args.spec).read_text())
    if args.max_epochs:
        spec["search"]["max_epochs"] = args.max_epochs
    args.out.mkdir(parents=True, exist_ok=True)
    rows, medians = [], []
    for k in args.hand_picks:
        hand, search = [], []
        for seed in args.seeds:
            print(f"K = {k}, seed {seed}", flush=True)
            hand.append(hand_picks_arm(spec, k, seed, args))
            search.append(search_arm(spec, k, seed, args))
            for name, r in [("best of the hand picks", hand[-1]), ("search from the usual pick", search[-1])]:
                rows.append(
                    [k, seed, name, describe(r["config"]), r["trial_epochs"], f"{r['val']:.3f}", f"{r['test']:.3f}"]
                )
        medians.append(
            [
                k,
                len(args.seeds),
                f"{statistics.median(r['test'] for r in hand):.3f}",
                f"{statistics.median(r['test'] for r in search):.3f}",
            ]
        )
    data = spec_dataset(spec, args)
    print(
        f"\n{spec['study']}: {data.get('image_size')} px, at most {data.get('limit', 'all')} images a split, "
        f"{spec['search']['max_epochs']} epochs a run; test mIoU at the pictures' own size"
    )
    print(format_table(["K runs", "seed", "arm", "its model", "trial-epochs", "val mIoU", "test mIoU"], rows))
    print(format_table(["K runs", "seeds", "median test, hand picks", "median test, search"], medians))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", help="a spec `segtune init` wrote: hand picks against its search (see above)")
    p.add_argument("--limit", type=int, help="with --spec: at most this many images a split")
    p.add_argument("--hand-picks", type=int, nargs="+", default=[3], help="with --spec: K, the runs' worth")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="with --spec: training and search seeds")
    p.add_argument("--data-root", help="folder holding oxford-iiit-pet/ (torchvision's layout)")
    p.add_argument("--target", choices=["trimap", "binary"], default="trimap")
    p.add_argument("--size", type=int, help="image size (pets: 64; --spec: the spec's own)")
    p.add_argument("--max-epochs", type=int, help="epochs a run (pets: 12; --spec: the spec's own)")
    p.add_argument("--budget", type=int, default=96, help="trial-epochs per arm (96: eight full trials)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("confirm"))
    args = p.parse_args()
    if args.spec:
        return compare_on_spec(args)
    if not args.data_root:
        p.error("give --data-root (the pets sample) or --spec")
    args.size, args.max_epochs = args.size or 64, args.max_epochs or 12
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
