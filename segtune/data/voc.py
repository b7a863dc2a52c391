"""Pascal VOC segmentation in torchvision's layout: ROOT/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets}.

21 classes (background + 20); the 255 outline around every object is ignored, as everyone does.
The official ``val`` list is held out as the test split (the test set has no public masks), and
val is carved from the ``train`` list with the spec's seed.
"""

from __future__ import annotations

from pathlib import Path

from segtune.data.base import (
    BadFile,
    Decode,
    Record,
    SegData,
    carve,
    decode_records,
    limit_records,
    listed_records,
    read_split_list,
    value_remap,
)
from segtune.data.labels import IGNORE_INDEX
from segtune.errors import DataError
from segtune.spec import VOC_CLASSES, VocSpec, resolve_root


def locate(spec: VocSpec) -> Path:
    root = resolve_root(spec.root)
    for candidate in (root / "VOCdevkit" / f"VOC{spec.year}", root / f"VOC{spec.year}", root):
        if (candidate / "JPEGImages").is_dir() and (candidate / "SegmentationClass").is_dir():
            return candidate
    raise DataError(
        f"voc: no VOC{spec.year} at {root / 'VOCdevkit' / f'VOC{spec.year}'} (expected JPEGImages/, "
        "SegmentationClass/ and ImageSets/Segmentation/); unpack VOCtrainval_11-May-2012.tar there "
        "or pass --data-root PATH"
    )


def index_records(spec: VocSpec) -> tuple[list[Record], list[BadFile]]:
    base = locate(spec)
    lists = base / "ImageSets" / "Segmentation"
    train, test = read_split_list(lists / "train.txt"), read_split_list(lists / "val.txt")
    assignment = carve(train, {"val": spec.val_fraction}, spec.seed)
    assignment.update({name: "test" for name in test})
    images, masks = base / "JPEGImages", base / "SegmentationClass"
    records, missing = listed_records(train + test, assignment, lambda n: (images / f"{n}.jpg", masks / f"{n}.png"))
    return limit_records(records, spec.limit), missing


def build_voc(spec: VocSpec, decode: Decode = Decode()) -> SegData:
    records, problems = index_records(spec)
    mapping = {i: i for i in range(len(VOC_CLASSES))} | {255: IGNORE_INDEX}
    remap = value_remap(mapping, "VOC classes 0-20 and the 255 border")
    note = "VOC class indices 0-20; the 255 outlines ignored"
    return decode_records(records, spec, VOC_CLASSES, remap, problems, decode, labels_note=note)
