"""Any images + masks on disk: two globs under a root, paired by a key taken from the file names.

Splits: a seeded random split (the default), split subfolders (``split: folders`` with ``{split}`` in the
globs: train, val and test folders under their usual names), or split list files, as datasets ship them.
Masks: single-channel values (``values``, or decided from all masks) or colour codes (``colors``).
"""

from __future__ import annotations

import re
from pathlib import Path

from segtune.data.base import (
    SPLITS,
    BadFile,
    Decode,
    Record,
    SegData,
    carve,
    decode_records,
    limit_records,
    mask_census,
    read_split_list,
    rgb_remap,
    value_remap,
)
from segtune.data.labels import IGNORE_INDEX, LossyLevels, decide_value_map
from segtune.data.splitfiles import match_ids, read_split_file
from segtune.errors import DataError
from segtune.spec import SPLIT_PLACEHOLDER, FolderSpec, ListSplitSpec, SplitFileSpec, resolve_root


def _key(pattern: re.Pattern[str] | None, path: Path) -> str | None:
    if pattern is None:
        return path.stem
    m = pattern.search(path.name)
    if m is None:
        return None
    return m.group(1) if m.groups() else m.group(0)


# what split folders are called, as datasets ship them (ISIC, Kvasir, Cityscapes-style trees)
SPLIT_FOLDERS = {
    "train": ("train", "training", "trn"),
    "val": ("val", "valid", "validation", "dev"),
    "test": ("test", "testing", "tst"),
}


def _files(root: Path, glob: str) -> list[tuple[Path, str | None]]:
    """The files a glob matches, each with its split when the glob holds ``{split}``."""
    if SPLIT_PLACEHOLDER not in glob:
        return [(p, None) for p in sorted(root.glob(glob)) if p.is_file()]
    out = []
    for split, names in SPLIT_FOLDERS.items():
        for name in names:
            out += [(p, split) for p in sorted(root.glob(glob.replace(SPLIT_PLACEHOLDER, name))) if p.is_file()]
    return out


def _pair(spec: FolderSpec, root: Path) -> tuple[dict[str, tuple[Path, Path, str | None]], list[BadFile]]:
    """Images and masks paired by key (prefixed by the split folder, where there is one)."""
    pattern = re.compile(spec.key) if spec.key else None
    found, split_of = {}, {}
    mask_files = {p for p, _ in _files(root, spec.masks)}
    for field, glob in (("images", spec.images), ("masks", spec.masks)):
        files = _files(root, glob)
        if field == "images":  # masks beside their images (x.png, x_mask.png): a mask is never an image
            files = [(p, s) for p, s in files if p not in mask_files]
        if not files:
            raise DataError(f"dataset.{field}: no files match {glob!r} under {root}")
        keyed: dict[str, Path] = {}
        for path, split in files:
            key = _key(pattern, path)
            if key is None:
                continue
            key = f"{split}/{key}" if split else key
            if key in keyed:
                raise DataError(f"dataset.key: {keyed[key].name} and {path.name} both have the key {key!r}")
            keyed[key] = path
            split_of[key] = split
        found[field] = keyed
    images, masks = found["images"], found["masks"]
    problems = [
        BadFile("image without a mask", images[k], "check dataset.key", unpaired=True)
        for k in sorted(set(images) - set(masks))
    ]
    problems += [
        BadFile("mask without an image", masks[k], "check dataset.key", unpaired=True)
        for k in sorted(set(masks) - set(images))
    ]
    return {k: (images[k], masks[k], split_of[k]) for k in sorted(set(images) & set(masks))}, problems


def _assign(
    spec: FolderSpec, root: Path, pairs: dict[str, tuple[Path, Path, str | None]]
) -> tuple[dict[str, str], list[BadFile]]:
    """Each pair's split: from its folder, from the list files, from one split file, or a seeded random draw;
    and the ids a split file lists that match no pair (bad files, named)."""
    if spec.split == "folders":
        return {k: split or "train" for k, (_, _, split) in pairs.items()}, []
    if isinstance(spec.split, ListSplitSpec):
        out: dict[str, str] = {}
        for split in SPLITS:
            listed = getattr(spec.split, split)
            for name in read_split_list(root / listed) if listed else []:
                out[name] = split
        unlisted = sorted(set(pairs) - set(out))
        if unlisted:
            raise DataError(f"dataset.split: {len(unlisted)} pairs are in no split list, e.g. {unlisted[0]!r}")
        return {k: out[k] for k in pairs}, []
    if isinstance(spec.split, SplitFileSpec):
        return _from_split_file(spec, spec.split, root, pairs)
    return carve(list(pairs), {"val": spec.split.val, "test": spec.split.test}, spec.split.seed), []


def _from_split_file(
    spec: FolderSpec, split: SplitFileSpec, root: Path, pairs: dict[str, tuple[Path, Path, str | None]]
) -> tuple[dict[str, str], list[BadFile]]:
    path = root / split.file
    if not path.is_file():
        raise DataError(f"dataset.split.file: {path} does not exist")
    listed = read_split_file(path)
    if not listed:
        raise DataError(f"dataset.split.file: {path} lists no train / val / test ids")
    pattern = re.compile(spec.key) if spec.key else None
    found = match_ids(listed, pairs, lambda name: _key(pattern, Path(name)))
    if found.twice and split.wins is None:
        key, where = next(iter(found.twice.items()))
        raise DataError(
            f"dataset.split: {path.name} lists {len(found.twice)} id(s) in two splits, e.g. {key!r} in "
            f"{' and '.join(sorted(set(where), key=SPLITS.index))}; set dataset.split.wins to the split they go to"
        )
    assignment = {k: (split.wins if k in found.twice and split.wins else s) for k, s in found.splits.items()}
    unlisted = sorted(set(pairs) - set(assignment))
    if unlisted:
        raise DataError(f"dataset.split: {len(unlisted)} pairs are in no split of {path.name}, e.g. {unlisted[0]!r}")
    if "val" not in assignment.values():  # train and test only: val carved from train, as the file leaves it open
        train = [k for k, s in assignment.items() if s == "train"]
        assignment.update(carve(train, {"val": split.val_fraction}, split.seed))
    problems = [
        BadFile("listed id without a pair", path, f"{listed_id!r} is listed but no image + mask has it", unpaired=True)
        for listed_id in found.absent
    ]
    return assignment, problems


def index_records(spec: FolderSpec) -> tuple[list[Record], list[BadFile]]:
    """Pairs, each in its split, and the files that found no partner."""
    root = resolve_root(spec.root)
    pairs, problems = _pair(spec, root)
    assignment, listed_problems = _assign(spec, root, pairs)
    records = [Record(k, img, mask, assignment[k]) for k, (img, mask, _) in pairs.items()]
    return limit_records(records, spec.limit), problems + listed_problems


def class_mapping(spec: FolderSpec, records: list[Record]) -> tuple[dict[int, int], str]:
    """Raw mask value -> class index (IGNORE_INDEX for the ignore value), and how it was decided.

    ``values`` when the spec lists them; otherwise decided from the values of every mask at once
    (labels.decide_value_map): 0/255 masks of two classes make 255 the foreground."""
    if spec.colors:
        return {}, "dataset.colors: " + ", ".join(f"({c}) -> {_name(spec, i)}" for c, i in spec.colors.items())
    if spec.values:
        mapping = dict(spec.values)
        note = "dataset.values: " + ", ".join(f"{raw} -> {_name(spec, cls)}" for raw, cls in sorted(mapping.items()))
        if spec.ignore_index is not None:
            mapping = {raw: (IGNORE_INDEX if cls == spec.ignore_index else cls) for raw, cls in mapping.items()}
            mapping.setdefault(spec.ignore_index, IGNORE_INDEX)
        return mapping, note
    return decide_value_map(mask_census(records), spec.classes, spec.ignore_index)


def _name(spec: FolderSpec, cls: int) -> str:
    return spec.classes[cls] if 0 <= cls < len(spec.classes) else "ignore"


def lossy_levels(spec: FolderSpec) -> LossyLevels | None:
    """``lossy_masks: nearest``: the declared levels (values, or colors) each pixel snaps to, and the tolerance."""
    from segtune.data.labels import tolerance

    if spec.lossy_masks is None:
        return None
    if spec.colors:
        declared: dict = {tuple(int(x) for x in c.split(",")): i for c, i in spec.colors.items()}
    else:
        declared = dict(spec.values or {})
    levels = {raw: (IGNORE_INDEX if cls == spec.ignore_index else cls) for raw, cls in declared.items()}
    return LossyLevels(levels, tolerance(list(levels)))


def build_folder(spec: FolderSpec, decode: Decode = Decode()) -> SegData:
    records, problems = index_records(spec)
    lossy = lossy_levels(spec)
    if lossy is not None:  # JPEG noise around the declared levels: snapped, never an error
        kind = "colours" if spec.colors else "levels"
        note = (
            f"dataset.lossy_masks: nearest: each pixel snapped to the nearest of {len(lossy.classes)} {kind} "
            f"within {lossy.tolerance:g}, farther ones ignored"
        )
        return decode_records(
            records,
            spec,
            spec.classes,
            lambda mask, path: lossy.snap(mask),
            problems,
            decode,
            rgb_masks=bool(spec.colors),
            labels_note=note,
            lossy=lossy,
        )
    mapping, note = class_mapping(spec, records)
    if spec.colors:  # colour-coded masks: one class per colour, as CamVid's class_dict.csv does
        colours = {
            tuple(int(x) for x in c.split(",")): (IGNORE_INDEX if i == spec.ignore_index else i)
            for c, i in spec.colors.items()
        }
        return decode_records(
            records,
            spec,
            spec.classes,
            rgb_remap(colours, "dataset.colors"),
            problems,
            decode,
            rgb_masks=True,
            labels_note=note,
        )
    remap = value_remap(mapping, f"mask values {sorted(mapping)} ({note})")
    return decode_records(records, spec, spec.classes, remap, problems, decode, labels_note=note)
