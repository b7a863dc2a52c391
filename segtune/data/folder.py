"""Any images + masks on disk: two globs under a root, paired by a key taken from the file names."""

from __future__ import annotations

import re
from pathlib import Path

from segtune.data.base import BadFile, Record, SegData, carve, decode_records, limit_records, value_remap
from segtune.data.labels import IGNORE_INDEX
from segtune.errors import DataError
from segtune.spec import FolderSpec, resolve_root


def _key(pattern: re.Pattern[str] | None, path: Path) -> str | None:
    if pattern is None:
        return path.stem
    m = pattern.search(path.name)
    if m is None:
        return None
    return m.group(1) if m.groups() else m.group(0)


def _pair(spec: FolderSpec, root: Path) -> tuple[dict[str, tuple[Path, Path]], list[BadFile]]:
    pattern = re.compile(spec.key) if spec.key else None
    found = {}
    for field, glob in (("images", spec.images), ("masks", spec.masks)):
        files = sorted(p for p in root.glob(glob) if p.is_file())
        if not files:
            raise DataError(f"dataset.{field}: no files match {glob!r} under {root}")
        keyed: dict[str, Path] = {}
        for path in files:
            key = _key(pattern, path)
            if key is None:
                continue
            if key in keyed:
                raise DataError(f"dataset.key: {keyed[key].name} and {path.name} both have the key {key!r}")
            keyed[key] = path
        found[field] = keyed
    images, masks = found["images"], found["masks"]
    problems = [BadFile("image without a mask", images[k], "check dataset.key", unpaired=True)
                for k in sorted(set(images) - set(masks))]  # fmt: skip
    problems += [BadFile("mask without an image", masks[k], "check dataset.key", unpaired=True)
                 for k in sorted(set(masks) - set(images))]  # fmt: skip
    return {k: (images[k], masks[k]) for k in sorted(set(images) & set(masks))}, problems


def index_records(spec: FolderSpec) -> tuple[list[Record], list[BadFile]]:
    """Pairs split with the spec's seed, and the files that found no partner."""
    root = resolve_root(spec.root)
    pairs, problems = _pair(spec, root)
    assignment = carve(list(pairs), {"val": spec.split.val, "test": spec.split.test}, spec.split.seed)
    records = [Record(k, img, mask, assignment[k]) for k, (img, mask) in pairs.items()]
    return limit_records(records, spec.limit), problems


def class_mapping(spec: FolderSpec) -> dict[int, int]:
    """Raw mask value -> class index (IGNORE_INDEX for the ignore value)."""
    mapping = dict(spec.values) if spec.values else {i: i for i in range(len(spec.classes))}
    if spec.ignore_index is not None:
        mapping = {raw: (IGNORE_INDEX if cls == spec.ignore_index else cls) for raw, cls in mapping.items()}
        mapping.setdefault(spec.ignore_index, IGNORE_INDEX)
    return mapping


def build_folder(spec: FolderSpec) -> SegData:
    what = f"declared values {sorted(class_mapping(spec))} (classes and ignore_index)"
    records, problems = index_records(spec)
    remap = value_remap(class_mapping(spec), what)
    return decode_records(records, spec.image_size, spec.classes, remap, spec.skip_bad_files, problems)
