"""Record full learning curves once, for the replay benchmark (benchmarks/replay.py).

    python benchmarks/record_curves.py --data-root ../shared/datasets/oxford-iiit-pet-sample
    python benchmarks/record_curves.py --data-root ../shared/datasets/kvasir-seg --max-epochs 30 \
        --train 96 --val 32 --table benchmarks/curves/kvasir_seg_64px_30ep.jsonl.gz

Trains every configuration of a fixed list to ``--max-epochs`` with segtune's own training loop
(``training.loop.fit``) on a dataset read as `segtune init` reads it (the Oxford-IIIT Pet sample: 3-class
trimaps; Kvasir-SEG: polyp vs background from its JPEG masks), and stores each epoch's validation metrics and
seconds (train + validation). ``--train`` / ``--val`` keep a fixed subset (the first images of each seeded
split). The list is the hand-picked configurations of the notebooks segtune replaces, then ``--configs``
draws from :data:`SPACE` with a seeded random sampler. The space was fixed before any result was seen.

Resumable: the table is rewritten (atomically) after every configuration, and a restart skips what
it holds, so the recording can outlive a session. The first start writes the drawn list into the
table's header, so a restart trains exactly the same configurations whatever the library versions.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from segtune import space
from segtune.config import DEFAULTS, TrialConfig
from segtune.data import build_dataset
from segtune.data.recognise import detect
from segtune.spec import validate
from segtune.training.loop import fit

HERE = Path(__file__).resolve().parent
DEFAULT_TABLE = HERE / "curves" / "pets_sample_64px.jsonl.gz"
LITE0 = "timm-tf_efficientnet_lite0"

# Fixed before looking at any result. Light encoders (CPU recording), the choices the shipped specs offer.
SPACE: dict[str, Any] = {
    "arch": {"choice": ["Unet", "FPN", "Linknet", "DeepLabV3Plus"]},
    "encoder": {"choice": ["resnet18", "resnet34", "mobilenet_v2", LITE0]},
    "encoder_weights": {"choice": [None, "imagenet"], "when": {"encoder": LITE0}},  # real ImageNet weights offline
    "loss": {"choice": ["ce", "dice", "focal", "dice+focal", "tversky", "ce+dice"]},
    "tversky_alpha": {"uniform": [0.3, 0.7], "when": {"loss": "tversky"}},
    "augment": {"choice": ["none", "flip", "light", "strong"]},
    "aug_strength": {"uniform": [0.2, 1.0], "when": {"augment": ["light", "strong"]}},
    "optimizer": {"choice": ["adam", "adamw", "sgd"]},
    "lr": {"loguniform": [1.0e-4, 3.0e-2]},
    "weight_decay": {"loguniform": [1.0e-6, 1.0e-2]},
    "schedule": {"choice": ["none", "cosine", "onecycle"]},
    "batch_size": {"choice": [8, 16]},
}

# What the notebooks behind segtune start from: Unet / ResNet34, CE or CE + Dice, AdamW at 1e-3,
# one-cycle, flips; and the same Unet on the one ImageNet encoder available offline.
HAND_PICKS: list[dict[str, Any]] = [
    {
        "arch": "Unet",
        "encoder": "resnet34",
        "loss": "ce",
        "augment": "flip",
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "schedule": "onecycle",
        "batch_size": 8,
    },
    {
        "arch": "Unet",
        "encoder": "resnet34",
        "loss": "ce+dice",
        "augment": "flip",
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "schedule": "onecycle",
        "batch_size": 8,
    },
    {
        "arch": "Unet",
        "encoder": LITE0,
        "encoder_weights": "imagenet",
        "loss": "ce",
        "augment": "flip",
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "schedule": "onecycle",
        "batch_size": 8,
    },
]


def draw(n: int, seed: int) -> list[dict[str, Any]]:
    """The hand picks, then ``n`` seeded random draws: (sampled params, full config) per entry."""
    entries = [{"source": "hand", "params": dict(p), "config": {**DEFAULTS, **p}} for p in HAND_PICKS]
    for config, params in space.sample_configs(space.parse_space(SPACE), n, seed=seed):
        entries.append({"source": "random", "params": params, "config": config.to_dict()})
    for i, e in enumerate(entries):
        e["id"] = i
    return entries


def read_table(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    if not path.is_file():
        return None, []
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    header = next((r for r in rows if r.get("kind") == "header"), None)
    return header, [r for r in rows if r.get("kind") == "curve"]


def write_table(path: Path, header: dict[str, Any], curves: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt") as f:
        for row in [header, *sorted(curves, key=lambda c: c["id"])]:
            f.write(json.dumps(row, allow_nan=False) + "\n")
    os.replace(tmp, path)


def finite(v: float) -> float | None:
    return v if isinstance(v, float) and math.isfinite(v) else None


def record_one(entry: dict[str, Any], data: Any, max_epochs: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    last = time.perf_counter()

    def on_epoch(epoch: int, row: dict[str, Any], model: Any) -> None:
        nonlocal last
        rows.append(row)
        last = time.perf_counter()

    failed = None
    try:
        fit(TrialConfig.from_dict(entry["config"]), data, max_epochs, on_epoch, device="cpu", seed=entry["id"])
    except Exception as e:  # noqa: BLE001 - a configuration that diverges is a result too: it fails there
        failed = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return {
        "kind": "curve",
        **entry,
        "val_miou": [finite(r["val_miou"]) for r in rows],
        "val_dice": [finite(r["val_dice"]) for r in rows],
        "train_loss": [finite(r["train_loss"]) for r in rows],
        "seconds": [round(r["epoch_seconds"], 3) for r in rows],
        "failed": failed,
        "failed_after_s": round(time.perf_counter() - last, 3) if failed else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True, help="a dataset folder `segtune init` reads (the pets sample, ...)")
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    p.add_argument("--configs", type=int, default=100, help="random draws after the hand picks")
    p.add_argument("--max-epochs", type=int, default=12)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--describe",
        action="store_true",
        help="only add the data's class shares and majority-class plateau to the table's header (tables made before)",
    )
    p.add_argument("--train", type=int, help="train on the first N train images of the seeded split (all: unset)")
    p.add_argument("--val", type=int, help="validate on the first N val images (all: unset)")
    p.add_argument(
        "--pause-file",
        type=Path,
        help="while this file exists, wait before the next configuration "
        "(so timing benchmarks can have the machine to themselves)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    header, curves = read_table(args.table)
    if header is None:
        header = {
            "kind": "header",
            "command": " ".join(["python", *sys.argv]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "versions": {
                name: metadata.version(name)
                for name in ("segtune", "torch", "segmentation-models-pytorch", "albumentations", "optuna")
            },
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} torch thread(s)",
            "dataset": dataset_section(Path(args.data_root), args.size, args.train, args.val),
            "max_epochs": args.max_epochs,
            "space": SPACE,
            "entries": draw(args.configs, args.seed),
        }
    elif len(header["entries"]) < len(HAND_PICKS) + args.configs:  # more draws asked for: extend the same stream
        more = draw(args.configs, header.get("draw_seed", args.seed))[len(header["entries"]) :]
        header["entries"] += more
    header["draw_seed"] = header.get("draw_seed", args.seed)
    if args.describe or "plateau" not in header:  # what the first rung waits for (search/scheduling/rungs.py)
        header.update(describe(load_data(header["dataset"], Path(args.data_root))))
        if args.describe:
            write_table(args.table, header, curves)
            print(f"{args.table}: plateau {header['plateau']:.4f}, class shares {header['class_shares']}")
            return
    done = {c["id"] for c in curves}
    todo = [e for e in header["entries"] if e["id"] not in done]
    print(f"{len(done)} configurations recorded, {len(todo)} to go -> {args.table}", flush=True)
    data = load_data(header["dataset"], Path(args.data_root))
    for entry in todo:
        while args.pause_file is not None and args.pause_file.exists():
            time.sleep(5)
        started = time.monotonic()
        curve = record_one(entry, data, header["max_epochs"])
        curves.append(curve)
        write_table(args.table, header, curves)
        best = max((v for v in curve["val_miou"] if v is not None), default=float("nan"))
        print(
            f"[{len(curves)}/{len(header['entries'])}] #{entry['id']} {space_text(entry['params'])}: "
            f"best val mIoU {best:.3f}, {time.monotonic() - started:.0f} s"
            + (f", FAILED {curve['failed']}" if curve["failed"] else ""),
            flush=True,
        )


def dataset_section(root: Path, size: int, train: int | None, val: int | None) -> dict[str, Any]:
    """The folder as `segtune init` reads it (its root left out: the table is the same wherever the data is),
    at ``size`` px, with the subset kept."""
    dataset = {k: v for k, v in detect(root).dataset.items() if k != "root"}
    return {**dataset, "image_size": size, "train_images": train, "val_images": val}


def load_data(section: dict[str, Any], root: Path) -> Any:
    """Train and val of the recorded dataset (tables made before subsets were recorded: all of both)."""
    subset = {"train": section.get("train_images"), "val": section.get("val_images")}
    dataset = {k: v for k, v in section.items() if k not in ("train_images", "val_images")}
    spec = validate({"study": "record", "dataset": {**dataset, "root": str(root)}}, source="curve table")
    data = build_dataset(spec.dataset, only=("train", "val"))
    for split, n in subset.items():
        if n is not None:
            data.splits[split] = data.splits[split][:n]
    return data


def describe(data: Any) -> dict[str, Any]:
    """The train split's class shares and the majority-class plateau the replay's rungs wait for."""
    from segtune.search.scheduling.study_policy import plateau
    from segtune.search.store.study import describe_data as data_description

    return {"class_shares": data_description(data)["shares"], "plateau": round(plateau(data), 4)}


def space_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


if __name__ == "__main__":
    main()
