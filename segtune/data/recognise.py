"""`segtune init`, first half: what a dataset folder is, and how segtune should read it.

The known layouts first (torchvision's Oxford-IIIT Pet and VOC, both CamVid layouts), then any images + masks
tree, decided from all its files at once by rules, each stated with its reason:

- **masks by content** (data/content.py): a picture is a mask when its pixels sit on a few levels or colours,
  whatever its folder is called; the images are the pictures that do not;
- **pairing by a shared key** (data/pairing.py): the pairing that pairs the most files wins; between masks that
  pair equally, a lossless copy over a lossy one, then more classes; between images, colour over a greyscale
  copy. What else would fit is written as a ``CHOICE`` comment with the line to switch;
- **mask values** from every mask: 0/255, class indices, grey levels or colour codes, or lossy (JPEG) masks
  whose values cluster around a few levels (``lossy_masks: nearest``); more classes than masks plausibly hold
  without names is a one-line error, never a spec;
- **sizes**: masks stored at another size than their picture with the same aspect ratio get
  ``mask_resize: nearest``;
- **splits**: split folders, or a file that lists ids per split (data/splitfiles.py), else a seeded draw.

The spec's pairing is then read back with the reader `check` and `run` use: it must pair the same files.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from segtune.data import content
from segtune.data.base import SPLITS, MaskReading, read_mask, same_aspect
from segtune.data.labels import ValueCensus, is_binary_255
from segtune.data.pairing import Family, families, key_regex, matched
from segtune.data.splitfiles import find_split_files, match_ids, read_split_file
from segtune.errors import DataError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
MAX_FILES = 100_000
MAX_CLASSES = 20  # indexed masks with more classes than this need their names: init will not invent them
MAX_LEVELS = 12  # grey levels or colours (not indices 0..K-1): more than a dozen codes are no class codes
MAX_COLOURS = 32
NOISY_VALUES = 64  # lossless masks with more distinct values than this are noisy (a JPEG copy re-saved, say)
MAX_FAR_SHARE = 0.1  # lossy masks: more pixels than this far from every level and they are no masks
LISTED = 5  # unpaired files named in init's note


@dataclass
class Layout:
    """What the folder is: the dataset section it reads as, and how that was recognised."""

    kind: str
    dataset: dict[str, Any]
    how: str
    notes: list[str] = field(default_factory=list)  # choices made that the files could not settle
    comments: dict[str, str] = field(default_factory=dict)  # dataset field -> the comment written beside it


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
    return folder_layout(root)


def _pictures(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            files.append(path)
            if len(files) > MAX_FILES:
                raise DataError(f"{root}: more than {MAX_FILES} pictures; point init at the dataset's own folder")
    if not files:
        raise DataError(f"{root}: no pictures found ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


@dataclass
class Judged:
    family: Family
    sample: content.Sample

    def describe(self) -> str:
        kind = "colour" if self.sample.colour else "grey"
        lossy = ", lossy (JPEG)" if self.sample.lossy_format else ""
        return f"{self.family.label} ({len(self.family.files)} {kind} pictures{lossy})"


@dataclass
class Pairing:
    images: Judged
    masks: Judged
    pairs: list[tuple[Any, Path, Path]]  # ((split, key), image, mask), paths relative to root

    @property
    def split_folders(self) -> bool:
        """Both sides sit in split folders, train and val among them: ``split: folders`` reads them."""
        images, masks = self.images.family, self.masks.family
        named = {s for (s, _), _, _ in self.pairs}
        return None not in images.splits and None not in masks.splits and {"train", "val"} <= named

    def rank(self) -> tuple:
        """Most pairs first; then a lossless mask copy over a lossy one, more classes, colour images over grey
        ones, more files; the names last, so the choice never depends on the order files were listed in."""
        m, i = self.masks.sample, self.images.sample
        return (-len(self.pairs), m.lossy_format, -m.levels, not i.colour, -len(self.images.family.files))


def _overlap(a: Family, b: Family) -> bool:
    return bool(set(a.files) & set(b.files))


def _choose(root: Path, judged: list[Judged]) -> tuple[Pairing, list[Pairing]]:
    """The best pairing of an image family with a mask family, and the others that pair as well (the rejected
    mask and image candidates, for the CHOICE comments)."""
    masks = [j for j in judged if j.sample.mask_like]
    images = [j for j in judged if not j.sample.mask_like]
    total = sum(len(j.family.files) for j in judged)
    if not masks:
        raise DataError(
            f"{root}: cannot tell images from masks ({total} pictures, none of them sits on a few flat levels or "
            "colours as a mask does); write the dataset section by hand (README: folder)"
        )
    if not images:
        raise DataError(
            f"{root}: cannot tell images from masks ({total} pictures, every one of them sits on a few flat levels "
            "or colours); write the dataset section by hand (README: folder)"
        )
    found = [Pairing(i, m, pairs) for i in images for m in masks if (pairs := matched(i.family, m.family))]
    if not found:
        raise DataError(
            f"{root}: found {sum(len(i.family.files) for i in images)} pictures and "
            f"{sum(len(m.family.files) for m in masks)} masks but could pair none by name (images: "
            f"{', '.join(i.family.label for i in images[:3])}; masks: {', '.join(m.family.label for m in masks[:3])}); "
            "write the dataset section by hand (README: folder)"
        )
    found.sort(key=lambda p: (*p.rank(), p.masks.family.label, p.images.family.label))
    best = found[0]

    def alternative(p: Pairing) -> bool:
        """Pairs as well, with the same images and other masks (or the reverse), none of the chosen files."""
        if 2 * len(p.pairs) < len(best.pairs):
            return False
        if p.images.family is best.images.family:
            return not _overlap(p.masks.family, best.masks.family)
        return p.masks.family is best.masks.family and not _overlap(p.images.family, best.images.family)

    return best, [p for p in found[1:] if alternative(p)]


def _mask_choice(best: Pairing, other: Pairing, split_folders: bool) -> str:
    m, o = best.masks.sample, other.masks.sample
    if o.lossy_format and not m.lossy_format:
        why = "a lossless copy of the masks over a lossy one"
    elif o.levels < m.levels:
        why = "the masks with more classes first"
    else:
        why = "the first in name order of masks that pair equally"
    switch = f'masks: "{other.masks.family.glob(split_folders)}"'
    key = key_regex(other.images.family, other.masks.family)
    if key != key_regex(best.images.family, best.masks.family):
        switch += f", key: {key!r}" if key else ", and delete key"
    return (
        f"CHOICE: {len(best.pairs)} pairs with {best.masks.describe()}, by the rule {why}; "
        f"{other.masks.describe()} pair {len(other.pairs)}: to use them, {switch}"
    )


def _image_choice(best: Pairing, other: Pairing) -> str:
    b, o = best.images.sample, other.images.sample
    if b.colour and not o.colour:
        return (
            f"the colour pictures; {other.images.describe()} hold a greyscale copy of the same pictures "
            "(left out: colour over grey)"
        )
    return f'CHOICE: {other.images.describe()} pair as well: to use them, images: "{other.images.family.label}"'


def _split(root: Path, best: Pairing, key: str | None, dataset: dict[str, Any], layout: Layout) -> None:
    """Split folders when both sides have train and val folders; else a split file that lists the pairs' ids."""
    import re

    if best.split_folders:
        splits = {s for (s, _), _, _ in best.pairs}
        dataset["split"] = "folders"
        layout.comments["split"] = f"split folders: {', '.join(sorted(s for s in splits if s))}"
        return
    keys = {k for (_, k), _, _ in best.pairs}
    pattern = re.compile(key) if key else None

    def key_of(name: str) -> str | None:
        if pattern is None:
            return Path(name).stem
        m = pattern.search(Path(name).name)
        return (m.group(1) if m.groups() else m.group(0)) if m else None

    candidates = []
    for path in find_split_files(root, set()):
        listed = read_split_file(path)
        if not listed:
            continue
        found = match_ids(listed, keys, key_of)
        n_listed = sum(len(v) for v in listed.values())
        if len(found.splits) >= len(keys) / 2 and len(found.absent) <= n_listed / 2:
            candidates.append((len(found.splits), path, listed, found))
    if not candidates:
        return
    _, path, listed, found = max(candidates, key=lambda c: (c[0], str(c[1])))
    rel = path.relative_to(root).as_posix()
    spec: dict[str, Any] = {"file": rel}
    counts = ", ".join(f"{s} {len(v)}" for s, v in sorted(listed.items()))
    why = f"the official split in {rel} ({counts} ids)"
    if "val" not in listed:
        why += "; no val list: val is carved from train (val_fraction 0.2, seed 42)"
    if found.twice:
        spec["wins"] = "test"
        first, where = next(iter(found.twice.items()))
        both = " and ".join(sorted(set(where), key=SPLITS.index))
        why += (
            f"; CHOICE: {len(found.twice)} id(s) listed in two splits (e.g. {first!r} in {both}): "
            "each goes to test, so no test picture is trained on; set wins to train or val to change it"
        )
        layout.notes.append(f"{rel} lists {len(found.twice)} id(s) in two splits: they go to test (see the comment)")
    unpaired = sorted(set(keys) - set(found.splits))
    if unpaired:
        layout.notes.append(f"{len(unpaired)} pairs are in no split of {rel} (e.g. {unpaired[0]!r})")
        return  # the reader refuses pairs in no split: keep the seeded draw rather than write a spec that fails
    if found.absent:
        layout.notes.append(f"{rel} lists {len(found.absent)} ids with no pair (e.g. {found.absent[0]!r})")
        dataset["skip_bad_files"] = True
        layout.comments["skip_bad_files"] = (
            f"CHOICE: {rel} lists {len(found.absent)} ids no image + mask has (e.g. {found.absent[0]!r}); "
            "they are left out"
        )
    dataset["split"] = spec
    layout.comments["split"] = why


def _sizes(root: Path, pairs: list[tuple[Any, Path, Path]]) -> tuple[list[float], int, int]:
    """For every pair whose mask is stored at another size than its picture: the scale, and how many mismatch
    with the same aspect ratio and with another one."""
    scales, same, other = [], 0, 0
    for _, image, mask in pairs:
        try:
            with Image.open(root / image) as im, Image.open(root / mask) as mk:
                if im.size == mk.size:
                    continue
                if same_aspect(im.size, mk.size):
                    same += 1
                    scales.append(mk.size[0] / im.size[0])
                else:
                    other += 1
        except (OSError, UnidentifiedImageError):
            continue  # unreadable: check names it
    return scales, same, other


def _class_names(k: int) -> list[str]:
    return ["background"] + [f"class_{i}" for i in range(1, k)]


def decide_values(dataset: dict[str, Any], layout: Layout, census: ValueCensus, colour: bool, lossy: bool) -> None:
    """Classes and how mask values become them, from every mask's values; a one-line error where no spec could
    mean anything (too many classes to be told without names, masks that sit on no few levels)."""
    root, values = dataset["root"], census.values
    noisy = lossy or len(values) > NOISY_VALUES
    if noisy:
        _decide_lossy(dataset, layout, census, colour)
        return
    if colour:
        if len(values) > MAX_COLOURS:
            raise DataError(
                f"{root}: the masks hold {len(values)} colours: more than {MAX_COLOURS} are no class codes; write "
                "dataset.colors and dataset.classes by hand (README: folder)"
            )
        ordered = sorted(values, key=lambda c: (c != (0, 0, 0), -census.pixels[c]))  # black first: background
        dataset["classes"] = ["background" if c == (0, 0, 0) else f"class_{i}" for i, c in enumerate(ordered)]
        dataset["colors"] = {",".join(map(str, c)): i for i, c in enumerate(ordered)}
        layout.comments["classes"] = "CHOICE: named by colour order; rename them (the colors below say which is which)"
        return
    if is_binary_255(values, 2):
        dataset["classes"] = ["background", "foreground"]
        layout.comments["classes"] = (
            f"masks hold only 0 and 255: 255 is the foreground (decided from all {census.masks} masks); "
            "rename foreground to what it is"
        )
        return
    indexed = [v for v in values if v != 255]
    if indexed and max(indexed) < 64 and len(indexed) >= max(indexed) * 0.5:
        k = max(indexed) + 1
        if k > MAX_CLASSES:
            raise DataError(
                f"{root}: the masks hold class indices 0..{k - 1}: {k} classes are more than init names by number "
                f"(at most {MAX_CLASSES}); write dataset.classes by hand (README: folder)"
            )
        dataset["classes"] = _class_names(k)
        layout.comments["classes"] = f"CHOICE: masks hold class indices 0..{k - 1}; name them (0 taken as background)"
        if 255 in values:
            share = census.pixels[255] / sum(census.pixels.values())
            dataset["ignore_index"] = 255
            layout.comments["ignore_index"] = (
                f"CHOICE: 255 appears beside 0..{k - 1} (in {census.masks_with[255]} of {census.masks} masks, "
                f"{share:.1%} of pixels): taken as pixels to ignore (outlines, void). If 255 is a class, delete "
                "this line and add the class"
            )
            layout.notes.append("could not tell what mask value 255 means: took it as 'ignore' (see the comment)")
        return
    if len(values) > MAX_LEVELS:
        raise DataError(
            f"{root}: the masks hold {len(values)} grey levels ({census.describe()}): neither class indices nor a "
            f"few codes (at most {MAX_LEVELS}); write dataset.values and dataset.classes by hand (README: folder)"
        )
    # grey levels coding classes (0, 85, 170, 255, say): one class per level, in order
    dataset["classes"] = _class_names(len(values))
    dataset["values"] = {int(v): i for i, v in enumerate(values)}
    layout.comments["values"] = f"CHOICE: {len(values)} grey levels, one class each in order; name the classes"


def _decide_lossy(dataset: dict[str, Any], layout: Layout, census: ValueCensus, colour: bool) -> None:
    """Masks whose values cluster around a few levels (JPEG noise): those levels are the classes, and each pixel
    is snapped to the nearest (``lossy_masks: nearest``), those too far from every level ignored."""
    from segtune.data.labels import LossyLevels

    root = dataset["root"]
    levels = content.find_levels(census.pixels)
    kind = "colours" if colour else "grey levels"
    if not levels or len(levels) > MAX_LEVELS:
        raise DataError(
            f"{root}: the masks hold {len(census.values)} {kind} that do not cluster around a few levels; write "
            "the dataset section by hand (README: folder)"
        )
    tol = content.tolerance(levels)
    off = LossyLevels({v: i for i, v in enumerate(levels)}, tol).off_level(census)
    if off.share(off.ignored) > MAX_FAR_SHARE:
        raise DataError(
            f"{root}: the masks' {kind} do not sit on a few levels ({off.share(off.ignored):.0%} of pixels far from "
            f"all of {', '.join(map(str, levels))}): no masks segtune can read; write the dataset section by hand"
        )
    if colour:
        ordered = sorted(levels, key=lambda c: (sum(c) > 60, -census.pixels.get(c, 0)))  # the darkest first
        dataset["classes"] = ["background"] + [f"class_{i}" for i in range(1, len(ordered))]
        dataset["colors"] = {",".join(map(str, c)): i for i, c in enumerate(ordered)}
        layout.comments["classes"] = "CHOICE: named by colour order; rename them (the colors below say which is which)"
    else:
        dataset["classes"] = ["background", "foreground"] if levels == [0, 255] else _class_names(len(levels))
        dataset["values"] = {int(v): i for i, v in enumerate(levels)}
        layout.comments["values"] = (
            f"{len(levels)} grey levels: {'255 is the foreground' if levels == [0, 255] else 'one class each'}"
        )
    if off.snapped + off.ignored == 0:
        return  # a lossy format, but every pixel on a level: nothing to snap
    dataset["lossy_masks"] = "nearest"
    layout.comments["lossy_masks"] = (
        f"the {census.masks} masks are lossy: they hold {len(census.values)} {kind}, and "
        f"{off.share(off.snapped + off.ignored):.1%} of their pixels sit off the {len(levels)} levels "
        f"{', '.join(map(str, levels))} (compression noise); each is snapped to the nearest "
        f"within {tol:g}, the {off.share(off.ignored):.2%} farther from every level are ignored"
    )


def folder_layout(root: Path) -> Layout:
    """Any images + masks tree, recognised by content and by names."""
    files = _pictures(root)
    judged = [Judged(f, content.sample([root / p for p in f.files])) for f in families(root, files)]
    best, others = _choose(root, judged)
    images, masks = best.images.family, best.masks.family
    split_folders = (
        None not in images.splits
        and None not in masks.splits
        and {"train", "val"} <= {s for (s, _), _, _ in best.pairs}
    )
    dataset: dict[str, Any] = {
        "name": "folder",
        "root": str(root),
        "images": images.glob(split_folders),
        "masks": masks.glob(split_folders),
    }
    key = key_regex(images, masks)
    how = f"images + masks: {len(best.pairs)} pairs ({dataset['images']} with {dataset['masks']}"
    how += ", paired by the name left once their own affixes are stripped)" if key else ", by file name)"
    layout = Layout("folder", dataset, how)
    if key:
        dataset["key"] = key
        layout.comments["key"] = f"the part of the name both sides share: {_affix_text(images, masks)} stripped"
    for other in others:
        if other.masks.family is not masks:
            layout.comments.setdefault("masks", _mask_choice(best, other, split_folders))
        elif other.images.family is not images:
            layout.comments.setdefault("images", _image_choice(best, other))
    _split(root, best, key, dataset, layout)
    paired = {p for _, i, m in best.pairs for p in (i, m)}
    unpaired = sorted(str(p) for p in [*images.files, *masks.files] if p not in paired)
    if unpaired:
        named = ", ".join(unpaired[:LISTED]) + (f" and {len(unpaired) - LISTED} more" if len(unpaired) > LISTED else "")
        layout.notes.append(f"{len(unpaired)} pictures found no partner and are left out: {named}")
    reading = MaskReading(rgb=best.masks.sample.colour, lossy=True)
    census = ValueCensus()
    for _, _, mask in best.pairs:
        with contextlib.suppress(DataError):  # an unreadable mask is a bad file: check names it
            census.add(read_mask(root / mask, reading))
    lossy = any(content.is_lossy_file(root / m) for _, _, m in best.pairs[:: max(1, len(best.pairs) // 20)])
    decide_values(dataset, layout, census, best.masks.sample.colour, lossy)
    _decide_sizes(root, best, dataset, layout)
    _same_pairs(dataset, best)
    return layout


def _affix_text(images: Family, masks: Family) -> str:
    parts = []
    for family, side in ((images, "images"), (masks, "masks")):
        affixes = sorted(a for a in family.prefixes | family.suffixes if a)
        parts.append(f"{' and '.join(repr(a) for a in affixes) or 'nothing'} on the {side}")
    return ", ".join(parts)


def _decide_sizes(root: Path, best: Pairing, dataset: dict[str, Any], layout: Layout) -> None:
    scales, same, other = _sizes(root, best.pairs)
    if same:
        dataset["mask_resize"] = "nearest"
        layout.comments["mask_resize"] = (
            f"{same} of {len(best.pairs)} masks are stored at another size than their picture (scale "
            f"{min(scales):.2g}-{max(scales):.2g}x, the same aspect ratio within 1%): resized to it nearest-neighbour"
        )
    if other:
        dataset["skip_bad_files"] = True
        layout.comments["skip_bad_files"] = (
            f"CHOICE: {other} masks have another aspect ratio than their picture: no resize fits them; they are left "
            "out (`segtune check` names them)"
        )
        layout.notes.append(f"{other} masks have another aspect ratio than their picture: left out as bad files")


def _same_pairs(dataset: dict[str, Any], best: Pairing) -> None:
    """The spec's globs and key, read by the folder reader `check` and `run` use, must pair exactly these files."""
    from segtune.data.folder import index_records
    from segtune.spec import validate

    probe = validate({"study": "init", "dataset": dataset}, source="init")
    records, _ = index_records(probe.dataset)
    root = Path(dataset["root"])
    written = {(r.image.resolve(), r.mask.resolve()) for r in records}
    chosen = {((root / i).resolve(), (root / m).resolve()) for _, i, m in best.pairs}
    if written != chosen:
        extra = sorted(written - chosen)[:1] or sorted(chosen - written)[:1]
        raise DataError(
            f"{root}: init found {len(chosen)} pairs but the spec it would write pairs {len(written)} (e.g. "
            f"{extra[0][0].name} with {extra[0][1].name}); write the dataset section by hand (README: folder)"
        )
