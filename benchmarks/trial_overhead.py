"""How much of every trial slot trains: slot utilisation, start-up, tail, gaps, worker memory, loop speed.

    python benchmarks/trial_overhead.py                 # both studies, workers reused (the default)
    python benchmarks/trial_overhead.py --fresh-workers # the same with a new process per trial (before)

Definitions (issue "Every trial-second trains"), all read from the study store:
- training seconds of a trial: the sum of its ``epoch_seconds`` user attr (train + validation per epoch);
- wall seconds of a search: from the first trial's ask (its ``datetime_start``) to the last trial's tell
  (the latest ``datetime_complete``); Ray's start-up before the first ask and the tail (where fewer
  trials run than there are slots) are reported separately;
- slots: as ``run`` computes them (the study attr ``slots``);
- slot utilisation = sum of training seconds / (slots x wall seconds);
- gap: on one worker process, from a trial's last epoch ending to the next trial's first training step;
- workers up: from the first ask to the first training step, and the utilisation from then on. The slots'
  worker processes (torch, smp, albumentations and Ray Tune imported, the data fetched) start before the first
  ask (search/nodes/warmup.py), so their start-up is in the start-up column, with Ray's;
- run: from calling ``run_study`` to the last tell (start-up, wall and all), to compare whole runs.

``--user-clock N`` measures what a user waits for instead: ``segtune run`` as a command, N times per study, from
starting the process to its exit. Utilisation on that clock = training seconds / (slots x the command's wall
time), and the wall time is broken into its parts, from the lines the command prints as they come and the store:
imports and decoding (to the "decoded" line), Ray's start and the store (to the "study ... in" line), the workers'
start (to the first ask), the search (first ask to last tell: gaps and the tail inside it), and the exit (last
tell to the process's end: Tune's and Ray's shutdown, the final table).

Then the speed of training inside a trial against a bare PyTorch loop written here for the comparison
(same model, batch size, image size, augmentation, validation every epoch, data and threads), both
without their first epoch: the trial's time per epoch includes its Tune reporting and checkpoint writes.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import optuna
import torch
import torch.nn.functional as F
import yaml

from segtune import spec as spec_mod
from segtune.data import build_dataset
from segtune.search import run as search
from segtune.tables import format_table
from segtune.training.models import build_model

REPO = Path(__file__).resolve().parents[1]
SHORT_TRIALS = {  # 24 short trials: synthetic scenes, 1 epoch when ASHA stops them, 3 when not
    "study": "short-trials",
    "dataset": {"name": "synthetic", "num_images": 96, "num_classes": 3, "image_size": 64},
    "space": {
        "arch": {"choice": ["SmallUNet", "Unet"]},
        "encoder": "resnet18",
        "augment": "light",
        "lr": {"loguniform": [1.0e-3, 1.0e-2]},
        "batch_size": 8,
    },
    "search": {"trials": 24, "max_epochs": 3, "grace_period": 1, "reduction_factor": 3, "seed": 0},
    "resources": {"cpus_per_trial": 1},
}


def ran(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if "ray_trial_id" in t.user_attrs and t.datetime_complete]


def span(t: optuna.trial.FrozenTrial) -> tuple[float, float]:
    """When a trial trained on its slot: its first step to its last epoch's end (ask and tell without them)."""
    a = t.user_attrs
    start = a.get("train_started_at") or t.datetime_start.timestamp()
    return start, a.get("train_ended_at") or t.datetime_complete.timestamp()


def tail_seconds(trials: list[optuna.trial.FrozenTrial], slots: int, end: float) -> float:
    """From the last moment every slot was training to the end of the search."""
    events = sorted([(span(t)[0], 1) for t in trials] + [(span(t)[1], -1) for t in trials])
    running, full_until = 0, events[0][0]
    for when, step in events:
        if running >= slots:
            full_until = when
        running += step
    return end - full_until


def training_until(trials: list[optuna.trial.FrozenTrial], until: float) -> float:
    """Training seconds before ``until``: a trial's share in proportion to its span before then."""
    total = 0.0
    for t in trials:
        start, stop = span(t)
        seconds = sum(t.user_attrs.get("epoch_seconds", []))
        if stop <= until:
            total += seconds
        elif start < until:
            total += seconds * (until - start) / (stop - start)
    return total


def utilisation(study: optuna.Study, started: float) -> dict[str, Any]:
    trials = ran(study)
    slots = int(study.user_attrs["slots"])
    first = min(t.datetime_start.timestamp() for t in trials)
    last = max(t.datetime_complete.timestamp() for t in trials)
    training = sum(sum(t.user_attrs.get("epoch_seconds", [])) for t in trials)
    wall = last - first
    tail = tail_seconds(trials, slots, last)
    by_worker: dict[int, list[optuna.trial.FrozenTrial]] = defaultdict(list)
    for t in trials:
        if t.user_attrs.get("train_started_at") and t.user_attrs.get("train_ended_at"):
            by_worker[t.user_attrs["worker_pid"]].append(t)
    gaps, growth = [], []
    for ts in by_worker.values():
        ts.sort(key=lambda t: t.user_attrs["train_started_at"])
        gaps += [b.user_attrs["train_started_at"] - a.user_attrs["train_ended_at"] for a, b in itertools.pairwise(ts)]
        if len(ts) > 1:
            start = [t.user_attrs.get("worker_rss_start_mb", math.nan) for t in ts]  # before each trial builds
            peak = max(t.user_attrs["worker_rss_mb"] for t in ts)  # during a trial, model and optimizer included
            growth.append((start[0], start[1], start[-1], peak, len(ts)))
    # from the first ask to the first step: a gap like any other since the workers start before the first ask
    first_step = min(
        (t.user_attrs["train_started_at"] for t in trials if t.user_attrs.get("train_started_at")), default=first
    )
    before_tail = training_until(trials, last - tail) / (slots * (wall - tail)) if wall > tail else math.nan
    return {
        "trials": len(trials),
        "slots": slots,
        "workers": len(by_worker),
        "wall_s": wall,
        "workers_up_s": first_step - first,
        "utilisation_workers_up": training / (slots * (last - first_step)),
        "training_s": training,
        "utilisation": training / (slots * wall),
        "utilisation_before_tail": before_tail,
        "startup_s": first - started,
        "run_s": last - started,
        "tail_s": tail,
        "gap_median_s": statistics.median(gaps) if gaps else float("nan"),
        "gap_max_s": max(gaps, default=math.nan),
        "rss_mb": growth,
    }


def search_once(raw: dict[str, Any], store: str, fresh: bool, tmp: Path) -> dict[str, Any]:
    raw = {
        **raw,
        "resources": {**raw.get("resources", {}), "reuse_workers": not fresh},
        "results_dir": str(tmp / "runs"),
    }
    spec = spec_mod.validate(raw, check_root=False)
    started = time.time()
    study = search.run_study(spec, f"sqlite:///{store}", raw["study"])
    return utilisation(study, started)


def command_once(raw: dict[str, Any], tmp: Path, run: int) -> dict[str, Any]:
    """``segtune run`` as a user starts it, timed from process start to exit, its output lines stamped as they come."""
    name = f"{raw['study']}-{run}"
    spec_path = tmp / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump({**raw, "results_dir": str(tmp / "runs")}))
    store = f"sqlite:///{tmp / name}.db"
    lines: list[tuple[float, str]] = []
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "segtune", "run", str(spec_path), "--storage", store],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.time(), line.rstrip()))
    if proc.wait() != 0:
        raise RuntimeError("segtune run failed:\n" + "\n".join(text for _, text in lines[-20:]))
    ended = time.time()

    def at(prefix: str) -> float:
        return next(when for when, text in lines if text.startswith(prefix))

    study = optuna.load_study(study_name=raw["study"], storage=store)
    inside = utilisation(study, started)
    trials = ran(study)
    first_ask = min(t.datetime_start.timestamp() for t in trials)
    last_tell = max(t.datetime_complete.timestamp() for t in trials)
    slots = int(study.user_attrs["slots"])
    return {
        **inside,
        "command_s": ended - started,
        "utilisation_user": inside["training_s"] / (slots * (ended - started)),
        "imports_decode_s": at("decoded ") - started,
        "ray_store_s": at("study ") - at("decoded "),
        "workers_start_s": first_ask - at("study "),
        "search_s": last_tell - first_ask,
        "exit_s": ended - last_tell,
    }


def user_clock(studies: list[tuple[str, dict[str, Any]]], repeats: int, tmp: Path) -> None:
    """Utilisation over the whole command, ``repeats`` runs per study: the median, the spread, and the parts."""
    for name, raw in studies:
        runs = [command_once(raw, tmp, i) for i in range(repeats)]
        for i, r in enumerate(runs):
            print(
                f"{name} run {i + 1}: command {r['command_s']:.1f} s, utilisation {r['utilisation_user']:.2f} "
                f"(inside the search {r['utilisation']:.2f}); imports + decode {r['imports_decode_s']:.1f} s, Ray + "
                f"store {r['ray_store_s']:.1f} s, workers {r['workers_start_s']:.1f} s, search {r['search_s']:.1f} s "
                f"(tail {r['tail_s']:.1f} s, gap median {r['gap_median_s']:.2f} s), exit {r['exit_s']:.1f} s",
                flush=True,
            )
        values = sorted(r["utilisation_user"] for r in runs)
        parts = {
            k: statistics.median(r[k] for r in runs)
            for k in ("imports_decode_s", "ray_store_s", "workers_start_s", "search_s", "tail_s", "exit_s")
        }
        print(
            f"{name}: utilisation on the user's clock, median {statistics.median(values):.2f} over {repeats} runs "
            f"(range {values[0]:.2f}-{values[-1]:.2f}); median parts: "
            + ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.1f} s" for k, v in parts.items()),
            flush=True,
        )


def worker_import_seconds(repeats: int = 3) -> float:
    """What a slot's worker process imports before its first trial (the trainable's module and all it needs),
    timed in a fresh interpreter; the median of ``repeats``. Alone here: in a search, the slots' workers
    import side by side, with the driver beside them."""
    code = "import time; t = time.perf_counter(); import segtune.search.trial.trainable; print(time.perf_counter() - t)"
    runs = [
        float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
        for _ in range(repeats)
    ]
    return statistics.median(runs)


# ---- the bare loop: written for the comparison, shares nothing with segtune's fit but the decoded arrays ----


def bare_epochs(data: Any, arch: str, encoder: str, batch: int, epochs: int, threads: int) -> list[float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from segtune.config import TrialConfig

    model = build_model(TrialConfig(arch=arch, encoder=encoder), data.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    h, w = data.resize.canvas
    s = 0.5
    augment = A.Compose(
        [
            A.RandomResizedCrop(size=(h, w), scale=(1 - 0.6 * s, 1.0), ratio=(0.8 * w / h, 1.25 * w / h)),
            A.HorizontalFlip(p=0.5),
        ]
    )  # segtune's "light" at strength 0.5, written out
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    train, val = data.splits["train"], data.splits["val"]
    steps = len(train) // batch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        order = np.random.permutation(train)
        for b in range(steps):
            pairs = [augment(image=data.images[i], mask=data.masks[i]) for i in order[b * batch : (b + 1) * batch]]
            x = torch.from_numpy(np.stack([p["image"] for p in pairs]).transpose(0, 3, 1, 2).copy())
            y = torch.from_numpy(np.stack([p["mask"] for p in pairs]).astype(np.int64))
            loss = F.cross_entropy(model((x.float() - mean) / std), y, ignore_index=255)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        confusion = torch.zeros(data.num_classes, data.num_classes, dtype=torch.long)
        with torch.no_grad():
            for b in range(0, len(val), batch * 2):
                idx = val[b : b + batch * 2]
                x = torch.from_numpy(data.images[idx].transpose(0, 3, 1, 2).copy())
                y = torch.from_numpy(data.masks[idx].astype(np.int64))
                pred = model((x.float() - mean) / std).argmax(1)
                keep = y != 255
                confusion += torch.bincount(
                    y[keep] * data.num_classes + pred[keep], minlength=data.num_classes**2
                ).view(data.num_classes, -1)
        times.append(time.perf_counter() - t0)
    return times


def in_a_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn`` on a thread of its own, as Tune runs a trial. glibc gives a thread its own malloc arena, and which
    of the two page-faults more changes from run to run (0.6 to 2.0 million faults over three bare epochs on
    either, 9.4 to 12.9 s an epoch): the two sides allocate alike only on the same kind of thread."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(fn(*args, **kwargs)))
    worker.start()
    worker.join()
    if not out:
        raise RuntimeError(f"{fn.__name__} failed in its thread (its traceback is above)")
    return out[0]


SHARED_PETS = REPO.parent / "shared" / "datasets" / "oxford-iiit-pet-sample"


def speed_dataset(root: str | None, per_split: int) -> dict[str, Any]:
    """The loop comparison's data: at most ``per_split`` real pet images for training and as many for
    validation (the issue's reference was PH2-sized: 200 images), from ``root``, else the 600-image sample beside the
    repository, else the 60 images shipped in segtune (2-second epochs: the fixed cost between epochs,
    reports and best weights, then weighs three times more than on any real dataset)."""
    if root is None:
        root = str(SHARED_PETS) if SHARED_PETS.is_dir() else "builtin:oxford-pets-sample"
    return {"name": "oxford_pets", "root": root, "image_size": 128, "val_fraction": 0.25, "limit": per_split}


def loop_speed(tmp: Path, epochs: int, repeats: int, dataset: dict[str, Any]) -> dict[str, Any]:
    """One trial through the whole search path (Ray, Tune reporting, checkpoints) against the bare loop, in
    turns, ``repeats`` times each: the faster of each side's runs counts (this machine's speed drifts by 5-10%
    from minute to minute, more than the difference measured)."""
    raw = {
        "study": "loop-speed",
        "dataset": dataset,
        "space": {
            "arch": "Unet",
            "encoder": "resnet18",
            "loss": "ce",
            "augment": "light",
            "aug_strength": 0.5,
            "optimizer": "adamw",
            "lr": 1.0e-3,
            "weight_decay": 1.0e-4,
            "schedule": "cosine",
            "batch_size": 8,
        },
        "search": {"trials": 1, "max_epochs": epochs, "scheduler": "none"},
        "resources": {"cpus_per_trial": 2},
        "results_dir": str(tmp / "runs"),
    }
    spec = spec_mod.validate(raw)
    data = build_dataset(spec.dataset, only=search.SEARCH_SPLITS)  # the test split plays no part
    trials, bares = [], []
    for i in range(repeats):
        study = search.run_study(spec, f"sqlite:///{tmp / f'speed{i}.db'}", "loop-speed", data=data)
        a = ran(study)[0].user_attrs
        # both sides leave their first epoch out (allocator and kernel warm-up); the trial's span from the end
        # of its first epoch to the end of its last holds everything between its epochs: reports, checkpoints
        first_end = a["train_started_at"] + a["epoch_seconds"][0]
        trials.append(((a["train_ended_at"] - first_end) / (a["epochs_run"] - 1), a["epoch_seconds"]))
        bare = in_a_thread(bare_epochs, data, "Unet", "resnet18", 8, epochs, threads=2)
        bares.append((statistics.mean(bare[1:]), bare))
    (trial_epoch, trial_list), (bare_epoch, bare_list) = min(trials), min(bares)
    return {
        "trial_s_per_epoch": trial_epoch,
        "bare_s_per_epoch": bare_epoch,
        "ratio": bare_epoch / trial_epoch,
        "trial_epochs": trial_list,
        "bare_epochs": bare_list,
        "runs": len(trials),
        "root": dataset["root"],
        "images": {k: len(v) for k, v in data.splits.items() if len(v)},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fresh-workers", action="store_true", help="a new worker process per trial (segtune before)")
    p.add_argument("--demo-trials", type=int, default=16)
    p.add_argument("--speed-epochs", type=int, default=5, help="at least 2: the first epoch is left out")
    p.add_argument(
        "--speed-root",
        help="Oxford-IIIT Pet folder for the loop comparison (default: the sample beside "
        "the repository, else segtune's 60 built-in images)",
    )
    p.add_argument("--speed-images", type=int, default=100, help="images per split in the loop comparison")
    p.add_argument("--speed-repeats", type=int, default=2, help="trial and bare loop in turns, this many times")
    p.add_argument("--skip", nargs="*", default=[], choices=["demo", "short", "speed"])
    p.add_argument("--user-clock", type=int, metavar="N", help="time `segtune run` itself, N runs per study, and stop")
    args = p.parse_args()
    rows, memory = [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        studies = []
        if "demo" not in args.skip:
            demo = spec_mod.parse_yaml((REPO / "search_spaces" / "demo.yaml").read_text())
            demo["search"]["trials"] = args.demo_trials
            studies.append((f"demo, {args.demo_trials} trials", demo))
        if "short" not in args.skip:
            studies.append(("synthetic, 24 short trials", SHORT_TRIALS))
        if args.user_clock:
            user_clock(studies, args.user_clock, tmp)
            return
        for name, raw in studies:
            r = search_once(raw, str(tmp / f"{raw['study']}.db"), args.fresh_workers, tmp)
            rows.append(
                [
                    name,
                    r["trials"],
                    r["slots"],
                    f"{r['wall_s']:.1f}",
                    f"{r['training_s']:.1f}",
                    f"{r['utilisation']:.2f}",
                    f"{r['utilisation_before_tail']:.2f}",
                    f"{r['utilisation_workers_up']:.2f}",
                    f"{r['startup_s']:.1f}",
                    f"{r['workers_up_s']:.1f}",
                    f"{r['tail_s']:.1f}",
                    f"{r['gap_median_s']:.2f}",
                    f"{r['gap_max_s']:.2f}",
                    f"{r['run_s']:.1f}",
                ]
            )
            memory += [[name, n, f"{a:.0f}", f"{b:.0f}", f"{c:.0f}", f"{peak:.0f}"] for a, b, c, peak, n in r["rss_mb"]]
        speed = None
        if "speed" not in args.skip:
            dataset = speed_dataset(args.speed_root, args.speed_images)
            speed = loop_speed(tmp, args.speed_epochs, args.speed_repeats, dataset)
    mode = "fresh worker per trial" if args.fresh_workers else "workers reused"
    print(f"\na worker's imports before its first trial, alone: {worker_import_seconds():.2f} s (median of 3)")
    print(f"\nslot utilisation ({mode}):")
    columns = [
        "study",
        "trials",
        "slots",
        "wall s",
        "training s",
        "utilisation",
        "before tail",
        "once workers up",
        "start-up s",
        "workers up s",
        "tail s",
        "gap median s",
        "gap max s",
        "run s",
    ]
    print(format_table(columns, rows))
    if memory:
        print("\nworker resident memory (MB) when a trial begins, after the previous one freed its own:")
        print(format_table(["study", "trials", "1st trial", "2nd trial", "last trial", "peak in a trial"], memory))
    if speed:
        images = ", ".join(f"{k} {v}" for k, v in speed["images"].items())
        print(
            f"\ntraining inside a trial vs a bare PyTorch loop (Unet/resnet18, 128 px, batch 8, 2 threads; "
            f"{speed['root']}: {images} images): {speed['trial_s_per_epoch']:.2f} s vs "
            f"{speed['bare_s_per_epoch']:.2f} s per epoch, ratio {speed['ratio']:.3f}"
        )
        trial, bare = (" ".join(f"{s:.2f}" for s in speed[k]) for k in ("trial_epochs", "bare_epochs"))
        print(f"  the faster of {speed['runs']} runs each; seconds of each epoch: trial {trial}; bare loop {bare}")


if __name__ == "__main__":
    main()
