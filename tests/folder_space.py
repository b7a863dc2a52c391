"""The space of dataset folders people have, drawn at random, each with its truth (issue 39).

A fixture per convention proves that fixture; users' folders are drawn from a space of conventions. A
:class:`Recipe` is one point of that space, drawn through a :class:`Pick` (a seeded numpy generator for the
benchmark, Hypothesis for the tests: the same drawing code, so a failure the benchmark finds is a seed the tests
can replay), and :func:`write_folder` lays it out on disk as small pictures (64 px) and returns its
:class:`Truth`: the pairs, the class of every mask pixel as segtune must read it, and the split sizes a shipped
split file or split folders fix.

The dimensions (README, "Start from your data"):

- names: 1-4 tokens (an id alone; a constant word and an id; breed-like words of 1-3 tokens and an id, mixed
  in one folder as Oxford-IIIT Pet names them; a car id and a view number), lower / upper / title / mixed case,
  ``_ - .`` separators, zero padding, an affix on either side of the images' and the masks' names (listed ones
  and made-up words), masks whose names differ in case from their picture's;
- places: ``images/`` + ``masks/`` (folder names drawn), pictures and masks side by side in one folder, nesting
  per split (``images/train/``, ``train/images/``; train / val / test or train / test) or per class
  (``images/cat/``);
- image formats: JPEG, PNG, TIFF, BMP, a mix of JPEG and PNG; colour or greyscale;
- mask encodings: class indices in PNG, 0/255, 0/1, grey levels spread over 0-255, RGB colour codes, palette
  PNG, 1-bit, 16-bit, GIF, JPEG (grey or colour) at quality 70-98;
- classes: 2-12, one of them perhaps tiny (about 0.1% of the pixels) or drawn as 1-2 px lines;
- masks stored at half or twice their picture's size;
- split files: one file listing every split (YAML, JSON, CSV, text) or one file per split (in any of those four
  formats), anywhere in the folder, the ids written as the pair's key, its file name, its stem, or an integer
  without the zero padding the names carry;
- decoys: a greyscale copy of the pictures, a second annotator's masks, product photos on a white or black
  backdrop, a folder of pictures with no masks, a stray picture and text files, a few pictures without a partner.
"""

from __future__ import annotations

import csv
import io
import json
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import yaml
from PIL import Image

T = TypeVar("T")


class Pick(Protocol):
    """Where the choices come from: a seeded numpy generator or Hypothesis."""

    def one(self, options: Sequence[T]) -> T: ...

    def integer(self, lo: int, hi: int) -> int: ...  # lo..hi, both included

    def chance(self, p: float) -> bool: ...


class RngPick:
    """Choices from a seeded numpy generator: the benchmark's uniform draws, one folder per seed."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def one(self, options: Sequence[T]) -> T:
        return options[int(self.rng.integers(len(options)))]

    def integer(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)


class HypothesisPick:
    """Choices drawn by Hypothesis (``st.data()``): shrinks a failing folder towards the first options."""

    def __init__(self, data: Any):
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def one(self, options: Sequence[T]) -> T:
        return self.data.draw(self.st.sampled_from(list(options)))

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))

    def chance(self, p: float) -> bool:
        return self.data.draw(self.st.integers(0, 99)) >= 100 - round(100 * p)  # shrinks to False


IMAGE_FORMATS = ("jpg", "png", "tif", "bmp", "mixed")
# encoding -> (fewest, most) classes it is drawn with
ENCODINGS = {
    "index": (2, 12),
    "binary-255": (2, 2),
    "binary-01": (2, 2),
    "grey-levels": (2, 12),
    "rgb": (2, 12),
    "palette": (2, 12),
    "1-bit": (2, 2),
    "16-bit": (2, 12),
    "gif": (2, 6),
    "jpeg-grey": (2, 4),
    "jpeg-rgb": (2, 6),
}
LAYOUTS = ("flat", "beside", "split-folders", "class-folders")
SPLIT_FILES = ("none", "one-file", "per-split")
NAME_STYLES = ("id", "word-id", "breed-id", "car-view")
IMAGE_DIRS = ("images", "imgs", "JPEGImages", "photos", "Input", "rgb", "Original", "frames", "data")
MASK_DIRS = ("masks", "labels", "annotations", "GroundTruth", "SegmentationClass", "gt", "seg", "Label", "target")
IMAGE_AFFIXES = ("img", "image", "rgb", "sat", "input", "raw", "leftImg8bit")
MASK_AFFIXES = ("mask", "label", "gt", "segmentation", "annotation", "seg", "L", "lbl", "manual1", "gtFine")
BREEDS = (
    ("Abyssinian",),
    ("Bengal",),
    ("Birman",),
    ("american", "bulldog"),
    ("great", "pyrenees"),
    ("shiba", "inu"),
    ("english", "cocker", "spaniel"),
    ("pug",),
    ("British", "Shorthair"),
    ("staffordshire", "bull", "terrier"),
)
CLASS_DIRS = ("cat", "dog", "bird", "A", "B", "site1", "site2", "urban", "rural")
SPLIT_DIR_NAMES = (("train", "val", "test"), ("training", "validation", "testing"), ("train", "valid", "test"))


# colour codes: VOC's palette for lossless masks, saturated ones far apart for JPEG colour masks
def _voc_palette(n: int) -> list[tuple[int, int, int]]:
    """Pascal VOC's colour map: the codes colour-coded masks most often use."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


VOC = _voc_palette(256)
SATURATED = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]
SATURATED += [(255, 255, 255), (200, 30, 30), (30, 170, 60)]


@dataclass(frozen=True)
class Names:
    style: str  # NAME_STYLES
    case: str  # lower, upper, title, mixed
    sep: str  # between the tokens of a name
    pad: int  # zero padding of numeric ids (0: none)
    image_affix: tuple[str, str] | None  # (prefix|suffix, the affix with its separator)
    mask_affix: tuple[str, str] | None
    mask_case_differs: bool  # the masks' names lower-cased while the pictures' are not


@dataclass(frozen=True)
class SplitFile:
    kind: str  # one-file, per-split
    fmt: str  # yaml, json, csv, txt
    where: str  # folder relative to root ("" for the root)
    ids: str  # key, file, stem, int
    splits: tuple[str, ...]  # ("train", "val", "test") or ("train", "test")


@dataclass(frozen=True)
class Recipe:
    """One folder of the space: every choice that shapes it (pixels come from ``seed``)."""

    seed: int
    n: int  # pairs
    size: tuple[int, int]  # (h, w) of every picture
    names: Names
    layout: str
    image_dir: str
    mask_dir: str
    split_dirs: tuple[str, ...]  # split folder names (layout split-folders), train first
    split_outer: bool  # split-folders: train/images/ rather than images/train/
    image_format: str
    grey_images: bool
    jpeg_quality: int  # images saved as JPEG
    encoding: str
    mask_format: str  # the container of lossless masks: png, tif, bmp (gif and jpeg encodings decide their own)
    k: int
    mask_quality: int  # JPEG masks
    tiny: bool  # one class of about 0.1% of the pixels
    thin: bool  # one class drawn as 1-2 px lines
    mask_scale: float  # 1, 0.5 or 2
    split_file: SplitFile | None
    grey_copy: bool
    second_annotator: str | None  # None, "folder" (a sibling folder), "suffix" (beside, another suffix)
    backdrop: int | None  # product photos on a white (255) or black (0) backdrop
    unlabelled: bool  # a folder of pictures with no masks
    stray: bool  # a stray picture and text files at the root
    unpaired: int  # pictures without a partner (0-2)

    @property
    def conventions(self) -> dict[str, str]:
        """The recipe's place on each dimension, for the benchmark's table."""
        split = "folders" if self.layout == "split-folders" else "none"
        if self.split_file:
            split = f"{self.split_file.kind} {self.split_file.fmt} ids={self.split_file.ids}"
        decoys = [
            name
            for name, on in (
                ("grey copy", self.grey_copy),
                ("second annotator", self.second_annotator),
                ("backdrop photos", self.backdrop is not None),
                ("unlabelled folder", self.unlabelled),
                ("stray files", self.stray),
                ("unpaired files", self.unpaired),
            )
            if on
        ]
        masks = self.encoding + (f" q{self.mask_quality // 10 * 10}s" if self.encoding.startswith("jpeg") else "")
        return {
            "names": f"{self.names.style}, affixes {'image' if self.names.image_affix else '-'}/"
            f"{'mask' if self.names.mask_affix else '-'}",
            "case": self.names.case + (", masks lower-cased" if self.names.mask_case_differs else ""),
            "layout": self.layout,
            "images": self.image_format + (" grey" if self.grey_images else ""),
            "masks": masks,
            "classes": "2" if self.k == 2 else "3-5" if self.k <= 5 else "6-12",
            "class shape": "tiny class" if self.tiny else "thin lines" if self.thin else "blobs",
            "mask size": f"x{self.mask_scale:g}",
            "split": split,
            "decoys": ", ".join(decoys) or "none",
        }


def _affix(pick: Pick, side_words: Sequence[str], sep: str) -> tuple[str, str]:
    word = pick.one([*side_words, "<made-up>"])
    if word == "<made-up>":  # an affix nobody listed
        word = "".join(pick.one(string.ascii_lowercase) for _ in range(pick.integer(3, 6)))
    side = pick.one(("suffix", "suffix", "prefix"))
    mark = pick.one((sep, "_", "-"))
    return side, (f"{word}{mark}" if side == "prefix" else f"{mark}{word}")


def draw_recipe(pick: Pick) -> Recipe:
    """One folder of the space, every dimension drawn independently within what can coexist."""
    seed = pick.integer(0, 2**31 - 1)
    layout = pick.one(LAYOUTS)
    n = pick.integer(8, 20)
    style = pick.one(NAME_STYLES)
    sep = pick.one(("_", "-", "."))
    image_affix = _affix(pick, IMAGE_AFFIXES, sep) if pick.chance(0.3) else None
    mask_affix = _affix(pick, MASK_AFFIXES, sep) if pick.chance(0.5) or layout == "beside" else None
    if layout == "beside" and mask_affix == image_affix:  # side by side, the names must differ
        mask_affix = ("suffix", "_mask")
    names = Names(
        style=style,
        case=pick.one(("lower", "upper", "title", "mixed")),
        sep=sep,
        pad=pick.one((0, 3, 4, 5)) if style in ("id", "word-id") else 0,
        image_affix=image_affix,
        mask_affix=mask_affix,
        mask_case_differs=pick.chance(0.05),
    )
    encoding = pick.one(list(ENCODINGS))
    lo, hi = ENCODINGS[encoding]
    k = pick.integer(lo, hi)
    image_format = pick.one(IMAGE_FORMATS)
    split_file = None
    if layout in ("flat", "beside", "class-folders") and pick.chance(0.5):
        ids = pick.one(("key", "file", "stem", "int")) if style == "id" else pick.one(("key", "file", "stem"))
        split_file = SplitFile(
            kind=pick.one(("one-file", "per-split")),
            fmt=pick.one(("yaml", "json", "csv", "txt")),
            where=pick.one(("", "splits", "meta/lists", "ImageSets/Segmentation")),
            ids=ids,
            splits=pick.one((("train", "val", "test"), ("train", "test"))),
        )
    second = pick.one((None, None, None, "folder", "suffix")) if layout in ("flat", "beside") else None
    if second == "suffix" and layout == "flat" and names.mask_affix is None:
        second = "folder"
    return Recipe(
        seed=seed,
        n=n,
        size=pick.one(((64, 64), (64, 64), (48, 64), (64, 48))),
        names=names,
        layout=layout,
        image_dir=pick.one(IMAGE_DIRS),
        mask_dir=pick.one(MASK_DIRS),
        split_dirs=pick.one((*SPLIT_DIR_NAMES, ("train", "test"))),
        split_outer=pick.chance(0.5),
        image_format=image_format,
        grey_images=pick.chance(0.15),
        jpeg_quality=pick.integer(75, 95),
        encoding=encoding,
        mask_format=pick.one(("png", "png", "png", "tif", "bmp")),
        k=k,
        mask_quality=pick.integer(70, 98),
        tiny=k >= 3 and pick.chance(0.2),
        thin=pick.chance(0.2),
        mask_scale=pick.one((1.0, 1.0, 1.0, 1.0, 0.5, 2.0)),
        split_file=split_file,
        grey_copy=pick.chance(0.1) and layout in ("flat", "class-folders"),
        second_annotator=second,
        backdrop=pick.one((255, 0)) if pick.chance(0.1) else None,
        unlabelled=pick.chance(0.1),
        stray=pick.chance(0.2),
        unpaired=pick.one((0, 0, 0, 1, 2)),
    )


@dataclass
class Truth:
    """What a correct reading of the folder finds."""

    root: Path
    k: int
    pairings: list[dict[str, str]]  # image -> mask (relative paths); more than one when a second annotator exists
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # mask path -> class of each pixel, at its image's size
    splits: dict[str, int] | None = None  # split sizes a split file or split folders fix
    carved: bool = False  # no val list: val is carved from train (train + val is fixed, not each)

    @property
    def pairs(self) -> dict[str, str]:
        return self.pairings[0]

    def shares(self) -> np.ndarray:
        """Each class's share of the pixels of the first pairing's masks."""
        counts = sum(np.bincount(self.labels[m].ravel(), minlength=self.k) for m in self.pairs.values())
        return counts / counts.sum()


def _case(text: str, case: str, rng: np.random.Generator) -> str:
    if case == "lower":
        return text.lower()
    if case == "upper":
        return text.upper()
    if case == "title":
        return text[:1].upper() + text[1:]
    return text if rng.random() < 0.5 else text.capitalize()


def _base_names(recipe: Recipe, rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct names in the recipe's style (without affixes)."""
    nm, out, seen = recipe.names, [], set()
    while len(out) < count:
        i = int(rng.integers(1, 999))
        number = f"{i:0{nm.pad}d}" if nm.pad else str(i)
        if nm.style == "id":
            tokens = [number]
        elif nm.style == "word-id":
            tokens = [_case("case", nm.case, rng), number]
        elif nm.style == "breed-id":
            tokens = [_case(w, nm.case, rng) for w in BREEDS[int(rng.integers(len(BREEDS)))]] + [str(i)]
        else:  # car-view: a hex id and a view number
            car = "".join(rng.choice(list("0123456789abcdef"), 12))
            tokens = [car.upper() if nm.case == "upper" else car, f"{int(rng.integers(1, 17)):02d}"]
        name = nm.sep.join(tokens)
        if name.lower() not in seen:
            seen.add(name.lower())
            out.append(name)
    return out


def _with_affix(name: str, affix: tuple[str, str] | None) -> str:
    if affix is None:
        return name
    side, text = affix
    return text + name if side == "prefix" else name + text


# --- pixels ------------------------------------------------------------------------------------------------------


def _label_maps(recipe: Recipe, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Class maps at the masks' size: background 0, blobs of the other classes (each class in some map), the
    tiny class as a few small squares (about 0.1% of all pixels), the thin class as 1-2 px lines."""
    h, w = round(recipe.size[0] * recipe.mask_scale), round(recipe.size[1] * recipe.mask_scale)
    k, s = recipe.k, recipe.mask_scale
    tiny = k - 1 if recipe.tiny else None
    thin = (k - 2 if recipe.tiny and k >= 3 else k - 1) if recipe.thin else None
    blob_classes = [c for c in range(1, k) if c not in (tiny, thin)]
    maps = []
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(count):
        m = np.zeros((h, w), np.uint8)
        chosen = [int(c) for c in rng.choice(blob_classes, int(rng.integers(0, 3)))] if blob_classes else []
        chosen += blob_classes[i::count]  # every class in some picture, drawn last: on top
        for c in chosen:
            cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
            ry, rx = rng.uniform(0.08, 0.3) * h, rng.uniform(0.08, 0.3) * w
            if rng.random() < 0.5:
                m[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = c
            else:
                m[int(max(0, cy - ry)) : int(cy + ry), int(max(0, cx - rx)) : int(cx + rx)] = c
        if thin is not None and (i % 2 == 0 or not blob_classes):
            for _ in range(int(rng.integers(1, 4))):
                width = int(rng.integers(1, 3))
                if rng.random() < 0.5:
                    r = int(rng.integers(2, h - 3))
                    m[r : r + width, int(w * 0.1) : int(w * 0.9)] = thin
                else:
                    c = int(rng.integers(2, w - 3))
                    m[int(h * 0.1) : int(h * 0.9), c : c + width] = thin
        maps.append(m)
    if tiny is not None:  # about 0.1% of all pixels, in one or two squares of 5-7 px (at the picture's scale)
        target = max(25 * s * s, 0.001 * count * h * w)
        done = 0.0
        while done < target:
            m = maps[int(rng.integers(count))]
            side = max(3, round(int(rng.integers(5, 8)) * s))
            y, x = int(rng.integers(1, h - side - 1)), int(rng.integers(1, w - side - 1))
            m[y : y + side, x : x + side] = tiny
            done += side * side
    return maps


def _photo(recipe: Recipe, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """A picture with a photograph's texture (a lit gradient, grain, each class tinted), perhaps on a backdrop."""
    h, w = labels.shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = rng.uniform(70, 180, 3)
    grad = rng.uniform(-40, 40, (2, 3))
    tints = rng.uniform(-40, 40, (max(recipe.k, int(labels.max()) + 1), 3))
    image = base + yy[..., None] * grad[0] + xx[..., None] * grad[1] + tints[labels]
    for block, strength in ((8, 10), (4, 8), (2, 6)):  # texture at several scales, in luma and in colour
        coarse = rng.normal(0, 1, (h // block + 2, w // block + 2, 1)) + 0.5 * rng.normal(0, 1, (1, 1, 3))
        image += strength * np.kron(coarse, np.ones((block, block, 1)))[:h, :w]
    image += rng.normal(0, rng.uniform(6, 14), (h, w, 1)) + rng.normal(0, rng.uniform(2, 6), (h, w, 3))
    if recipe.backdrop is not None:  # the object in the middle, the backdrop around it (50-80% of the frame)
        cover = rng.uniform(0.5, 0.85)
        radius = np.sqrt((1 - cover) / np.pi)
        ym, xm = np.mgrid[0:h, 0:w]
        outside = ((ym / h - 0.5) ** 2 + (xm / w - 0.5) ** 2) > radius**2
        image[outside] = recipe.backdrop
    image = np.clip(image, 0, 255).astype(np.uint8)
    if recipe.grey_images:
        image = np.asarray(Image.fromarray(image).convert("L"))
    return image


def _save(array: np.ndarray | Image.Image, path: Path, fmt: str, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = array if isinstance(array, Image.Image) else Image.fromarray(array)
    if fmt in ("jpg", "JPG", "jpeg"):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        path.write_bytes(buf.getvalue())
    else:
        im.save(path)


def _mask_picture(recipe: Recipe, labels: np.ndarray, rng: np.random.Generator, levels: Any) -> Image.Image:
    """A class map in the recipe's encoding."""
    enc = recipe.encoding
    if enc in ("index", "binary-01"):
        return Image.fromarray(labels)
    if enc == "binary-255":
        return Image.fromarray(labels * 255)
    if enc in ("grey-levels", "jpeg-grey"):
        grey = np.asarray(levels, np.uint8)[labels]
        if enc == "jpeg-grey" and rng.random() < 0.5:  # Kvasir-SEG's: RGB with three equal channels
            return Image.fromarray(np.repeat(grey[..., None], 3, axis=2))
        return Image.fromarray(grey)
    if enc == "gif":
        return Image.fromarray(np.asarray(levels, np.uint8)[labels]).convert("P")
    if enc in ("rgb", "jpeg-rgb"):
        return Image.fromarray(np.asarray(levels, np.uint8)[labels])
    if enc == "palette":
        im = Image.fromarray(labels, mode="P")
        im.putpalette([v for colour in VOC for v in colour])
        return im
    if enc == "1-bit":
        return Image.fromarray(labels * 255).convert("1")
    if enc == "16-bit":
        return Image.fromarray(labels.astype(np.uint16))
    raise ValueError(enc)


def _levels(recipe: Recipe, rng: np.random.Generator) -> Any:
    """The values or colours the classes are written in."""
    k = recipe.k
    if recipe.encoding == "grey-levels":
        if rng.random() < 0.5:
            return [round(i * 255 / (k - 1)) for i in range(k)]
        gap = max(20, 255 // (2 * k))
        while True:
            values = sorted(int(v) for v in rng.choice(np.arange(0, 256, gap), k, replace=False))
            if values[-1] >= 64:  # never class indices in disguise
                return values
    if recipe.encoding in ("gif", "jpeg-grey"):
        return [round(i * 255 / (k - 1)) for i in range(k)]
    if recipe.encoding == "rgb":
        return [VOC[0]] + [VOC[i] for i in sorted(rng.choice(np.arange(1, 21), k - 1, replace=False))]
    if recipe.encoding == "jpeg-rgb":
        return [SATURATED[0]] + [SATURATED[i] for i in sorted(rng.choice(np.arange(1, 10), k - 1, replace=False))]
    return None


def _extension(recipe: Recipe, rng: np.random.Generator, i: int) -> str:
    fmt = recipe.image_format
    if fmt == "mixed":
        fmt = ("jpg", "png")[i % 2] if i < 4 else ("jpg", "png")[int(rng.integers(2))]
    return fmt


def _mask_extension(recipe: Recipe) -> str:
    if recipe.encoding == "gif":
        return "gif"
    if recipe.encoding.startswith("jpeg"):
        return "jpg"
    if recipe.encoding == "16-bit":
        return "tif" if recipe.mask_format == "tif" else "png"
    if recipe.encoding == "palette":
        return "png" if recipe.mask_format != "bmp" else "bmp"
    return recipe.mask_format


def _read_back(path: Path, labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The class map at the picture's size, as a correct reader resizes it (nearest)."""
    if labels.shape == size:
        return labels
    return np.asarray(Image.fromarray(labels).resize((size[1], size[0]), Image.NEAREST))


# --- the folder --------------------------------------------------------------------------------------------------


def write_folder(recipe: Recipe, root: Path) -> Truth:
    """Lay the recipe out under ``root`` and return what a correct reading finds."""
    rng = np.random.default_rng(recipe.seed)
    nm = recipe.names
    n = recipe.n
    bases = _base_names(recipe, rng, n + recipe.unpaired + 8)
    pair_bases, spare = bases[:n], bases[n:]
    maps = _label_maps(recipe, rng, n)
    levels = _levels(recipe, rng)
    mask_ext = _mask_extension(recipe)
    truth = Truth(root, recipe.k, [{}])
    second: dict[str, str] = {}
    copies: dict[str, str] = {}

    # where each pair goes: its split folder or class folder
    groups: list[str | None] = [None] * n
    if recipe.layout == "split-folders":
        dirs = recipe.split_dirs
        counts = [max(1, n // 5)] * (len(dirs) - 1)
        groups = [dirs[0]] * (n - sum(counts)) + [d for d, c in zip(dirs[1:], counts, strict=True) for _ in range(c)]
        sizes = {"train": n - sum(counts)}
        for d, c in zip(dirs[1:], counts, strict=True):
            sizes["val" if d.startswith("val") else "test"] = c
        truth.splits = {s: sizes.get(s, 0) for s in ("train", "val", "test")}
        truth.carved = "val" not in sizes
    elif recipe.layout == "class-folders":
        classes = list(rng.choice(CLASS_DIRS, int(rng.integers(2, 4)), replace=False))
        groups = [classes[i % len(classes)] for i in range(n)]

    def place(kind: str, group: str | None) -> Path:
        folder = Path(recipe.image_dir if kind == "image" else recipe.mask_dir)
        if recipe.layout == "beside":
            return Path(recipe.image_dir)
        if group is None:
            return folder
        if recipe.layout == "split-folders" and recipe.split_outer:
            return Path(group) / folder
        return folder / group

    def mask_name(base: str) -> str:
        name = _with_affix(base, nm.mask_affix)
        return name.lower() if nm.mask_case_differs else name

    for i, (base, labels) in enumerate(zip(pair_bases, maps, strict=True)):
        image_ext = _extension(recipe, rng, i)
        image_rel = place("image", groups[i]) / f"{_with_affix(base, nm.image_affix)}.{image_ext}"
        mask_rel = place("mask", groups[i]) / f"{mask_name(base)}.{mask_ext}"
        picture_labels = _read_back(mask_rel, labels, recipe.size)
        _save(_photo(recipe, rng, picture_labels), root / image_rel, image_ext, recipe.jpeg_quality)
        _save(_mask_picture(recipe, labels, rng, levels), root / mask_rel, mask_ext, recipe.mask_quality)
        truth.pairs[image_rel.as_posix()] = mask_rel.as_posix()
        truth.labels[mask_rel.as_posix()] = picture_labels
        if recipe.grey_copy:
            grey = np.asarray(Image.open(root / image_rel).convert("L"))
            copy_dir = Path(f"{recipe.image_dir}_grey") if groups[i] is None else Path("grey") / groups[i]
            _save(grey, root / copy_dir / image_rel.name, image_ext, recipe.jpeg_quality)
            copies[image_rel.as_posix()] = (copy_dir / image_rel.name).as_posix()
        if recipe.second_annotator:
            other = labels.copy()
            fg = other > 0
            grown = fg.copy()
            grown[1:] |= fg[:-1]  # the second annotator draws one row more below each region
            other[grown & ~fg] = np.roll(other, 1, axis=0)[grown & ~fg]
            if recipe.second_annotator == "folder":
                other_rel = Path(f"{recipe.mask_dir}_2") / mask_rel.name
            else:
                side, text = nm.mask_affix or ("suffix", "_mask")
                other_name = _with_affix(base, (side, text + "2" if side == "suffix" else "2" + text))
                other_rel = mask_rel.parent / f"{other_name}.{mask_ext}"
            _save(_mask_picture(recipe, other, rng, levels), root / other_rel, mask_ext, recipe.mask_quality)
            second[image_rel.as_posix()] = other_rel.as_posix()
            truth.labels[other_rel.as_posix()] = _read_back(other_rel, other, recipe.size)
    # the readings that are true: the pictures (or their greyscale copy, when the pictures are grey anyway: the
    # very same pixels) with the first annotator's masks (or the second's)
    image_choices = [{i: i for i in truth.pairs}]
    if recipe.grey_copy and recipe.grey_images:
        image_choices.append(copies)
    mask_choices = [dict(truth.pairs)] + ([second] if second else [])
    truth.pairings = [
        {image_of[i]: mask_of[i] for i in truth.pairs} for image_of in image_choices for mask_of in mask_choices
    ]

    # decoys
    for j in range(recipe.unpaired):  # a picture without its mask, or a mask without its picture
        base, labels = spare[j], maps[j]
        if j % 2 == 0:
            rel = place("image", groups[0]) / f"{_with_affix(base, nm.image_affix)}.{_extension(recipe, rng, 0)}"
            _save(_photo(recipe, rng, _read_back(rel, labels, recipe.size)), root / rel, rel.suffix[1:], 90)
        else:
            rel = place("mask", groups[0]) / f"{mask_name(base)}.{mask_ext}"
            _save(_mask_picture(recipe, labels, rng, levels), root / rel, mask_ext, recipe.mask_quality)
    if recipe.unlabelled:
        for j in range(int(rng.integers(3, 7))):
            labels = _read_back(Path("x"), maps[j % n], recipe.size)
            _save(_photo(recipe, rng, labels), root / "unlabelled" / f"extra_{j:03d}.jpg", "jpg", 90)
    if recipe.stray:
        _save(_photo(recipe, rng, np.zeros(recipe.size, np.uint8)), root / "overview.jpg", "jpg", 90)
        (root / "README.md").write_text("# a dataset\nclasses: background and the rest\n")
        (root / "classes.txt").write_text("\n".join(f"class {c}" for c in range(recipe.k)) + "\n")
        (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    if recipe.split_file:
        _write_split_file(recipe, truth, rng)
    return truth


def _listed_id(recipe: Recipe, image_rel: str) -> Any:
    """How the split file names a pair."""
    name = Path(image_rel).name
    stem = Path(image_rel).stem
    nm, ids = recipe.names, recipe.split_file.ids  # type: ignore[union-attr]
    key = stem
    if nm.image_affix:
        side, text = nm.image_affix
        key = stem[len(text) :] if side == "prefix" else stem[: -len(text)]
    if ids == "file":
        return name
    if ids == "stem":
        return stem
    if ids == "int":
        return int(key)
    return key


def _write_split_file(recipe: Recipe, truth: Truth, rng: np.random.Generator) -> None:
    sf = recipe.split_file
    assert sf is not None
    images = sorted(truth.pairs)
    order = [images[i] for i in rng.permutation(len(images))]
    n_test = max(1, len(order) // 5)
    n_val = max(1, len(order) // 5) if "val" in sf.splits else 0
    listed = {
        "test": order[:n_test],
        "val": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :],
    }
    listed = {s: [_listed_id(recipe, p) for p in listed[s]] for s in sf.splits}
    truth.splits = {s: len(listed.get(s, [])) for s in ("train", "val", "test")}
    truth.carved = "val" not in sf.splits
    folder = truth.root / sf.where
    folder.mkdir(parents=True, exist_ok=True)
    if sf.kind == "one-file":
        path = folder / f"{rng.choice(['split', 'splits', 'dataset_split', 'partition'])}.{sf.fmt}"
        if sf.fmt == "yaml":
            path.write_text(yaml.safe_dump(listed))
        elif sf.fmt == "json":
            path.write_text(json.dumps(listed if rng.random() < 0.5 else {"splits": listed}))
        elif sf.fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow([rng.choice(["id", "image", "filename", "name"]), rng.choice(["split", "set", "subset"])])
            writer.writerows([i, s] for s, ids in listed.items() for i in ids)
            path.write_text(buf.getvalue())
        else:
            path.write_text("".join(f"{i} {s}\n" for s, ids in listed.items() for i in ids))
        return
    suffix = rng.choice(["", "_list", "_ids"])
    for split, ids in listed.items():
        path = folder / f"{split}{suffix}.{sf.fmt}"
        if sf.fmt == "yaml":
            path.write_text(yaml.safe_dump(ids))
        elif sf.fmt == "json":
            path.write_text(json.dumps(ids))
        elif sf.fmt == "csv":
            path.write_text("id\n" + "".join(f"{i}\n" for i in ids))
        else:
            path.write_text("".join(f"{i}\n" for i in ids))
