"""Where each kind of picture is: alike files, judged by content, gathered into families.

1. *Cells*: the pictures of one folder with one extension and one number of name tokens, each judged from a
   sample of up to 12 of its pictures (content.py): masks, photographs, or unsure. A cell whose sample holds both
   masks and photographs (``img_001.png`` beside ``msk_001.png``) is judged picture by picture.
2. The cells of one folder and one kind are one family, whatever their extensions and name shapes (a folder of
   ``.jpg`` and ``.png`` pictures; ``Abyssinian_1.jpg`` beside ``american_bulldog_1.jpg``), unless two of them
   hold the same names (every mask shipped as ``.bmp`` and as ``.jpg``: two families, one to choose).
3. Folders named alike up to digits and split names are one place (``images/train`` and ``images/val``;
   ``IMD002/IMD002_lesion`` and ``IMD003/IMD003_lesion``); folders that differ in one name and hold different
   names (``images/cat``, ``images/dog``) are offered as one family too, beside each alone.
4. A family whose names differ in a first or last word of a few values, each repeated (``_1stHO`` / ``_2ndHO``:
   two annotators), is offered split by that word too.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segtune.data.recognise import content
from segtune.data.recognise.content import MASK_SCORE, PHOTO_SCORE, Sample
from segtune.data.recognise.pairing import Family, shared_affixes, split_of, tokens
from segtune.data.splitfiles import SPLIT_NAMES

MAX_VARIANTS = 8  # annotators, views, kinds of mask: a few; more values than this are part of the key
OUTLIERS = 0.2  # a kind this small a share of its cell may be outliers the names overrule
MORE_EVIDENCE = 200  # an unsure cell is judged on up to this many of its pictures before init asks


@dataclass
class Judged:
    """A family and what its pictures hold: ``kind`` is mask, photo or unsure."""

    family: Family
    sample: Sample
    kind: str

    def describe(self) -> str:
        kind = "colour" if self.sample.colour else "grey"
        lossy = ", lossy (JPEG)" if self.sample.lossy_format else ""
        return f"{self.family.label} ({len(self.family.files)} {kind} pictures{lossy})"


def verdict(sample: Sample) -> str:
    """mask, photo or unsure, from the median score of a sample."""
    if not sample.scores:
        return "unreadable"
    if sample.score >= MASK_SCORE:
        return "mask"
    if sample.score < PHOTO_SCORE:
        return "photo"
    return "unsure"


def merge_samples(samples: list[Sample]) -> Sample:
    scores = tuple(s for sample in samples for s in sample.scores)
    colour = sum(len(s.scores) for s in samples if s.colour) > len(scores) / 2
    return Sample(scores, colour, max(s.levels for s in samples), any(s.lossy_format for s in samples))


def _judge_cell(root: Path, files: list[Path]) -> list[tuple[list[Path], Sample, str]]:
    """A cell as one kind, or split by kind when its sample holds several."""
    sample = content.sample([root / f for f in files])
    kind = verdict(sample)
    n = len(sample.scores)
    mixed = sample.masks > 0 and sample.photos > 0  # one of each: both kinds share the cell's name shape
    if not mixed and kind != "unsure":
        return [(files, sample, kind)]
    if not mixed and len(files) > n:  # near the threshold: judge more of the cell before splitting it
        sample = content.judge(content.spread([root / f for f in files], MORE_EVIDENCE))
        kind = verdict(sample)
        if kind != "unsure" or not (sample.masks and sample.photos):
            return [(files, sample, kind)]
    by_kind: dict[str, list[tuple[Path, Sample]]] = defaultdict(list)
    for f in files:  # both kinds in one cell: each picture by itself
        one = content.judge([root / f])
        by_kind[verdict(one)].append((f, one))
    _names_decide(by_kind, len(files))
    return [([f for f, _ in group], merge_samples([s for _, s in group]), k) for k, group in by_kind.items()]


def _names_decide(by_kind: dict[str, list[tuple[Path, Sample]]], total: int) -> None:
    """A few pictures judged apart from the rest of their cell, named as the rest of one kind is (the affixes it
    shares: ``CASE.0123-leftImg8bit.png`` among ``CASE.*-leftImg8bit.png`` photographs, on a black backdrop that
    reads as a mask; or plain names among plain names): of that kind."""
    for kind, group in list(by_kind.items()):
        if len(group) > max(1, OUTLIERS * total):
            continue
        for other, members in by_kind.items():
            if other == kind or len(members) < max(2, 2 * len(group)):
                continue
            # names that carry the affixes the rest shares, or plain names like the rest's (no name tells them
            # apart: within one cell of one name shape, they are the rest's kind)
            prefix, suffix = shared_affixes([f.stem for f, _ in members])
            if all(f.stem.startswith(prefix) and f.stem.endswith(suffix) for f, _ in group):
                members.extend(group)
                del by_kind[kind]
                break


def _signature(relative: Path) -> tuple[str, ...]:
    """Folders named alike up to digits and split names: ``IMD002/IMD002_lesion`` and ``IMD003/IMD003_lesion``
    are one place, ``images/train`` and ``images/valid`` too."""
    return tuple("{split}" if p.lower() in SPLIT_NAMES else re.sub(r"\d+", "#", p) for p in relative.parts[:-1])


def _names(files: list[Path]) -> set[tuple[str | None, str]]:
    return {(split_of(f), f.stem) for f in files}


def _disjoint(groups: list[list[Path]]) -> bool:
    seen: set[tuple[str | None, str]] = set()
    for files in groups:
        names = _names(files)
        if len(names) < len(files) or names & seen:
            return False
        seen |= names
    return True


def _union(root: Path, parts: list[Judged]) -> Judged:
    files = sorted(f for p in parts for f in p.family.files)
    return Judged(Family(root, files), merge_samples([p.sample for p in parts]), parts[0].kind)


def _gather(root: Path, parts: list[Judged]) -> list[Judged]:
    """Parts of one kind gathered greedily (the largest first) into unions whose names never repeat."""
    unions: list[list[Judged]] = []
    for part in sorted(parts, key=lambda p: (sorted(p.family.extensions), -len(p.family.files), p.family.label)):
        for union in unions:
            if _disjoint([*(u.family.files for u in union), part.family.files]):
                union.append(part)
                break
        else:
            unions.append([part])
    return [u[0] if len(u) == 1 else _union(root, u) for u in unions]


def _variants(files: list[Path]) -> list[list[Path]]:
    """A group split by its first or last word when that word takes a few values, each repeated (``_1stHO`` and
    ``_2ndHO``: two annotations of the same pictures); [] when neither does."""
    stems = [tokens(f.stem) for f in files]
    out = []
    for position in (0, -1):
        words = [t[position] for t in stems]
        counts = Counter(words)
        if 2 <= len(counts) <= MAX_VARIANTS and min(counts.values()) >= 2:
            by_word: dict[str, list[Path]] = defaultdict(list)
            for f, w in zip(files, words, strict=True):
                by_word[w].append(f)
            out += list(by_word.values())
    return out


def _siblings(root: Path, places: list[Judged]) -> list[Judged]:
    """Families of one kind in folders that differ in one name only, holding different names (``images/cat``
    and ``images/dog``): offered as one family."""
    out = []
    by_shape: dict[tuple, list[Judged]] = defaultdict(list)
    for j in places:
        folders = {f.parts[:-1] for f in j.family.files}
        depths = {len(parts) for parts in folders}
        if len(depths) != 1:
            continue
        (depth,) = depths
        for i in range(depth):
            shapes = {(parts[:i], parts[i + 1 :]) for parts in folders}
            if len(shapes) == 1:  # the family's folders differ at most at depth i
                by_shape[(j.kind, depth, i, *shapes)].append(j)
    for group in by_shape.values():
        if len(group) > 1 and _disjoint([j.family.files for j in group]):
            out.append(_union(root, group))
    return out


def _named_as(f: Path, family: Family) -> bool:
    """Whether a file's name carries a family's affixes (its own split folder's)."""
    prefix, suffix = family.affixes.get(split_of(f), ("", ""))
    return f.stem.startswith(prefix) and f.stem.endswith(suffix)


def _kind_beside(j: Judged, folder: list[Judged]) -> str:
    """An unsure part takes the kind of the parts of its folder (or of the folders beside it) named as it is (the
    same affixes) and holding other names (``x-image.png`` beside ``y-image.jpg`` photographs; ``images/dog``
    beside ``images/cat``): one kind of picture in two formats or two folders."""
    if j.kind != "unsure":
        return j.kind
    kinds = {
        o.kind
        for o in folder
        if o.kind in ("mask", "photo")
        and all(_named_as(f, o.family) for f in j.family.files)
        and _disjoint([o.family.files, j.family.files])
    }
    if len(kinds) == 1:
        (kind,) = kinds
        j.kind = kind
    return j.kind


def families(root: Path, files: list[Path]) -> list[Judged]:
    """Every family a folder's pictures form, each judged (see the module's docstring)."""
    cells: dict[tuple, list[Path]] = defaultdict(list)
    for f in files:
        rel = f.relative_to(root) if f.is_absolute() else f
        cells[(rel.parent, rel.suffix.lower(), len(tokens(rel.stem)))].append(rel)
    parts: dict[Path, list[Judged]] = defaultdict(list)
    for (folder, _, _), members in sorted(cells.items(), key=lambda kv: str(kv[0])):
        for part, sample, kind in _judge_cell(root, members):
            if kind != "unreadable":
                parts[folder].append(Judged(Family(root, part), sample, kind))
    by_folder: dict[tuple[Path, str], list[Judged]] = defaultdict(list)
    for folder, judged in parts.items():
        beside = [o for other, js in parts.items() if other != folder and other.parent == folder.parent for o in js]
        for j in judged:
            if _kind_beside(j, judged) == "unsure":
                _kind_beside(j, beside)
            by_folder[(folder, j.kind)].append(j)
    leaves = [u for parts in by_folder.values() for u in _gather(root, parts)]
    by_place: dict[tuple, list[Judged]] = defaultdict(list)
    for leaf in leaves:
        by_place[(leaf.kind, _signature(leaf.family.files[0]))].append(leaf)
    places = [u for group in by_place.values() for u in _gather(root, group)]
    out = places + _siblings(root, places)
    for j in list(out):
        for members in _variants(j.family.files):
            out.append(Judged(Family(root, members), j.sample, j.kind))
    return [j for j in out if j.family.files]


def describe_kinds(judged: list[Judged]) -> str:
    """How many pictures were read as each kind, in words."""
    count = Counter()
    for j in judged:
        count[j.kind] += len(j.family.files)
    return ", ".join(f"{n} {kind}" for kind, n in sorted(count.items()))


def median_score(judged: list[Judged]) -> float:
    scores = [s for j in judged for s in j.sample.scores]
    return float(np.median(scores)) if scores else 0.0
