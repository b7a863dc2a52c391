"""CamVid, in either of the two layouts people download.

- SegNet's (11 classes): ``{train,val,test}/*.png`` with ``{train,val,test}annot/*.png`` holding class
  indices 0-10 and 11 for void (ignored).
- The 32-class one: ``{train,val,test}/*.png`` with ``{train,val,test}_labels/*_L.png`` coding classes
  as colours listed in ``class_dict.csv`` (name,r,g,b); ``Void`` is ignored.

``keep`` learns a subset (e.g. Road, Building, Car, Sky, Pedestrian) and maps every other class to
one background class, index 0. Names match case-insensitively.
"""

from __future__ import annotations

from pathlib import Path

from segtune.data.base import (
    BadFile,
    Decode,
    Record,
    SegData,
    decode_records,
    limit_records,
    rgb_remap,
    value_remap,
)
from segtune.data.labels import IGNORE_INDEX
from segtune.errors import DataError
from segtune.spec import CAMVID_11, CamVidSpec, resolve_root

SPLIT_NAMES = ("train", "val", "test")
VOID = "void"


def _layout(root: Path) -> str:
    if all((root / s).is_dir() and (root / f"{s}annot").is_dir() for s in SPLIT_NAMES):
        return "segnet"
    if (root / "class_dict.csv").is_file() and all((root / f"{s}_labels").is_dir() for s in SPLIT_NAMES):
        return "rgb"
    raise DataError(
        f"camvid: {root} holds neither layout: SegNet's (train/ trainannot/ val/ valannot/ test/ testannot/) "
        "nor the 32-class one (train/ train_labels/ ... and class_dict.csv); pass --data-root PATH"
    )


def read_class_dict(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines()[1:], start=2):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        try:
            rows.append((parts[0], (int(parts[1]), int(parts[2]), int(parts[3]))))
        except (IndexError, ValueError):
            raise DataError(f"{path}:{n}: expected name,r,g,b, got {line!r}") from None
    return rows


def _targets(source: list[str], keep: list[str] | None, background: str) -> tuple[list[str], dict[str, int]]:
    """Class names to learn, and source name (lower case) -> class index (or IGNORE_INDEX for void)."""
    lookup = {name.lower(): name for name in source}
    if keep is None:
        learned = [name for name in source if name.lower() != VOID]
        index = {name.lower(): i for i, name in enumerate(learned)}
    else:
        unknown = [k for k in keep if k.lower() not in lookup or k.lower() == VOID]
        if unknown:
            raise DataError(f"dataset.keep: {unknown[0]!r} is not a CamVid class here (classes: {', '.join(source)})")
        learned = [background] + [lookup[k.lower()] for k in keep]
        kept = {k.lower(): i + 1 for i, k in enumerate(keep)}
        index = {name.lower(): kept.get(name.lower(), 0) for name in source}
    index[VOID] = IGNORE_INDEX
    return learned, index


def _pairs(root: Path, image_dir: str, label_dir: str, suffix: str, split: str) -> tuple[list[Record], list[BadFile]]:
    images = {p.stem: p for p in sorted((root / image_dir).glob("*.png"))}
    labels = {p.stem.removesuffix(suffix): p for p in sorted((root / label_dir).glob("*.png"))}
    problems = [
        BadFile("image without a mask", images[k], f"nothing in {label_dir}/", unpaired=True)
        for k in sorted(set(images) - set(labels))
    ]
    problems += [
        BadFile("mask without an image", labels[k], f"nothing in {image_dir}/", unpaired=True)
        for k in sorted(set(labels) - set(images))
    ]
    return [Record(k, images[k], labels[k], split) for k in sorted(set(images) & set(labels))], problems


def index_records(spec: CamVidSpec) -> tuple[list[Record], list[BadFile], str]:
    """The pairs of every split, the files without a partner, and which layout it is."""
    root = resolve_root(spec.root)
    layout = _layout(root)
    records: list[Record] = []
    problems: list[BadFile] = []
    for split in SPLIT_NAMES:
        if layout == "segnet":
            found, bad = _pairs(root, split, f"{split}annot", "", split)
        else:
            found, bad = _pairs(root, split, f"{split}_labels", "_L", split)
        records += found
        problems += bad
    return limit_records(records, spec.limit), problems, layout


def build_camvid(spec: CamVidSpec, decode: Decode = Decode()) -> SegData:
    records, problems, layout = index_records(spec)
    merged = f"; classes not kept -> {spec.background}" if spec.keep else ""
    if layout == "segnet":
        classes, index = _targets(CAMVID_11 + ["Void"], spec.keep, spec.background)
        mapping = {i: index[name.lower()] for i, name in enumerate(CAMVID_11 + ["Void"])}
        remap = value_remap(mapping, "SegNet CamVid labels 0-11")
        note = "SegNet labels 0-10; 11 (void) ignored" + merged
        return decode_records(records, spec, classes, remap, problems, decode, labels_note=note)
    rows = read_class_dict(resolve_root(spec.root) / "class_dict.csv")
    classes, index = _targets([name for name, _ in rows], spec.keep, spec.background)
    remap = rgb_remap({rgb: index[name.lower()] for name, rgb in rows}, "class_dict.csv")
    note = "colours of class_dict.csv; Void ignored" + merged
    return decode_records(records, spec, classes, remap, problems, decode, rgb_masks=True, labels_note=note)
