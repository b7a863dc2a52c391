"""Any images + masks on disk: two globs under a root, paired by a key taken from the file names.

Pairing: the key (``key``'s group, else the stem) of an image equals its mask's, in the same split folder; a key
left unpaired pairs a key that differs from it only in case, when that one is unique too. A glob without an
extension matches pictures only (README.txt beside the pictures is no image without a mask).
Splits: a seeded random split (the default), split subfolders (``split: folders`` with ``{split}`` in the
globs: train, val and test folders under their usual names; with no val folder, val is carved from train),
or split list files, as datasets ship them (one file for every split, or one per split).
Masks: single-channel values (``values``, or decided from all masks) or colour codes (``colors``).
"""

from __future__ import annotations

import re
from pathlib import Path

from segtune.data.base import (
    PICTURE_EXTENSIONS,
    SPLITS,
    BadFile,
    Decode,
    Record,
    SegData,
    carve,
    decode_records,
    limit_records,
    mask_census,
    rgb_remap,
    value_remap,
)
from segtune.data.labels import IGNORE_INDEX, LossyLevels, decide_value_map
from segtune.data.splitfiles import match_ids, read_id_list, read_split_file
from segtune.errors import DataError
from segtune.spec import SPLIT_PLACEHOLDER, FolderSpec, ListSplitSpec, SplitFileSpec, resolve_root

VAL_FRACTION, VAL_SEED = 0.2, 42  # split folders without a val folder: val carved from train, as split files do


def file_key(pattern: re.Pattern[str] | None, path: Path) -> str | None:
    """The pairing key of a file: the key regex's group (or whole match), else the stem; None when the regex
    does not match the name."""
    if pattern is None:
        return path.stem
    m = pattern.search(path.name)
    if m is None:
        return None
    return m.group(1) if m.groups() else m.group(0)


Pairs = dict[str, tuple[Path, Path, str | None]]  # key -> (image, mask, split folder)


def pair_files(
    images: list[tuple[Path, str | None]], masks: list[tuple[Path, str | None]], pattern: re.Pattern[str] | None
) -> tuple[Pairs, list[BadFile]]:
    """Images and masks paired by key (prefixed by the split folder, where there is one): the same key, then,
    among the keys left, the same key up to case when that is unique on both sides. The files that found no
    partner are bad files (unpaired). Two files of one side with one key are an error naming both."""
    found: dict[str, dict[str, Path]] = {}
    split_of: dict[str, str | None] = {}
    for field, files in (("images", images), ("masks", masks)):
        keyed: dict[str, Path] = {}
        for path, split in files:
            key = file_key(pattern, path)
            if key is None:
                continue
            key = f"{split}/{key}" if split else key
            if key in keyed:
                raise DataError(f"dataset.key: {keyed[key].name} and {path.name} both have the key {key!r}")
            keyed[key] = path
            split_of[key] = split
        found[field] = keyed
    images_by, masks_by = found["images"], found["masks"]
    pairs = {k: (images_by[k], masks_by[k], split_of[k]) for k in sorted(set(images_by) & set(masks_by))}
    lone_images = [k for k in images_by if k not in masks_by]
    lone_masks = [k for k in masks_by if k not in images_by]
    if lone_images and lone_masks:  # IMG_001.jpg with img_001.png: the same name up to case
        folded_masks: dict[str, list[str]] = {}
        for k in lone_masks:
            folded_masks.setdefault(k.lower(), []).append(k)
        folded_images: dict[str, list[str]] = {}
        for k in lone_images:
            folded_images.setdefault(k.lower(), []).append(k)
        for low, ks in folded_images.items():
            partners = folded_masks.get(low, [])
            if len(ks) == 1 and len(partners) == 1:
                pairs[ks[0]] = (images_by[ks[0]], masks_by[partners[0]], split_of[ks[0]])
                lone_images.remove(ks[0])
                lone_masks.remove(partners[0])
        pairs = dict(sorted(pairs.items()))
    problems = [
        BadFile("image without a mask", images_by[k], "check dataset.key", unpaired=True) for k in sorted(lone_images)
    ]
    problems += [
        BadFile("mask without an image", masks_by[k], "check dataset.key", unpaired=True) for k in sorted(lone_masks)
    ]
    return pairs, problems


# what split folders are called, as datasets ship them (ISIC, Kvasir, Cityscapes-style trees)
SPLIT_FOLDERS = {
    "train": ("train", "training", "trn"),
    "val": ("val", "valid", "validation", "dev"),
    "test": ("test", "testing", "tst"),
}


def _matches(glob: str) -> bool:
    """Whether every file a glob matches is meant (its name part names an extension), or only its pictures."""
    name = glob.rsplit("/", 1)[-1]
    return "." in name.rsplit("*", 1)[-1]


def glob_files(root: Path, glob: str) -> list[tuple[Path, str | None]]:
    """The files a glob matches, each with its split when the glob holds ``{split}``; a glob whose name part
    names no extension (``images/*``) matches the pictures among them."""
    named = _matches(glob)

    def keep(p: Path) -> bool:
        return p.is_file() and (named or p.suffix.lower() in PICTURE_EXTENSIONS)

    if SPLIT_PLACEHOLDER not in glob:
        return [(p, None) for p in sorted(root.glob(glob)) if keep(p)]
    out = []
    for split, names in SPLIT_FOLDERS.items():
        for name in names:
            out += [(p, split) for p in sorted(root.glob(glob.replace(SPLIT_PLACEHOLDER, name))) if keep(p)]
    return out


def _pair(spec: FolderSpec, root: Path) -> tuple[Pairs, list[BadFile]]:
    """Images and masks paired by key (prefixed by the split folder, where there is one)."""
    masks = glob_files(root, spec.masks)
    mask_files = {p for p, _ in masks}
    # masks beside their images (x.png, x_mask.png): a mask is never an image
    images = [(p, s) for p, s in glob_files(root, spec.images) if p not in mask_files]
    for field, files, glob in (("images", images, spec.images), ("masks", masks, spec.masks)):
        if not files:
            raise DataError(f"dataset.{field}: no files match {glob!r} under {root}")
    return pair_files(images, masks, re.compile(spec.key) if spec.key else None)


def _assign(spec: FolderSpec, root: Path, pairs: Pairs) -> tuple[dict[str, str], list[BadFile]]:
    """Each pair's split: from its folder, from the list files, from one split file, or a seeded random draw;
    and the ids a split file lists that match no pair (bad files, named)."""
    if spec.split == "folders":
        assignment = {k: split or "train" for k, (_, _, split) in pairs.items()}
        if "val" not in assignment.values():  # train (and test) folders only: val carved from train
            train = [k for k, s in assignment.items() if s == "train"]
            assignment.update(carve(train, {"val": VAL_FRACTION}, VAL_SEED))
        return assignment, []
    if isinstance(spec.split, ListSplitSpec):
        return _from_lists(spec, spec.split, root, pairs)
    if isinstance(spec.split, SplitFileSpec):
        return _from_split_file(spec, spec.split, root, pairs)
    return carve(list(pairs), {"val": spec.split.val, "test": spec.split.test}, spec.split.seed), []


def _from_split_file(
    spec: FolderSpec, split: SplitFileSpec, root: Path, pairs: Pairs
) -> tuple[dict[str, str], list[BadFile]]:
    path = root / split.file
    if not path.is_file():
        raise DataError(f"dataset.split.file: {path} does not exist")
    listed = read_split_file(path)
    if not listed:
        raise DataError(f"dataset.split.file: {path} lists no train / val / test ids")
    return _listed(spec, listed, path.name, path, split.wins, split.val_fraction, split.seed, pairs)


def _from_lists(
    spec: FolderSpec, lists: ListSplitSpec, root: Path, pairs: Pairs
) -> tuple[dict[str, str], list[BadFile]]:
    """One list file per split (train, val and test, or train and test)."""
    listed: dict[str, list[str]] = {}
    for split in SPLITS:
        name = getattr(lists, split)
        if name is None:
            continue
        path = root / name
        if not path.is_file():
            raise DataError(f"dataset.split.{split}: {path} does not exist")
        listed[split] = read_id_list(path)
    names = ", ".join(Path(getattr(lists, s)).name for s in SPLITS if getattr(lists, s))
    return _listed(spec, listed, names, root / lists.train, lists.wins, VAL_FRACTION, VAL_SEED, pairs)


def _listed(
    spec: FolderSpec,
    listed: dict[str, list[str]],
    where: str,
    path: Path,
    wins: str | None,
    val_fraction: float,
    seed: int,
    pairs: Pairs,
) -> tuple[dict[str, str], list[BadFile]]:
    """Each pair's split from the ids listed per split; the listed ids that match no pair are bad files."""
    pattern = re.compile(spec.key) if spec.key else None
    found = match_ids(listed, pairs, lambda name: file_key(pattern, Path(name)))
    if found.twice and wins is None:
        key, where_twice = next(iter(found.twice.items()))
        both = " and ".join(sorted(set(where_twice), key=SPLITS.index))
        raise DataError(
            f"dataset.split: {where} lists {len(found.twice)} id(s) in two splits, e.g. {key!r} in {both}; "
            "set dataset.split.wins to the split they go to"
        )
    assignment = {k: (wins if k in found.twice and wins else s) for k, s in found.splits.items()}
    unlisted = sorted(set(pairs) - set(assignment))
    if unlisted:
        raise DataError(f"dataset.split: {len(unlisted)} pairs are in no split of {where}, e.g. {unlisted[0]!r}")
    if "val" not in assignment.values():  # train and test only: val carved from train, as the file leaves it open
        train = [k for k, s in assignment.items() if s == "train"]
        assignment.update(carve(train, {"val": val_fraction}, seed))
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
