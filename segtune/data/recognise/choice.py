"""Which image family pairs with which mask family: the pairing that pairs the most files, and what else would
fit (a ``CHOICE`` comment with the line to switch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segtune.data.recognise import content
from segtune.data.recognise.pairing import Family, key_regex, matched
from segtune.errors import DataError


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


def choose(root: Path, judged: list[Judged]) -> tuple[Pairing, list[Pairing]]:
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


def mask_choice(best: Pairing, other: Pairing, split_folders: bool) -> str:
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


def image_choice(best: Pairing, other: Pairing) -> str:
    b, o = best.images.sample, other.images.sample
    if b.colour and not o.colour:
        return (
            f"the colour pictures; {other.images.describe()} hold a greyscale copy of the same pictures "
            "(left out: colour over grey)"
        )
    return f'CHOICE: {other.images.describe()} pair as well: to use them, images: "{other.images.family.label}"'
