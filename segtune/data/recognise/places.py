"""Where each kind of picture is: alike files, judged by content, gathered into families.

1. *Cells*: the pictures of one folder with one extension and one name shape (how many tokens, digits or letters
   first and last), each judged from a
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segtune.data.recognise import content
from segtune.data.recognise.content import MASK_SCORE, PHOTO_SCORE, Sample
from segtune.data.recognise.pairing import Family, shared_affixes, split_of, tokens
from segtune.data.splitfiles import SPLIT_NAMES

MAX_VARIANTS = 8  # annotators, views, kinds of mask: a few; more values than this are part of the key
WEAK = (0.8, 0.97)  # a picture scoring in here is weakly of its kind: its name may overrule its pixels
OUTLIERS = 0.2  # a kind this small a share of its cell may be outliers the names overrule
MORE_EVIDENCE = 200  # an unsure cell is judged on up to this many of its pictures before init asks


@dataclass
class Judged:
    """A family and what its pictures hold: ``kind`` is mask, photo or unsure."""

    family: Family
    sample: Sample
    kind: str
    scores: dict[Path, float] = field(default_factory=dict)  # each picture's own score, where judged alone

    def weak(self, f: Path) -> bool:
        """Whether the kind of ``f`` rests on a score near the thresholds (its own, else its part's median)."""
        return WEAK[0] <= self.scores.get(f, self.sample.score) < WEAK[1]

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


def _judge_cell(root: Path, files: list[Path]) -> list[tuple[list[Path], Sample, str, dict[Path, float]]]:
    """A cell as one kind, or split by kind when its sample holds several."""
    sample = content.sample([root / f for f in files])
    kind = verdict(sample)
    n = len(sample.scores)
    mixed = sample.masks > 0 and sample.photos > 0  # one of each: both kinds share the cell's name shape
    if not mixed and kind != "unsure":
        return [(files, sample, kind, {})]
    if not mixed and len(files) > n:  # near the threshold: judge more of the cell before splitting it
        sample = content.judge(content.spread([root / f for f in files], MORE_EVIDENCE))
        kind = verdict(sample)
        if kind != "unsure" or not (sample.masks and sample.photos):
            return [(files, sample, kind, {})]
    by_kind: dict[str, list[tuple[Path, Sample]]] = defaultdict(list)
    for f in files:  # both kinds in one cell: each picture by itself
        one = content.judge([root / f])
        by_kind[verdict(one)].append((f, one))
    _names_decide(by_kind, len(files))
    sure = [k for k in by_kind if k in ("mask", "photo")]
    if "unsure" in by_kind and len(sure) == 1:  # a cell of one name shape and one sure kind: the unsure are of it
        by_kind[sure[0]] += by_kind.pop("unsure")
    return [
        ([f for f, _ in group], merge_samples([s for _, s in group]), k, {f: one.score for f, one in group})
        for k, group in by_kind.items()
    ]


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


def _named_kind(judged: list[Judged]) -> list[Judged]:
    """Pictures of one place named alike take the kind most of them are, when their own pixels said it weakly
    (near the thresholds) or not at all: ``x-mask.jpg``
    among ``y-mask.jpg`` masks is a mask, whatever its own pixels said (thin lines in JPEG can score as a
    photograph does; a photograph on a black backdrop as a mask). Named alike: carrying the same of the affixes
    each kind's names share."""
    kinds = ("mask", "photo")
    stems = {kind: [f.stem for j in judged if j.kind == kind for f in j.family.files] for kind in kinds}
    for kind, other in (kinds, kinds[::-1]):  # a few weak pictures among many of the other kind: of that kind
        few = [j for j in judged if j.kind in (kind, "unsure")]
        n_few = sum(len(j.family.files) for j in few)  # the unsure count: ten unsure beside ten masks are no few
        if len(stems[other]) >= max(2, 3 * n_few) and all(j.weak(f) for j in few for f in j.family.files):
            return [Judged(j.family, j.sample, other, j.scores) if j in few else j for j in judged]
    affixes = []
    for kind, other in (kinds, kinds[::-1]):
        p, s = shared_affixes(stems[kind]) if len(stems[kind]) >= 2 else ("", "")
        # an affix tells the kinds apart only when most of the other kind's names lack it (Case- of Case-157.tif
        # and Case-157-L.png tells nothing)
        lacking = sum(not (t.startswith(p) and t.endswith(s)) for t in stems[other])
        if (p or s) and lacking > len(stems[other]) / 2:
            affixes.append((p, s))
    if not affixes:
        return judged

    def signature(f: Path) -> tuple[bool, ...]:
        return tuple(f.stem.startswith(p) and f.stem.endswith(s) for p, s in affixes)

    votes: dict[tuple[bool, ...], Counter] = defaultdict(Counter)
    for j in judged:
        for f in j.family.files:
            votes[signature(f)][j.kind] += 1
    out = []
    for j in judged:
        by_kind: dict[str, list[Path]] = defaultdict(list)
        for f in j.family.files:
            count = votes[signature(f)]
            top, n = max(((k, count[k]) for k in kinds), key=lambda kv: kv[1])
            sure = n >= 2 and n > sum(count[k] for k in kinds) - n and (j.kind == "unsure" or j.weak(f))
            by_kind[top if sure else j.kind].append(f)
        out += [Judged(Family(j.family.root, fs), j.sample, kind, j.scores) for kind, fs in by_kind.items()]
    return out


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


def _shape(stem: str) -> tuple[int, str, str]:
    """A name's shape: how many tokens, and whether its first and last are digits, letters or both
    (``Bengal.795`` and ``Bengal.795.gtFine`` differ; ``Abyssinian_1`` and ``great_pyrenees_1`` only in length)."""
    words = [t for t in tokens(stem) if t[0].isalnum()] or [stem]

    def kind(word: str) -> str:
        return "d" if word.isdigit() else "a" if word.isalpha() else "m"

    return len(tokens(stem)), kind(words[0]), kind(words[-1])


def families(root: Path, files: list[Path]) -> list[Judged]:
    """Every family a folder's pictures form, each judged (see the module's docstring)."""
    cells: dict[tuple, list[Path]] = defaultdict(list)
    for f in files:
        rel = f.relative_to(root) if f.is_absolute() else f
        cells[(rel.parent, rel.suffix.lower(), *_shape(rel.stem))].append(rel)
    parts: dict[Path, list[Judged]] = defaultdict(list)
    for (folder, *_), members in sorted(cells.items(), key=lambda kv: str(kv[0])):
        for part, sample, kind, scores in _judge_cell(root, members):
            if kind != "unreadable":
                parts[folder].append(Judged(Family(root, part), sample, kind, scores))
    by_place: dict[tuple[str, ...], list[Path]] = defaultdict(list)
    for folder in parts:
        by_place[_signature(folder / "x")[:-1]].append(folder)
    for folders in by_place.values():  # the folders of one parent (images/train, images/val; masks/cat, masks/dog)
        voted = _named_kind([j for folder in folders for j in parts[folder]])
        for folder in folders:
            parts[folder] = [j for j in voted if j.family.files[0].parent == folder]
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
