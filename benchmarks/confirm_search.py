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

    python benchmarks/confirm_search.py --spec kvasir.yaml --size 64 --limit 200 --hand-picks 10 \
        --seeds 0 1 2 3 4 --out confirm-kvasir

Four deliverables, each inside its own arm's budget (nothing retrained outside it):
- hand picks: the first K of :data:`SPEC_HAND_PICKS` (fixed before any result), each trained for the spec's
  ``max_epochs``; the one that validated best (its test mIoU), and the Caruana ensemble selected over the K models
  (results/ensemble.py, kept only when its held-out gain clears the bootstrap);
- search: the spec's own search with the same K picks as its prior (``search.starting_points``, raced) and
  ``budget_epochs`` = K x ``max_epochs`` with ``budget_rule: exact``, so both arms train the same number of
  trial-epochs; its best complete trial's own model, and its ensemble (``segtune ensemble``'s selection).
All scored on the test split at the pictures' own size. A hand pick trained for one K and seed is read again,
not retrained, for a larger K.

Common random numbers: hand pick i trains with the seed the search gives list member i (trial i of the search's
study: ``seed_offset(seed) + i``) on one thread, as the search's trials do (``cpus_per_trial: 1``), so a
configuration both arms train is one training, and the arms differ only in what they decide (which members go on,
what the freed epochs buy), not in the training seed's draw (0.01-0.02 test mIoU between seeds of one
configuration here, the size of the differences measured). The script checks that the search's members trained
with those seeds. Two hand picks train side by side, one thread each.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import yaml
from record_curves import HAND_PICKS, SPACE

from segtune.search.scheduling.searcher import seed_offset
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


def picture_size(text: str) -> int | list[int]:
    """``--size 64`` (square) or ``--size 96x128`` (height x width: CamVid's 3:4 kept)."""
    sides = [int(side) for side in text.lower().split("x")]
    if len(sides) not in (1, 2):
        raise argparse.ArgumentTypeError(f"--size {text}: give 64 or HxW such as 96x128")
    return sides[0] if len(sides) == 1 else sides


def spec_dataset(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    data = dict(spec["dataset"])
    if args.size:
        data["image_size"] = args.size
    if args.limit:
        data["limit"] = args.limit
    return data


def pick_config(spec: dict[str, Any], pick: dict[str, Any]) -> dict[str, Any]:
    """A hand pick inside the spec's space: CE without class weights where the space would search them (a rare class
    brings ``class_weights`` into the space `init` writes), so the search's prior and the retrained pick agree."""
    point = dict(pick)
    weights = spec["space"].get("class_weights")
    if isinstance(weights, dict) and point.get("loss", "ce") == "ce":
        point.setdefault("class_weights", None)
    return point


def retrained(doc: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``segtune retrain`` of one configuration (once: a finished folder is read again); its model stays in
    ``folder/retrain/model.pt`` until the scores that need it are in."""
    if not (folder / "metrics.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spec.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        segtune("retrain", str(folder / "spec.yaml"), "--out", str(folder / "retrain"), log=folder / "log.txt")
        (folder / "metrics.json").write_text((folder / "retrain" / "metrics.json").read_text())
    return json.loads((folder / "metrics.json").read_text())


def member_seed(seed: int, i: int) -> int:
    """The training seed of the search's list member i (its trial number) under ``search.seed`` = ``seed``."""
    return seed_offset(seed) + i


def hand_picks(spec: dict[str, Any], k: int, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The first K hand picks, each retrained for the spec's ``max_epochs`` with the seed the search gives the same
    list member, on one thread (kept on train, its best val epoch), two side by side: their configurations, val and
    test mIoU, and model files."""

    def one(i: int) -> dict[str, Any]:
        pick = SPEC_HAND_PICKS[i]
        folder = args.out / "hand-picks" / f"pick{i}-seed{seed}"
        doc = {
            "name": f"pick{i}-seed{seed}",
            "dataset": spec_dataset(spec, args),
            "config": {**spec_fixed(spec), **pick_config(spec, pick)},
            "epochs": spec["search"]["max_epochs"],
            "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
            "seed": member_seed(seed, i),
        }
        print(f"  hand pick {i + 1}/{k}, seed {seed} (trains with {doc['seed']}): {describe(pick)}", flush=True)
        written = folder / "spec.yaml"
        if written.is_file() and yaml.safe_load(written.read_text()).get("seed") != doc["seed"]:
            (folder / "metrics.json").unlink(missing_ok=True)  # an older round's pick, another seed: unpaired
        metrics = retrained(doc, folder)
        return {"config": pick, "val": metrics["val_miou"], "test": metrics["test_miou"], "model": folder / "retrain"}

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, range(k)))


def check_common_seeds(store_path: Path, name: str, k: int, seed: int) -> None:
    """The search's list members trained with the seeds the hand picks did (the comparison's premise)."""
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{store_path}")
    members = {t.number: t for t in study.trials if t.user_attrs.get("starting_point")}
    wrong = [i for i in range(k) if i not in members or members[i].user_attrs.get("seed") != member_seed(seed, i)]
    if wrong:
        sys.exit(f"the search's list members {wrong} did not train with the hand picks' seeds: the arms are unpaired")


def spec_fixed(spec: dict[str, Any]) -> dict[str, Any]:
    """The space's fixed values (``batch_size: 8``): a hand pick trains with them, as the search's trials do."""
    return {k: v for k, v in spec["space"].items() if not isinstance(v, dict)}


def search(spec: dict[str, Any], k: int, seed: int, args: argparse.Namespace) -> tuple[Path, str]:
    """The spec's search with the K hand picks as its prior, at K runs' trial-epochs exactly (once: a finished search
    is read again). Its store and study name."""
    folder = args.out / f"search-k{k}-seed{seed}"
    store_path = (folder / "study.db").resolve()
    name = f"confirm-k{k}-seed{seed}"
    if not (folder / "searched").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        store_path.unlink(missing_ok=True)
        budget = k * spec["search"]["max_epochs"]
        run_spec = {
            **{key: v for key, v in spec.items() if key != "storage"},
            "study": name,
            "dataset": spec_dataset(spec, args),
            "search": {
                **spec["search"],
                "trials": budget,
                "budget_epochs": budget,
                "budget_rule": "exact",
                "seed": seed,
                "starting_points": [pick_config(spec, p) for p in SPEC_HAND_PICKS[:k]],
            },
            "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
            "results_dir": str((folder / "runs").resolve()),
            "artifacts": str((folder / "artifacts").resolve()),
        }
        (folder / "spec.yaml").write_text(yaml.safe_dump(run_spec, sort_keys=False))
        log = folder / "log.txt"
        print(f"  search from the {k} hand picks, {budget} trial-epochs, seed {seed} (log: {log})", flush=True)
        started = time.monotonic()
        segtune("run", str(folder / "spec.yaml"), "--storage", f"sqlite:///{store_path}", log=log)
        (folder / "searched").write_text(json.dumps({"search_s": round(time.monotonic() - started)}))
    return store_path, name


def test_of(model: Path, dataset: dict[str, Any], cache: dict[str, Any]) -> float:
    """A model's test mIoU at the pictures' own size (the decoded data kept in ``cache`` for the next model)."""
    from segtune.data import build_dataset
    from segtune.results.predict import load_predictor, split_metrics
    from segtune.spec import validate

    key = json.dumps(dataset, sort_keys=True)
    if key not in cache:
        cache.clear()
        cache[key] = build_dataset(validate({"study": "score", "dataset": dataset}).dataset, full_res=("test",))
    return float(split_metrics(load_predictor(model, "cpu"), cache[key], "test")["miou"])


def score(spec: dict[str, Any], k: int, seed: int, args: argparse.Namespace, cache: dict[str, Any]) -> dict[str, Any]:
    """The four deliverables of one (K, seed), each inside its arm's own budget (no retrain outside it): the hand
    picks' val-best and their own ensemble (Caruana's selection over the K models, on val), the search's best complete
    trial's own model and the search's ensemble (over the models it trained). Test mIoU at the pictures' own size."""
    done = args.out / f"scores-k{k}-seed{seed}.json"
    summary = json.loads(done.read_text()) if done.is_file() else {}
    picks = hand_picks(spec, k, seed, args)
    store_path, name = search(spec, k, seed, args)
    check_common_seeds(store_path, name, k, seed)
    dataset = spec_dataset(spec, args)
    if "hand_best" not in summary:
        best = max(picks, key=lambda r: r["val"])
        summary["hand_best"] = {"config": best["config"], "val": best["val"], "test": best["test"]}
    if "search_best" not in summary:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{store_path}")
        from segtune.results.fetch import trial_model

        best_trial = max(
            (t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value
        )
        summary["search_best"] = {
            "config": best_trial.user_attrs["config"],
            "trial": best_trial.number,
            "val": best_trial.value,
            "test": test_of(trial_model(study, best_trial.number), dataset, cache),
            "trial_epochs": sum(len(t.intermediate_values) for t in study.trials),
            "trials": len(study.trials),
            "prior_complete": sum(
                t.state == optuna.trial.TrialState.COMPLETE and bool(t.user_attrs.get("starting_point"))
                for t in study.trials
            ),
            "near": sum(bool(t.user_attrs.get("drawn")) for t in study.trials),
        }
    for arm, deliverable in (("hand", "hand_ensemble"), ("search", "search_ensemble")):
        if deliverable not in summary:
            found = ensemble_of(arm, picks, store_path, name, dataset, args)
            if found is not None:
                summary[deliverable] = found
    done.write_text(json.dumps(summary, indent=2, default=str))
    return summary


def ensemble_of(
    arm: str,
    picks: list[dict[str, Any]],
    store_path: Path,
    name: str,
    dataset: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any] | None:
    """Caruana's ensemble selection on val, scored on test (segtune/results/ensemble.py); None until it exists."""
    try:
        from segtune.results import ensemble
    except ImportError:
        return None
    return ensemble.benchmark_score(arm, picks, store_path, name, dataset)  # filled in when ensemble.py lands


def compare_on_spec(args: argparse.Namespace) -> None:
    spec = yaml.safe_load(Path(args.spec).read_text())
    if args.max_epochs:
        spec["search"]["max_epochs"] = args.max_epochs
    args.out.mkdir(parents=True, exist_ok=True)
    rows, medians, cache = [], [], {}
    names = ("hand_best", "hand_ensemble", "search_best", "search_ensemble")
    for k in args.hand_picks:
        found: dict[str, list[float]] = {n: [] for n in names}
        for seed in args.seeds:
            print(f"K = {k}, seed {seed}", flush=True)
            summary = score(spec, k, seed, args, cache)
            tests = [summary[n]["test"] if n in summary else None for n in names]
            for n, t in zip(names, tests, strict=True):
                if t is not None:
                    found[n].append(t)
            rows.append(
                [
                    k,
                    seed,
                    *("-" if t is None else f"{t:.3f}" for t in tests),
                    describe(summary["search_best"]["config"]),
                ]
            )
        medians.append([k, len(args.seeds), *(f"{statistics.median(v):.3f}" if v else "-" for v in found.values())])
    data = spec_dataset(spec, args)
    size = data.get("image_size")
    size = "x".join(map(str, size)) if isinstance(size, list) else size
    print(
        f"\n{spec['study']}: {size} px, at most {data.get('limit', 'all')} images a split, "
        f"{spec['search']['max_epochs']} epochs a run; test mIoU at the pictures' own size"
    )
    headers = ["hand picks' val-best", "hand picks' ensemble", "search's best trial", "search's ensemble"]
    print(format_table(["K runs", "seed", *headers, "the search's best trial is"], rows))
    print(format_table(["K runs", "seeds", *(f"median: {h}" for h in headers)], medians))
    if not args.keep_models:
        for k in args.hand_picks:  # every score of a (K, seed) is in: its models go (a K = 10 search's are GBs)
            for seed in args.seeds:
                summary = json.loads((args.out / f"scores-k{k}-seed{seed}.json").read_text())
                if all(n in summary for n in names):
                    folder = args.out / f"search-k{k}-seed{seed}"
                    for sub in ("runs", "artifacts"):
                        shutil.rmtree(folder / sub, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", help="a spec `segtune init` wrote: hand picks against its search (see above)")
    p.add_argument("--limit", type=int, help="with --spec: at most this many images a split")
    p.add_argument("--hand-picks", type=int, nargs="+", default=[3], help="with --spec: K, the runs' worth")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="with --spec: training and search seeds")
    p.add_argument("--keep-models", action="store_true", help="with --spec: keep the searches' models once scored")
    p.add_argument("--data-root", help="folder holding oxford-iiit-pet/ (torchvision's layout)")
    p.add_argument("--target", choices=["trimap", "binary"], default="trimap")
    p.add_argument("--size", type=picture_size, help="image size, 64 or HxW (pets: 64; --spec: the spec's own)")
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
