"""Which image family pairs with which mask family: the pairing that pairs the most files, and what else would
fit (a ``CHOICE`` comment with the line to switch).

Photographs and masks are told apart with a margin (content.py): a family whose pictures score between the two
thresholds is *unsure*, and the set decides: an unsure family pairs as whichever kind its partner is not. Two
unsure families, or one that pairs as well either way, and init asks (one line) rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segtune.data.recognise.content import MASK_SCORE, PHOTO_SCORE
from segtune.data.recognise.pairing import Matched, match
from segtune.data.recognise.places import Judged, describe_kinds, median_score
from segtune.errors import DataError

HAND = "write the dataset section by hand (README: folder)"


@dataclass
class Pairing:
    images: Judged
    masks: Judged
    matched: Matched

    @property
    def pairs(self) -> list[tuple[Any, Path, Path]]:
        """((split, key), image, mask), paths relative to root, as the reader pairs them."""
        root = self.images.family.root
        return [((s, k), i.relative_to(root), m.relative_to(root)) for k, (i, m, s) in self.matched.pairs.items()]

    @property
    def split_folders(self) -> bool:
        """Both sides sit in split folders: ``split: folders`` reads them (val carved from train without one)."""
        return self.images.family.in_split_folders and self.masks.family.in_split_folders

    @property
    def unsure(self) -> int:
        return (self.images.kind == "unsure") + (self.masks.kind == "unsure")

    def rank(self) -> tuple:
        """Most pairs first; then families whose kind is sure, colour images over a greyscale copy, fewer files left
        unpaired, a lossless mask copy over a lossy one, more classes, more files, the plainer key; the names last,
        so the choice never depends on the order files were listed in."""
        m, i = self.masks.sample, self.images.sample
        n = len(self.matched.pairs)
        unpaired = len(self.images.family.files) + len(self.masks.family.files) - 2 * n
        return (
            -n,
            self.unsure,
            not i.colour,
            unpaired,
            m.lossy_format,
            -m.levels,
            -len(self.images.family.files),
            self.matched.stripped,
            self.masks.family.label,
            self.images.family.label,
        )


def _overlap(a: Judged, b: Judged) -> bool:
    return bool(set(a.family.files) & set(b.family.files))


def _bare(j: Judged) -> set[str]:
    """Each name of a family lower-cased, as it is and without the affixes the family shares (whole or cut back
    word by word, as :func:`match` tries them)."""
    prefixes = set().union({""}, *j.family.prefix_options)
    suffixes = set().union({""}, *j.family.suffix_options)
    out = set()
    for f in j.family.files:
        stem = f.stem.lower()
        out.add(stem)
        for p in prefixes:
            for s in suffixes:
                cut = stem.removeprefix(p.lower())
                out.add(cut.removesuffix(s.lower()) if s else cut)
    return out


def candidates(root: Path, judged: list[Judged]) -> list[Pairing]:
    """Every pairing of an image family with a mask family, best first (:meth:`Pairing.rank`); a one-line error
    when there is none, or when the best one rests on a family that could be either kind."""
    masks = [j for j in judged if j.kind in ("mask", "unsure")]
    images = [j for j in judged if j.kind in ("photo", "unsure")]
    total = sum(len(j.family.files) for j in judged if j.family.files)
    if not [j for j in judged if j.kind == "mask"] and not [j for j in judged if j.kind == "unsure"]:
        raise DataError(
            f"{root}: cannot tell images from masks ({total} pictures, none of them sits on a few flat levels or "
            f"colours as a mask does); {HAND}"
        )
    if not [j for j in judged if j.kind == "photo"] and not [j for j in judged if j.kind == "unsure"]:
        raise DataError(
            f"{root}: cannot tell images from masks ({total} pictures, every one of them sits on a few flat levels "
            f"or colours); {HAND}"
        )
    found = []
    bare = {id(j): _bare(j) for j in judged}
    for i in images:
        for m in masks:
            if i is m or _overlap(i, m) or (i.kind == m.kind == "unsure") or not bare[id(i)] & bare[id(m)]:
                continue
            matched = match(i.family, m.family)
            if matched is not None:
                found.append(Pairing(i, m, matched))
    if not found:
        photos = [j for j in images if j.kind == "photo"] or images
        sure = [j for j in masks if j.kind == "mask"] or masks
        raise DataError(
            f"{root}: found {sum(len(i.family.files) for i in photos)} pictures and "
            f"{sum(len(m.family.files) for m in sure)} masks but could pair none by name (images: "
            f"{', '.join(i.family.label for i in photos[:3])}; masks: {', '.join(m.family.label for m in sure[:3])}); "
            f"{HAND}"
        )
    found.sort(key=Pairing.rank)
    if found[0].unsure:
        _settle_unsure(root, found[0], found)
    return found


def alternatives(best: Pairing, found: list[Pairing]) -> list[Pairing]:
    """The pairings that pair as well with the same images and other masks (or the reverse), none of the chosen
    files: the rejected mask and image candidates, for the CHOICE comments."""

    def alternative(p: Pairing) -> bool:
        if p is best or 2 * len(p.matched.pairs) < len(best.matched.pairs) or p.unsure:
            return False
        if p.images.family is best.images.family:
            return not _overlap(p.masks, best.masks)
        return p.masks.family is best.masks.family and not _overlap(p.images, best.images)

    return [p for p in found if alternative(p)]


def _settle_unsure(root: Path, best: Pairing, found: list[Pairing]) -> None:
    """An unsure family takes the kind its partner is not, unless it pairs as well in the other role: then init
    asks."""
    unsure = best.images if best.images.kind == "unsure" else best.masks
    role = "images" if unsure is best.images else "masks"
    n = len(best.matched.pairs)
    other = [p for p in found if (p.masks if role == "images" else p.images) is unsure and len(p.matched.pairs) >= n]
    if other:
        raise DataError(
            f"{root}: cannot tell whether {unsure.family.label} ({len(unsure.family.files)} pictures) are masks or "
            f"photographs: their pixels sit on a few flat levels for {median_score([unsure]):.0%} of the frame "
            f"(masks: {MASK_SCORE:.0%} and more, photographs under {PHOTO_SCORE:.0%}) and they pair as either "
            f"({describe_kinds([best.images, best.masks])}); {HAND}"
        )


def mask_choice(best: Pairing, other: Pairing, split_folders: bool) -> str:
    m, o = best.masks.sample, other.masks.sample
    if o.lossy_format and not m.lossy_format:
        why = "a lossless copy of the masks over a lossy one"
    elif o.levels < m.levels:
        why = "the masks with more classes first"
    else:
        why = "the first in name order of masks that pair equally"
    switch = f'masks: "{other.masks.family.glob(split_folders)}"'
    key = other.matched.key
    if key != best.matched.key:
        switch += f", key: {key!r}" if key else ", and delete key"
    return (
        f"CHOICE: {len(best.matched.pairs)} pairs with {best.masks.describe()}, by the rule {why}; "
        f"{other.masks.describe()} pair {len(other.matched.pairs)}: to use them, {switch}"
    )


def image_choice(best: Pairing, other: Pairing) -> str:
    b, o = best.images.sample, other.images.sample
    if b.colour and not o.colour:
        return (
            f"the colour pictures; {other.images.describe()} hold a greyscale copy of the same pictures "
            "(left out: colour over grey)"
        )
    return f'CHOICE: {other.images.describe()} pair as well: to use them, images: "{other.images.family.label}"'
