"""SegData and the decoding every file-based builder shares."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from segtune.data.labels import IGNORE_INDEX, LossyLevels, OffLevel, ValueCensus
from segtune.data.resize import ResizePolicy
from segtune.errors import DataError

SPLITS = ("train", "val", "test")
PICTURE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"}


@dataclass
class SegData:
    """Decoded, resized arrays shared read-only by all trials (through Ray's object store).

    Every picture sits at the top left of one canvas (``resize.canvas``), its aspect ratio kept (resize
    ``pad``); ``content`` says which part is the picture, ``original`` its size on disk. The masks of the
    splits decoded at full resolution (a retrain's test split) are in ``full_masks`` too.
    """

    images: np.ndarray  # uint8 (N, H, W, 3)
    masks: np.ndarray  # uint8 (N, H, W): class index, or IGNORE_INDEX (the padding included)
    splits: dict[str, np.ndarray]  # split name -> indices into images/masks
    classes: list[str]
    names: list[str] = field(default_factory=list)  # one id per image, for messages and reports
    skipped: list[str] = field(default_factory=list)  # bad files left out (dataset.skip_bad_files)
    raw_values: list[Any] = field(default_factory=list)  # the mask values on disk, before they became classes
    labels_note: str = ""  # how those values became classes, in words (`segtune check` prints it)
    fingerprint: str = ""  # what the data is, wherever it is mounted (files_fingerprint)
    resize: ResizePolicy | None = None
    content: np.ndarray | None = None  # int32 (N, 2): (h, w) of each picture inside the canvas
    original: np.ndarray | None = None  # int32 (N, 2): (h, w) of each picture on disk
    full_masks: dict[int, np.ndarray] = field(default_factory=dict)  # index -> class mask at the original size
    resized_masks: list[int] = field(default_factory=list)  # images whose mask was resized to them (mask_resize)
    off_level: dict[str, OffLevel] = field(default_factory=dict)  # split -> lossy masks' off-level pixels

    def __post_init__(self) -> None:
        n, h, w = self.masks.shape
        if self.resize is None:
            self.resize = ResizePolicy(h, w, "squash")
        if self.content is None:
            self.content = np.tile(np.array([h, w], np.int32), (n, 1))
        if self.original is None:
            self.original = self.content.copy()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def canvas(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])


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


def grey_palette(im: Image.Image) -> bool:
    """A palette picture whose every entry is a grey (a GIF or PNG saved from greyscale): its pixels mean the
    grey values, not the palette indices (which an optimising writer may have reordered)."""
    palette = im.getpalette() or []
    entries = [palette[i : i + 3] for i in range(0, len(palette) - 2, 3)]
    return bool(entries) and all(r == g == b for r, g, b in entries)


SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass(frozen=True)
class MaskReading:
    """How a dataset's mask files are read: colour codes kept as RGB (``rgb``); near-grey RGB read as grey and
    left to be snapped (``lossy``: JPEG masks); a mask at another size resized to its picture (``resize``)."""

    rgb: bool = False
    lossy: bool = False
    resize: bool = False


NEAR_GREY = 16  # lossy masks: an RGB mask whose channels differ by at most this is a grey mask with JPEG noise


def _mask_values(im: Image.Image, path: Path, reading: MaskReading = MaskReading()) -> Image.Image:
    """A mask picture as its raw values: one channel, or RGB for colour-coded masks (``reading.rgb``).

    RGB masks whose three channels are equal (within NEAR_GREY for lossy masks) are read as one channel;
    1-bit pictures read as 0/255, exactly as the same picture saved in 8 bits would; a palette picture means
    its indices, unless its palette is all greys (then the greys); 16-bit masks are read when their values fit
    0..255."""
    if reading.rgb:
        return im.convert("RGB")
    if im.mode in ("RGB", "RGBA"):
        arr = np.asarray(im.convert("RGB"))
        spread = int((arr.max(axis=2).astype(np.int16) - arr.min(axis=2)).max()) if arr.size else 0
        if spread > (NEAR_GREY if reading.lossy else 0):
            raise BadFile("colour mask", path, "its RGB channels differ; expected class values")
        single = Image.fromarray(arr[..., 0]) if not spread else im.convert("L")
    elif im.mode == "P":
        single = im.convert("L") if grey_palette(im) else im
    elif im.mode == "L":
        single = im
    elif im.mode in SIXTEEN_BIT:
        arr = np.asarray(im)
        if arr.size and int(arr.max()) > 255:
            detail = f"a {im.mode} mask holding values up to {int(arr.max())}; expected 0..255"
            raise BadFile("mask values above 255", path, detail)
        single = Image.fromarray(arr.astype(np.uint8))
    else:  # "1", "F", ...
        single = im.convert("L")
    return single


def read_mask(path: Path, reading: MaskReading = MaskReading()) -> np.ndarray:
    """A mask file's raw values at its own size: what `check`, `run` and `init` read (labels.py decides them)."""
    with _open(path, "mask") as mk:
        return np.asarray(_mask_values(mk, path, reading), dtype=np.uint8)


ASPECT_TOLERANCE = 0.01  # dataset.mask_resize: a mask's aspect ratio within 1% of its picture's


def same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Two (width, height) sizes of the same shape within ASPECT_TOLERANCE: one picture stored at two scales."""
    return abs((a[0] / a[1]) / (b[0] / b[1]) - 1) <= ASPECT_TOLERANCE


def read_image(path: Path, policy: ResizePolicy) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """RGB uint8 on the policy's canvas (palette and alpha pictures are converted to RGB), the content's
    (h, w) and the original (h, w)."""
    with _open(path, "image") as im:
        canvas, content = policy.image(im)
        return canvas, content, (im.height, im.width)


Remap = Callable[[np.ndarray, Path], np.ndarray]


@dataclass
class Pair:
    """One decoded pair: the image on the canvas, the mask's raw values at the content's size (and at the
    original size when asked for), where the content sits, the original size, and whether the mask was resized
    to its picture (``dataset.mask_resize``)."""

    image: np.ndarray
    raw: np.ndarray
    content: tuple[int, int]
    original: tuple[int, int]
    raw_full: np.ndarray | None = None
    resized: bool = False


def read_pair(rec: Record, policy: ResizePolicy, reading: MaskReading = MaskReading(), full: bool = False) -> Pair:
    """One image and its mask's raw values, resized by ``policy`` (the mask nearest-neighbour, so labels stay
    labels). A :class:`BadFile` names what is wrong and where. ``reading.rgb``: the mask codes classes as
    colours (CamVid's *_L.png), kept as (H, W, 3). ``reading.resize`` (``dataset.mask_resize: nearest``): a mask
    stored at another size than its picture, with the same aspect ratio, is resized to it nearest-neighbour."""
    with _open(rec.image, "image") as im, _open(rec.mask, "mask") as mk:
        values = _mask_values(mk, rec.mask, reading)
        resized = im.size != mk.size
        if resized:
            same = same_aspect(im.size, mk.size)
            if not (reading.resize and same):
                hint = (
                    "another aspect ratio: no resize can make it fit"
                    if not same
                    else "same aspect ratio: dataset.mask_resize: nearest resizes it"
                )
                raise BadFile("mask size differs from its image", rec.mask, f"mask {mk.size}, image {im.size}; {hint}")
            values = values.resize(im.size, Image.NEAREST)
        image, content = policy.image(im)
        raw_full = np.asarray(values, dtype=np.uint8) if full else None
        return Pair(image, policy.mask(values), content, (im.height, im.width), raw_full, resized)


def mask_census(records: list[Record], reading: MaskReading = MaskReading()) -> ValueCensus:
    """The raw values of every readable mask, at their own size (threads: PIL releases the GIL).

    Unreadable masks are left to the decoder, which names them with the rest of the bad files."""

    def one(rec: Record) -> ValueCensus | None:
        try:
            census = ValueCensus()
            census.add(read_mask(rec.mask, reading))
            return census
        except BadFile:
            return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return ValueCensus().merge(c for c in pool.map(one, records) if c is not None)


@dataclass(frozen=True)
class Decode:
    """Which splits a builder decodes (a search: train and val), and which keep their masks at full resolution."""

    only: tuple[str, ...] = SPLITS
    full_res: tuple[str, ...] = ()


def decode_records(
    records: list[Record],
    spec: Any,
    classes: list[str],
    remap: Remap,
    problems: list[BadFile] | None = None,
    decode: Decode = Decode(),
    rgb_masks: bool = False,
    labels_note: str = "",
    lossy: LossyLevels | None = None,
) -> SegData:
    """Decode and resize every pair once (threads: PIL releases the GIL while decoding).

    Every pair is read before anything is decided, so one run names all bad files, not the first.
    ``problems`` holds what the builder found while pairing files (an image without a mask, say).
    With ``skip_bad`` those pairs are left out and listed in ``SegData.skipped``; otherwise
    :class:`BadData` names them all. ``spec`` (the dataset section) gives the resize policy and whether bad
    files are skipped (``skip_bad_files``); ``decode`` which splits are decoded and which keep their masks at
    the original size too (``SegData.full_masks``: test metrics at full resolution). With ``lossy`` (lossy masks
    snapped to their levels) the share of off-level pixels of each split is counted (``SegData.off_level``).
    """
    policy, skip_bad = spec.policy(), spec.skip_bad_files
    problems = list(problems or [])
    if not records:
        raise DataError("the dataset has no images" + (f" ({len(problems)} bad files)" if problems else ""))
    fingerprint = files_fingerprint(records)  # of the whole dataset, whichever splits are decoded
    records = [r for r in records if r.split in decode.only]
    images = np.empty((len(records), *policy.canvas, 3), dtype=np.uint8)
    masks = np.empty((len(records), *policy.canvas), dtype=np.uint8)
    content = np.empty((len(records), 2), dtype=np.int32)
    original = np.empty((len(records), 2), dtype=np.int32)
    full_masks: dict[int, np.ndarray] = {}
    bad: dict[int, BadFile] = {}
    censuses: list[ValueCensus] = [ValueCensus() for _ in records]
    resized = np.zeros(len(records), dtype=bool)
    reading = MaskReading(rgb_masks, lossy is not None, spec.mask_resize == "nearest")

    def one(i: int) -> None:
        try:
            pair = read_pair(records[i], policy, reading, full=records[i].split in decode.full_res)
            censuses[i].add(pair.raw)
            resized[i] = pair.resized
            images[i], masks[i] = pair.image, policy.pad(remap(pair.raw, records[i].mask))
            content[i], original[i] = pair.content, pair.original
            if pair.raw_full is not None:
                full_masks[i] = remap(pair.raw_full, records[i].mask)
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
        content, original, resized = content[keep], original[keep], resized[keep]
        censuses = [censuses[i] for i in keep]
        full_masks = {new: full_masks[old] for new, old in enumerate(keep) if old in full_masks}
    splits = {s: np.array([j for j, r in enumerate(records) if r.split == s], dtype=np.int64) for s in SPLITS}
    skipped = [str(p) for p in problems]
    census = ValueCensus().merge(censuses)
    off_level = {}
    if lossy is not None:
        for split, members in splits.items():
            if len(members):
                off_level[split] = lossy.off_level(ValueCensus().merge(censuses[j] for j in members))
    data = SegData(
        images,
        masks,
        splits,
        list(classes),
        [r.name for r in records],
        skipped=skipped,
        raw_values=census.values,
        labels_note=labels_note,
        fingerprint=fingerprint,
        resize=policy,
        content=content,
        original=original,
        full_masks=full_masks,
        resized_masks=np.flatnonzero(resized).tolist(),
        off_level=off_level,
    )
    for split in ("train", "val"):
        if len(splits[split]) == 0:
            skipped = f" after skipping {len(problems)} bad files" if problems else ""
            raise DataError(f"dataset: the {split} split is empty{skipped}; every study needs train and val images")
    return data


def files_fingerprint(records: list[Record]) -> str:
    """What a dataset is, independent of where it is mounted: each pair's name, split and file sizes.

    The same files under another root (a container's /data) give the same fingerprint; an image
    added, removed, moved to another split or re-encoded gives another."""
    digest = hashlib.sha256()
    for r in sorted(records, key=lambda r: (r.split, r.name)):
        digest.update(f"{r.split}\t{r.name}\t{r.image.stat().st_size}\t{r.mask.stat().st_size}\n".encode())
    return f"{len(records)} pairs, sha256 {digest.hexdigest()[:16]}"


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


def rgb_remap(colours: dict[tuple[int, int, int], int], where: str) -> Remap:
    """Colour-coded masks (H, W, 3) -> class indices; a colour ``where`` does not list is an error."""
    codes = np.array(sorted((r << 16) | (g << 8) | b for r, g, b in colours), dtype=np.int64)
    classes = np.array([colours[((c >> 16) & 255, (c >> 8) & 255, c & 255)] for c in codes], dtype=np.uint8)

    def remap(mask: np.ndarray, path: Path) -> np.ndarray:
        code = (mask[..., 0].astype(np.int64) << 16) | (mask[..., 1].astype(np.int64) << 8) | mask[..., 2]
        pos = np.clip(np.searchsorted(codes, code), 0, len(codes) - 1)
        unknown = codes[pos] != code
        if unknown.any():
            bad = sorted({tuple(int(v) for v in mask[y, x]) for y, x in zip(*np.nonzero(unknown), strict=True)})[:5]
            raise BadFile("mask values outside the classes", path, f"colours {bad} are not in {where}")
        return classes[pos]

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
    assert data.content is not None
    pixels = np.zeros(256, dtype=np.int64)  # over each picture's own part of the canvas: padding is not data
    for mask, (h, w) in zip(data.masks, data.content, strict=True):
        pixels += np.bincount(mask[:h, :w].ravel(), minlength=256)
    labelled = max(1, int(pixels.sum()))
    seen = {}
    for v in np.flatnonzero(pixels).tolist():
        label = "ignore" if v == IGNORE_INDEX else data.classes[v] if v < data.num_classes else f"?{v}"
        seen[label] = round(int(pixels[v]) / labelled, 4)
    padding = round(1 - labelled / max(1, data.masks.size), 4)
    return {
        "images": len(data.names),
        "splits": counts,
        "classes": data.classes,
        "pixel_share": seen,
        "padding_share": padding,
    }
