"""`segtune init DATA_DIR`: recognise a dataset folder, fingerprint it, and propose a study spec that runs.

Recognised layouts: torchvision's Oxford-IIIT Pet and Pascal VOC, both CamVid layouts, and any images +
masks tree (`folder`): masks found by their folder (masks, labels, annotations, ground truth, ...) or their
name (a suffix such as _mask, _lesion, _segmentation), or, failing both, by their content (few values,
one channel); split subfolders become fixed splits. The fingerprint reads the masks with the reader
`check` and `run` use (data/labels.py: one meaning of 0/255), and every decision is stated with its
reason; what cannot be told from the files (which value means "ignore", the names of indexed classes)
is written as a choice with a comment saying so.
"""

from __future__ import annotations

import contextlib
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from segtune.data.base import SPLITS, read_mask
from segtune.data.labels import IGNORE_INDEX, ValueCensus, is_binary_255
from segtune.errors import DataError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
MASK_FOLDERS = {
    "mask",
    "masks",
    "label",
    "labels",
    "annotation",
    "annotations",
    "annot",
    "gt",
    "groundtruth",
    "ground_truth",
    "ground truth",
    "ground-truth",
    "segmentation",
    "segmentations",
    "seg",
    "segs",
    "targets",
    "target",
    "trimaps",
    "segmentationclass",
    "segmentationobject",
}
MASK_SUFFIXES = (
    "_segmentation",
    "_mask",
    "_masks",
    "-mask",
    "_lesion",
    "_label",
    "_labels",
    "_gt",
    "_seg",
    "_annotation",
    "_anno",
    "_L",
)
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "trn": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "tst": "test",
}
MAX_FILES = 100_000


@dataclass
class Layout:
    """What the folder is: the dataset section it reads as, and how that was recognised."""

    kind: str
    dataset: dict[str, Any]
    how: str
    notes: list[str] = field(default_factory=list)  # choices made that the files could not settle
    comments: dict[str, str] = field(default_factory=dict)  # dataset field -> the comment written beside it


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def _mask_suffix(stem: str) -> str | None:
    return next((s for s in MASK_SUFFIXES if stem.endswith(s) and len(stem) > len(s)), None)


def _looks_like_mask(path: Path, relative: Path) -> bool:
    """By its folder or name first; else by content: one channel (or a palette) and few values."""
    if any(part.lower() in MASK_FOLDERS for part in relative.parts[:-1]) or _mask_suffix(path.stem):
        return True
    try:
        with Image.open(path) as im:
            if im.mode not in ("1", "L", "P"):
                return False
            small = np.asarray(im.convert("L") if im.mode == "1" else im)[::8, ::8]
            values = set(np.unique(small).tolist())
            return len(values) <= 32 and (im.mode != "L" or max(values) < 64 or values <= {0, 255})
    except (OSError, UnidentifiedImageError):
        return False


def _split_of(relative: Path) -> str | None:
    hits = {SPLIT_NAMES[p.lower()] for p in relative.parts[:-1] if p.lower() in SPLIT_NAMES}
    return hits.pop() if len(hits) == 1 else None


def _pattern(relative: Path, key: str, split_part: str | None) -> str:
    """A path as a glob: the key's occurrences and the split folder replaced by wildcards."""
    parts = []
    for part in relative.parts:
        if split_part is not None and part == split_part:
            parts.append("{split}")
        else:
            parts.append(part.replace(key, "*") if key in part else part)
    glob = "/".join(parts)
    return re.sub(r"\*+", "*", glob)


def _folder_layout(root: Path) -> Layout:
    files = []
    for path in sorted(root.rglob("*")):
        if _is_image(path):
            files.append(path)
            if len(files) > MAX_FILES:
                raise DataError(f"{root}: more than {MAX_FILES} pictures; point init at the dataset's own folder")
    if not files:
        raise DataError(f"{root}: no pictures found ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    masks, images = [], []
    for path in files:
        (masks if _looks_like_mask(path, path.relative_to(root)) else images).append(path)
    if not masks or not images:
        raise DataError(
            f"{root}: cannot tell images from masks ({len(files)} pictures, {len(masks)} look like "
            "masks); write the dataset section by hand (README: folder)"
        )
    suffixes = Counter(_mask_suffix(m.stem) for m in masks)
    suffix = suffixes.most_common(1)[0][0]

    def key(path: Path, is_mask: bool) -> str:
        stem = path.stem
        return stem[: -len(suffix)] if is_mask and suffix and stem.endswith(suffix) else stem

    def keyed(paths: list[Path], is_mask: bool) -> dict[tuple[str | None, str], Path]:
        return {(_split_of(p.relative_to(root)), key(p, is_mask)): p for p in paths}

    by_image, by_mask = keyed(images, False), keyed(masks, True)
    pairs = sorted(set(by_image) & set(by_mask))
    if not pairs:
        raise DataError(f"{root}: found {len(images)} images and {len(masks)} masks but could pair none by name")
    splits = {s for s, _ in pairs}
    use_folders = None not in splits and {"train", "val"} <= splits

    def glob_of(paths: dict[tuple[str | None, str], Path]) -> str:
        patterns = Counter()
        for (split, k), p in paths.items():
            if (split, k) in pairs:
                rel = p.relative_to(root)
                split_part = next((q for q in rel.parts[:-1] if SPLIT_NAMES.get(q.lower()) == split), None)
                patterns[_pattern(rel, k, split_part if use_folders else None)] += 1
        return patterns.most_common(1)[0][0]

    dataset: dict[str, Any] = {
        "name": "folder",
        "root": str(root),
        "images": glob_of(by_image),
        "masks": glob_of(by_mask),
    }
    if suffix:  # one regex pairs IMD001.bmp with IMD001_lesion.bmp
        dataset["key"] = rf"^(.+?)(?:{re.escape(suffix)})?\.\w+$"
    how = f"images + masks: {len(pairs)} pairs ({dataset['images']} with {dataset['masks']})"
    if use_folders:
        dataset["split"] = "folders"
        how += ", split by folder"
    unpaired = len(images) + len(masks) - 2 * len(pairs)
    notes = [f"{unpaired} pictures found no partner and are left out"] if unpaired else []
    return Layout("folder", dataset, how, notes)


def detect(root: Path) -> Layout:
    """The layout of ``root``: the known datasets first, then any images + masks tree."""
    from segtune.data.camvid import _layout as camvid_layout
    from segtune.data.oxford_pets import find_pets_dir

    root = root.resolve()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    pets = find_pets_dir(root)
    if pets is not None:
        parent = pets.parent if pets.name == "oxford-iiit-pet" else root
        return Layout(
            "oxford_pets",
            {"name": "oxford_pets", "root": str(parent), "download": False},
            "torchvision's Oxford-IIIT Pet (images/, annotations/trimaps/, the official lists)",
        )
    for candidate in (root / "VOCdevkit", root):
        for year in ("2012", "2011", "2010", "2009", "2008", "2007"):
            base = candidate / f"VOC{year}"
            if (base / "JPEGImages").is_dir() and (base / "SegmentationClass").is_dir():
                voc_root = candidate.parent if candidate.name == "VOCdevkit" else candidate
                return Layout(
                    "voc",
                    {"name": "voc", "root": str(voc_root), "year": year},
                    f"Pascal VOC {year} in torchvision's layout",
                )
    with contextlib.suppress(DataError):
        kind = camvid_layout(root)
        how = "CamVid, SegNet's 11 classes" if kind == "segnet" else "CamVid, 32 classes coded by colour"
        return Layout("camvid", {"name": "camvid", "root": str(root)}, how)
    return _folder_layout(root)


@dataclass
class Fingerprint:
    images: int
    splits: dict[str, int]
    sizes: list[tuple[int, int]]  # (h, w) of every image
    classes: list[str]
    pixel_share: dict[str, float]  # of the labelled pixels (ignore left out)
    images_with: dict[str, int]
    ignore_share: float

    @property
    def median_size(self) -> tuple[int, int]:
        return int(statistics.median(h for h, _ in self.sizes)), int(statistics.median(w for _, w in self.sizes))

    @property
    def aspect(self) -> float:
        return statistics.median(w / h for h, w in self.sizes)


def decide_folder_values(layout: Layout, census: ValueCensus, rgb: bool) -> None:
    """Classes and the value map of a folder dataset, from every mask's values (labels.py's reader)."""
    ds = layout.dataset
    values = census.values
    if rgb:
        if len(values) > 64:
            raise DataError(f"{ds['root']}: the masks hold {len(values)} colours: not class codes")
        ordered = sorted(values, key=lambda c: (c != (0, 0, 0), -census.pixels[c]))  # black first: background
        ds["classes"] = ["background" if c == (0, 0, 0) else f"class_{i}" for i, c in enumerate(ordered)]
        ds["colors"] = {",".join(map(str, c)): i for i, c in enumerate(ordered)}
        layout.comments["classes"] = "CHOICE: named by colour order; rename them (the colors below say which is which)"
        return
    if is_binary_255(values, 2):
        ds["classes"] = ["background", "foreground"]
        layout.comments["classes"] = (
            "masks hold only 0 and 255: 255 is the foreground (decided from all "
            f"{census.masks} masks); rename foreground to what it is"
        )
        return
    indexed = [v for v in values if v != 255]
    if indexed and max(indexed) < 64 and len(indexed) >= max(indexed) * 0.5:
        k = max(indexed) + 1
        ds["classes"] = ["background"] + [f"class_{i}" for i in range(1, k)]
        layout.comments["classes"] = f"CHOICE: masks hold class indices 0..{k - 1}; name them (0 taken as background)"
        if 255 in values:
            share = census.pixels[255] / sum(census.pixels.values())
            ds["ignore_index"] = 255
            layout.comments["ignore_index"] = (
                f"CHOICE: 255 appears beside 0..{k - 1} (in {census.masks_with[255]} of {census.masks} masks, "
                f"{share:.1%} of pixels): taken as pixels to ignore (outlines, void). If 255 is a class, delete "
                "this line and add the class"
            )
            layout.notes.append("could not tell what mask value 255 means: took it as 'ignore' (see the comment)")
        return
    # grey levels coding classes (0, 85, 170, 255, say): one class per level, in order
    ds["classes"] = ["background"] + [f"class_{i}" for i in range(1, len(values))]
    ds["values"] = {int(v): i for i, v in enumerate(values)}
    layout.comments["values"] = f"CHOICE: {len(values)} grey levels, one class each in order; name the classes"


def _sizes(paths: list[Path]) -> list[tuple[int, int]]:
    out = []
    for p in paths:
        try:
            with Image.open(p) as im:
                out.append((im.height, im.width))
        except (OSError, UnidentifiedImageError):
            continue
    return out


def fingerprint(layout: Layout) -> Fingerprint:
    """Read the dataset as segtune will (the builders, at a small size) and measure it."""
    from segtune.data import build_dataset
    from segtune.spec import validate

    if layout.kind == "folder" and "classes" not in layout.dataset:
        from segtune.data.folder import index_records

        probe = validate({"study": "init", "dataset": {**layout.dataset, "classes": ["a", "b"]}}, source="init")
        records, _ = index_records(probe.dataset)
        rgb = _colour_coded(records[0].mask) if records else False
        census = ValueCensus()
        for r in records:
            try:
                census.add(read_mask(r.mask, rgb=rgb))
            except DataError:
                continue
        decide_folder_values(layout, census, rgb)
    spec = validate(
        {
            "study": "init",
            "dataset": {**layout.dataset, "image_size": 64, "skip_bad_files": True, "allow_missing_classes": True},
        },
        source="init",
    )
    data = build_dataset(spec.dataset)
    pictures = [m[:h, :w] for m, (h, w) in zip(data.masks, data.content, strict=True)]  # the padding left out
    counts = sum(np.bincount(m.ravel(), minlength=256) for m in pictures)
    labelled = counts[: data.num_classes].sum()
    share = {c: float(counts[i] / max(1, labelled)) for i, c in enumerate(data.classes)}
    with_class = {c: int(sum((m == i).any() for m in pictures)) for i, c in enumerate(data.classes)}
    from segtune.data.folder import index_records as folder_records

    paths = _image_paths(layout, spec, folder_records)
    ignore = float(counts[IGNORE_INDEX] / counts.sum())
    return Fingerprint(
        len(data.names),
        {s: len(data.splits[s]) for s in SPLITS},
        _sizes(paths),
        data.classes,
        share,
        with_class,
        ignore,
    )


def _colour_coded(mask: Path) -> bool:
    try:
        with Image.open(mask) as im:
            if im.mode not in ("RGB", "RGBA"):
                return False
            arr = np.asarray(im.convert("RGB"))
            return not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]))
    except (OSError, UnidentifiedImageError):
        return False


def _image_paths(layout: Layout, spec: Any, folder_records: Any) -> list[Path]:
    """The images' files, for their sizes (headers only)."""
    ds = spec.dataset
    if layout.kind == "folder":
        return [r.image for r in folder_records(ds)[0]]
    if layout.kind == "oxford_pets":
        from segtune.data.oxford_pets import index_records
    elif layout.kind == "voc":
        from segtune.data.voc import index_records
    else:
        from segtune.data.camvid import index_records
    return [r.image for r in index_records(ds)[0]]  # camvid's returns its layout third
