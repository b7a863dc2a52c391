"""SegData and the decoding every file-based builder shares."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segtune.data.labels import IGNORE_INDEX
from segtune.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class SegData:
    """Decoded, resized arrays shared read-only by all trials (through Ray's object store)."""

    images: np.ndarray  # uint8 (N, S, S, 3)
    masks: np.ndarray  # uint8 (N, S, S): class index, or IGNORE_INDEX
    splits: dict[str, np.ndarray]  # split name -> indices into images/masks
    classes: list[str]
    names: list[str] = field(default_factory=list)  # one id per image, for messages and reports
    skipped: list[str] = field(default_factory=list)  # bad files left out (dataset.skip_bad_files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])


@dataclass
class Record:
    """One image/mask pair on disk, before decoding."""

    name: str
    image: Path
    mask: Path
    split: str


class BadFile(DataError):
    """One file that cannot be used: what is wrong (``kind``, for counts), the file, and the detail."""

    def __init__(self, kind: str, path: Path, detail: str = "", unpaired: bool = False):
        self.kind, self.path, self.detail, self.unpaired = kind, Path(path), detail, unpaired
        super().__init__(f"{path}: {kind}" + (f" ({detail})" if detail else ""))


class BadData(DataError):
    """Every bad file of a dataset: one summary line, and one detail line per file (the CLI prints both)."""

    MAX_LISTED = 20

    def __init__(self, problems: list[BadFile], total: int):
        self.problems = problems
        kinds = Counter(p.kind for p in problems)
        counts = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        super().__init__(
            f"dataset: {len(problems)} bad files among {total} ({counts}), e.g. {problems[0].path}; "
            "fix or remove them, or set dataset.skip_bad_files: true to leave them out"
        )
        listed = [f"  {p}" for p in problems[: self.MAX_LISTED]]
        if len(problems) > self.MAX_LISTED:
            listed.append(f"  ... and {len(problems) - self.MAX_LISTED} more")
        self.details = listed


def _open(path: Path, what: str) -> Image.Image:
    """Fully decoded: a truncated file fails here, not later inside a trial."""
    try:
        im = Image.open(path)
        im.load()
        return im
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise BadFile(f"unreadable {what}", path, str(e) or type(e).__name__) from None


def _rgb(im: Image.Image, size: int) -> np.ndarray:
    return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR, reducing_gap=2.0), dtype=np.uint8)


def _single(im: Image.Image, path: Path, size: int) -> np.ndarray:
    """RGB masks whose three channels are equal are read as one channel; 1-bit pictures read as 0/255,
    exactly as the same picture saved in 8 bits would. Resized nearest-neighbour so labels stay labels."""
    if im.mode in ("RGB", "RGBA"):
        arr = np.asarray(im.convert("RGB"))
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise BadFile("colour mask", path, "its RGB channels differ; expected class values")
        single = Image.fromarray(arr[..., 0])
    elif im.mode in ("L", "P"):
        single = im
    else:  # "1", "I;16", "I", ...
        single = im.convert("L")
    return np.asarray(single.resize((size, size), Image.NEAREST), dtype=np.uint8)


def read_image(path: Path, size: int) -> np.ndarray:
    """RGB uint8 (size, size, 3); palette and alpha pictures are converted to RGB."""
    with _open(path, "image") as im:
        return _rgb(im, size)


Remap = Callable[[np.ndarray, Path], np.ndarray]


def read_pair(rec: Record, size: int, remap: Remap, rgb_masks: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One image and its mask as arrays; a :class:`BadFile` names what is wrong and where.

    ``rgb_masks``: the mask codes classes as colours (CamVid's *_L.png); ``remap`` gets (H, W, 3).
    """
    with _open(rec.image, "image") as im, _open(rec.mask, "mask") as mk:
        if im.size != mk.size:
            raise BadFile("mask size differs from its image", rec.mask, f"mask {mk.size}, image {im.size}")
        if rgb_masks:
            mask = np.asarray(mk.convert("RGB").resize((size, size), Image.NEAREST), dtype=np.uint8)
        else:
            mask = _single(mk, rec.mask, size)
        return _rgb(im, size), remap(mask, rec.mask)


def decode_records(
    records: list[Record],
    size: int,
    classes: list[str],
    remap: Remap,
    skip_bad: bool = False,
    problems: list[BadFile] | None = None,
    rgb_masks: bool = False,
) -> SegData:
    """Decode and resize every pair once (threads: PIL releases the GIL while decoding).

    Every pair is read before anything is decided, so one run names all bad files, not the first.
    ``problems`` holds what the builder found while pairing files (an image without a mask, say).
    With ``skip_bad`` those pairs are left out and listed in ``SegData.skipped``; otherwise
    :class:`BadData` names them all.
    """
    problems = list(problems or [])
    if not records:
        raise DataError("the dataset has no images" + (f" ({len(problems)} bad files)" if problems else ""))
    images = np.empty((len(records), size, size, 3), dtype=np.uint8)
    masks = np.empty((len(records), size, size), dtype=np.uint8)
    bad: dict[int, BadFile] = {}

    def one(i: int) -> None:
        try:
            images[i], masks[i] = read_pair(records[i], size, remap, rgb_masks)
        except BadFile as e:
            bad[i] = e

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(len(records))))
    problems += [bad[i] for i in sorted(bad)]
    if problems and not skip_bad:
        raise BadData(problems, len(records) + sum(p.unpaired for p in problems))
    if bad:  # only then copy: the arrays can be gigabytes
        keep = [i for i in range(len(records)) if i not in bad]
        images, masks, records = images[keep], masks[keep], [records[i] for i in keep]
    splits = {s: np.array([j for j, r in enumerate(records) if r.split == s], dtype=np.int64) for s in SPLITS}
    skipped = [str(p) for p in problems]
    data = SegData(images, masks, splits, list(classes), [r.name for r in records], skipped=skipped)
    for split in ("train", "val"):
        if len(splits[split]) == 0:
            skipped = f" after skipping {len(problems)} bad files" if problems else ""
            raise DataError(f"dataset: the {split} split is empty{skipped}; every study needs train and val images")
    return data


def value_remap(mapping: dict[int, int], what: str) -> Remap:
    """Raw mask values -> class indices through a lookup table; a value it does not list is an error."""
    table = np.full(256, -1, dtype=np.int16)
    for raw, cls in mapping.items():
        table[raw] = cls

    def remap(mask: np.ndarray, path: Path) -> np.ndarray:
        out = table[mask]
        if (out < 0).any():
            bad = sorted(int(v) for v in np.unique(mask[out < 0]))
            raise BadFile("mask values outside the classes", path, f"values {bad} are not among the {what}")
        return out.astype(np.uint8)

    return remap


def carve(names: list[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Assign each name to a split with a seeded shuffle; the rest goes to train."""
    order = np.random.default_rng(seed).permutation(len(names))
    out: dict[str, str] = {}
    start = 0
    for split, frac in fractions.items():
        n = round(frac * len(names))
        if frac > 0 and len(names) >= 3:
            n = max(n, 1)
        for i in order[start : start + n]:
            out[names[i]] = split
        start += n
    for i in order[start:]:
        out[names[i]] = "train"
    return out


def read_split_list(path: Path) -> list[str]:
    """Image names from a split list (one per line; the first field, as Oxford Pets adds class ids)."""
    if not path.is_file():
        raise DataError(f"{path}: split list missing")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def listed_records(
    names: list[str], assignment: dict[str, str], paths: Callable[[str], tuple[Path, Path]]
) -> tuple[list[Record], list[BadFile]]:
    """Records for the names of official split lists; a listed image or mask not on disk is a bad file."""
    records, missing = [], []
    for name in names:
        image, mask = paths(name)
        absent = [p for p in (image, mask) if not p.is_file()]
        if absent:
            missing.append(BadFile("listed file missing", absent[0], f"{name} is in the split lists", unpaired=True))
            continue
        records.append(Record(name, image, mask, assignment[name]))
    return records, missing


def limit_records(records: list[Record], limit: int | None) -> list[Record]:
    if limit is None:
        return records
    kept: list[Record] = []
    for split in SPLITS:
        kept += [r for r in records if r.split == split][:limit]
    return kept


def index_summary(data: SegData) -> dict[str, object]:
    """Counts per split and the label values seen: what `segtune check` prints."""
    counts = {s: int(len(idx)) for s, idx in data.splits.items()}
    values, pixels = np.unique(data.masks, return_counts=True)
    seen = {}
    for v, n in zip(values.tolist(), pixels.tolist(), strict=True):
        label = "ignore" if v == IGNORE_INDEX else data.classes[v] if v < data.num_classes else f"?{v}"
        seen[label] = round(n / data.masks.size, 4)
    return {"images": len(data.names), "splits": counts, "classes": data.classes, "pixel_share": seen}
