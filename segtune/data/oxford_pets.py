"""Oxford-IIIT Pet in torchvision's layout: ROOT/oxford-iiit-pet/{images,annotations/trimaps}.

Trimap values are 1 = pet, 2 = background, 3 = border. ``target: trimap`` learns all three
classes; ``target: binary`` learns pet vs background and ignores the border, as people do by hand.
The official trainval list is split into train and val with the spec's seed; test.txt is the test split.
"""

from __future__ import annotations

import socket
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
from segtune.spec import OxfordPetsSpec, resolve_root

TARGETS = {
    "trimap": (["background", "pet", "border"], {1: 1, 2: 0, 3: 2}),
    "binary": (["background", "pet"], {1: 1, 2: 0, 3: IGNORE_INDEX}),
}


def find_pets_dir(root: Path) -> Path | None:
    for candidate in (root / "oxford-iiit-pet", root):
        if (candidate / "images").is_dir() and (candidate / "annotations" / "trimaps").is_dir():
            return candidate
    return None


def _download(root: Path) -> None:
    """torchvision's downloader, with a short socket timeout so an offline machine fails fast."""
    from torchvision.datasets import OxfordIIITPet

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        OxfordIIITPet(str(root), split="trainval", target_types="segmentation", download=True)
    finally:
        socket.setdefaulttimeout(previous)


def locate(spec: OxfordPetsSpec) -> Path:
    root = resolve_root(spec.root)
    found = find_pets_dir(root)
    if found is not None:
        return found
    expected = root / "oxford-iiit-pet"
    hint = "put a copy there (images/*.jpg, annotations/trimaps/*.png) or pass --data-root PATH"
    if not spec.download:
        raise DataError(f"oxford_pets: no dataset at {expected} and download is off; {hint}")
    try:
        _download(root)
    except Exception as e:  # noqa: BLE001 - any failure to download means the same thing to the user
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise DataError(f"oxford_pets: no dataset at {expected} and the download failed ({reason}); {hint}") from None
    found = find_pets_dir(root)
    if found is None:
        raise DataError(f"oxford_pets: download finished but {expected} has no images/ and annotations/trimaps/")
    return found


def index_records(spec: OxfordPetsSpec) -> tuple[list[Record], list[BadFile]]:
    base = locate(spec)
    trainval = read_split_list(base / "annotations" / "trainval.txt")
    test = read_split_list(base / "annotations" / "test.txt")
    assignment = carve(trainval, {"val": spec.val_fraction}, spec.seed)
    assignment.update({name: "test" for name in test})
    images, trimaps = base / "images", base / "annotations" / "trimaps"
    names = trainval + test
    records, missing = listed_records(names, assignment, lambda n: (images / f"{n}.jpg", trimaps / f"{n}.png"))
    return limit_records(records, spec.limit), missing


def build_oxford_pets(spec: OxfordPetsSpec, decode: Decode = Decode()) -> SegData:
    classes, mapping = TARGETS[spec.target]
    records, problems = index_records(spec)
    remap = value_remap(mapping, "trimap values 1, 2, 3")
    note = (
        "trimap 1 -> pet, 2 -> background, 3 -> border"
        if spec.target == "trimap"
        else "trimap 1 -> pet, 2 -> background, 3 (border) ignored"
    )
    return decode_records(records, spec, classes, remap, problems, decode, labels_note=note)
