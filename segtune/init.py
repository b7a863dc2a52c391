"""`segtune init DATA_DIR [-o spec.yaml]`: from a dataset folder to a study spec that validates and runs.

The folder is recognised by data/recognise/ and measured by data/recognise/fingerprint.py; this module turns them into
the spec's decisions (image size, class weights, losses, budget), each stated with its reason, and
writes the spec with those reasons as comments.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from segtune.data.recognise import Layout, detect
from segtune.data.recognise.fingerprint import Fingerprint, fingerprint
from segtune.errors import SpecError
from segtune.tables import format_table

RARE = 0.05  # a class under 5% of the labelled pixels is rare: overlap losses and class weights help it
SQUARE = (0.9, 1.11)  # w / h within this range: one side is enough
HAND_PICK = {
    "arch": "Unet",
    "encoder": "resnet34",
    "loss": "ce",
    "augment": "flip",
    "optimizer": "adamw",
    "lr": 1.0e-3,
    "weight_decay": 1.0e-4,
    "schedule": "onecycle",
}


@dataclass
class Decision:
    field: str
    value: Any
    reason: str


def _round32(x: float) -> int:
    return max(32, int(round(x / 32)) * 32)


def image_size(fp: Fingerprint) -> Decision:
    h, w = fp.median_size
    long = min(_round32(max(h, w)), 384)
    aspect = fp.aspect
    if SQUARE[0] <= aspect <= SQUARE[1]:
        return Decision(
            "dataset.image_size",
            long,
            f"pictures are about square (median {h} x {w} px): their long "
            f"side at {long} px, capped at 384 for a search",
        )
    size = [round(long / aspect), long] if aspect > 1 else [long, round(long * aspect)]
    why = (
        f"pictures are {aspect:.2f}:1 (median {h} x {w} px): kept at that shape, {size[0]} x {size[1]}, "
        "padded to multiples of 32 and cropped back, never squashed"
    )
    return Decision("dataset.image_size", size, why)


def losses(fp: Fingerprint) -> list[Decision]:
    foreground = {c: s for c, s in fp.pixel_share.items() if c != fp.classes[0] and fp.images_with[c]}
    rarest = min(foreground, key=foreground.get) if foreground else None
    if rarest is not None and foreground[rarest] < RARE:
        why = f"{rarest} covers {foreground[rarest]:.1%} of the labelled pixels: a rare foreground"
        return [
            Decision(
                "space.loss",
                {"choice": ["ce", "dice", "tversky", "dice+focal"]},
                f"{why}, so overlap losses (Dice, Tversky, Dice+Focal) are searched beside CE",
            ),
            Decision(
                "space.tversky_alpha",
                {"uniform": [0.3, 0.7], "when": {"loss": "tversky"}},
                "Tversky's false-positive weight, when Tversky is drawn",
            ),
            Decision(
                "space.class_weights",
                {"choice": [None, "median_frequency"], "when": {"loss": "ce"}},
                f"{why}: CE may weigh classes by median frequency",
            ),
        ]
    return [
        Decision(
            "space.loss",
            {"choice": ["ce", "dice+focal"]},
            "no class under 5% of the pixels: CE and Dice+Focal, no class weights",
        )
    ]


def budget(fp: Fingerprint) -> list[Decision]:
    n = fp.splits.get("train", 0)
    if n < 500:
        epochs, trials, why = 30, 24, f"{n} train images: epochs are short and a small set needs many"
    elif n < 5000:
        epochs, trials, why = 20, 30, f"{n} train images"
    else:
        epochs, trials, why = 12, 40, f"{n} train images: epochs are long, few are needed"
    return [
        Decision("search.max_epochs", epochs, why),
        Decision(
            "search.trials",
            trials,
            f"{trials} trials of up to {epochs} epochs; early stopping ends most of them long before",
        ),
    ]


def missing_classes(fp: Fingerprint) -> list[Decision]:
    absent = [c for c in fp.classes if fp.images_with[c] == 0]
    if absent:
        why = (
            f"CHOICE: {', '.join(absent)} appear in no mask of this folder (a subset of the dataset?): allowed, "
            "so the study runs; their IoU stays undefined"
        )
        return [Decision("dataset.allow_missing_classes", True, why)]
    untrained = [c for c in fp.classes if fp.train_with is not None and fp.train_with[c] == 0]
    if untrained:
        held = ", ".join(f"{c} ({fp.images_with[c]} pictures)" for c in untrained)
        why = (
            f"CHOICE: {held} in no train picture of this split: allowed, so the study runs; a model cannot learn "
            "what it never sees: move a picture holding it to train"
        )
        return [Decision("dataset.allow_missing_classes", True, why)]
    return []


def starting_points(fp: Fingerprint) -> list[tuple[dict[str, Any], str]]:
    """A short, diverse list of what a person would try first, from the fingerprint, each with its reason: the usual
    pick; Dice + Focal (the change that won most often in the hand-pick runs, README Benchmarks), and for a rare
    class the overlap loss that weighs recall (Tversky) and CE weighed by median frequency; one learning-rate
    change. The search races them (search.prior) and spends what they free near the best of them."""
    foreground = {c: s for c, s in fp.pixel_share.items() if c != fp.classes[0] and fp.images_with[c]}
    rarest = min(foreground, key=foreground.get) if foreground else None
    rare = rarest is not None and foreground[rarest] < RARE
    points = [
        (dict(HAND_PICK), "the usual pick: Unet / ResNet34, CE, flips, AdamW 1e-3, one-cycle"),
        (
            {**HAND_PICK, "loss": "dice+focal"},
            "Dice + Focal: overlap and hard pixels, often better on a small foreground",
        ),
    ]
    if rare:
        share = f"{rarest} covers {foreground[rarest]:.1%} of the pixels"
        points.append(({**HAND_PICK, "loss": "tversky"}, f"Tversky, which weighs recall: {share}"))
        points.append(({**HAND_PICK, "class_weights": "median_frequency"}, f"CE weighed by median frequency: {share}"))
    points.append(({**HAND_PICK, "lr": 3.0e-3}, "the usual pick at lr 3e-3: encoders trained from scratch here"))
    return points


def propose(layout: Layout, fp: Fingerprint, study: str) -> tuple[dict[str, Any], list[Decision]]:
    decisions = [image_size(fp), *missing_classes(fp), *losses(fp), *budget(fp)]
    dataset = {
        **layout.dataset,
        **{d.field.removeprefix("dataset."): d.value for d in decisions if d.field.startswith("dataset.")},
    }
    space: dict[str, Any] = {
        "arch": {"choice": ["Unet", "FPN", "DeepLabV3Plus"]},
        "encoder": {"choice": ["resnet34", "efficientnet-b0"]},
        "encoder_weights": None,
    }
    for d in decisions:
        if d.field.startswith("space."):
            space[d.field.removeprefix("space.")] = d.value
    space.update(
        {
            "augment": {"choice": ["flip", "light", "strong"]},
            "aug_strength": {"uniform": [0.3, 1.0], "when": {"augment": ["light", "strong"]}},
            "optimizer": "adamw",
            "lr": {"loguniform": [1.0e-4, 3.0e-3]},
            "weight_decay": {"loguniform": [1.0e-6, 1.0e-2]},
            "schedule": {"choice": ["cosine", "onecycle"]},
            "batch_size": 8,
        }
    )
    search = {d.field.removeprefix("search."): d.value for d in decisions if d.field.startswith("search.")}
    points = starting_points(fp)
    search.update(metric="val_miou", starting_points=[p for p, _ in points])
    decisions.append(
        Decision(
            "search.starting_points",
            [p for p, _ in points],
            "a person's short list, the search's prior (raced two thirds of the way, its best members go on): "
            + "; ".join(f"{i + 1}. {why}" for i, (_, why) in enumerate(points)),
        )
    )
    spec = {
        "study": study,
        "dataset": dataset,
        "space": space,
        "search": search,
        "resources": {"cpus_per_trial": "auto", "gpus_per_trial": "auto"},
        "train": {"precision": "auto"},
        "storage": "sqlite:///segtune.db",
    }
    return spec, decisions


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def spec_text(spec: dict[str, Any], layout: Layout, fp: Fingerprint, decisions: list[Decision]) -> str:
    """The spec as YAML, each decision's reason beside it, the choices init could not settle marked CHOICE."""
    reasons = {d.field: d.reason for d in decisions}
    reasons.update({f"dataset.{k}": v for k, v in layout.comments.items()})
    lines = [
        f"# written by `segtune init {spec['dataset']['root']}`: {layout.how}",
        f"# {fp.images} images (train {fp.splits['train']}, val {fp.splits['val']}, test {fp.splits['test']});"
        " every decision says why; lines marked CHOICE are guesses the files could not settle",
        f"study: {spec['study']}",
    ]
    for section in ("dataset", "space", "search", "resources", "train"):
        lines.append(f"{section}:")
        for key, value in spec[section].items():
            line = f"  {key}: {_flow(value)}"
            why = reasons.get(f"{section}.{key}")
            lines.append(f"  # {why}" if why and len(line) + len(why) > 110 else line)
            if why and len(line) + len(why) > 110:
                lines.append(line)
            elif why:
                lines[-1] = f"{line}  # {why}"
    lines.append(f"storage: {spec['storage']}")
    return "\n".join(lines) + "\n"


def fingerprint_table(fp: Fingerprint) -> str:
    rows = [[c, f"{fp.pixel_share[c]:.1%}", fp.images_with[c]] for c in fp.classes]
    rows.append(["(ignored)", f"{fp.ignore_share:.1%}", "-"])
    return format_table(["class", "pixels", "images holding it"], rows)


def init(root: Path, out: Path, study: str | None = None, stream: Any = None) -> Path:
    stream = stream or sys.stdout
    layout = detect(root)
    print(f"found: {layout.how}", file=stream)
    fp = fingerprint(layout)
    h, w = fp.median_size
    sizes = sorted(fp.sizes)
    print(
        f"{fp.images} images: train {fp.splits['train']}, val {fp.splits['val']}, test {fp.splits['test']}; "
        f"median {h} x {w} px (h x w), aspect {fp.aspect:.2f}, from {sizes[0][0]} x {sizes[0][1]} to "
        f"{sizes[-1][0]} x {sizes[-1][1]}",
        file=stream,
    )
    print(fingerprint_table(fp), file=stream)
    name = study or "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(root).resolve().name).strip("-.")
    spec, decisions = propose(layout, fp, name or "my-study")
    print("decisions:", file=stream)
    for field, why in layout.comments.items():  # how the files are read: pairing, values, sizes, splits
        if field in spec["dataset"]:
            print(f"- dataset.{field}: {_flow(spec['dataset'][field])}: {why}", file=stream)
    for d in decisions:
        print(f"- {d.field}: {_flow(d.value)}: {d.reason}", file=stream)
    for note in layout.notes:
        print(f"- note: {note}", file=stream)
    text = spec_text(spec, layout, fp, decisions)
    from segtune.spec import parse_yaml, validate

    try:
        validate(parse_yaml(text), source=str(out))  # what is written must load
    except SpecError as e:
        raise SpecError(f"init wrote a spec that does not validate (a bug): {e}") from None
    out.write_text(text)
    print(f"wrote {out}: check it with `segtune check {out}`, then `segtune run {out}`", file=stream)
    return out
