"""Pairing pictures by a shared key, whatever the suffixes: how `init` finds which file is whose mask.

Pictures fall into *families*: files in alike folders (the same folder, or folders named alike up to their
digits and split names), with one extension and one shape of name. Within a family the tokens every name
shares at its start and end are its affixes (``_training``, ``_manual1``, ``ISIC_``, ``_segmentation``); what
is left is each file's key. A family whose names also differ in a first or last token that takes a few values
each repeated (``_1stHO`` / ``_2ndHO``: two annotators) is offered split by that token too. Two families pair
by their keys (in the same split folder when both have them); the pairing that pairs the most files wins,
and `init` says which files stayed unpaired. No list of folder names or suffixes is involved.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from segtune.data.splitfiles import SPLIT_NAMES

WORD = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9]+")
Key = tuple[str | None, str]  # (split folder or None, key)


def tokens(stem: str) -> list[str]:
    """``ISIC_0000000_segmentation`` -> ``['ISIC', '_', '0000000', '_', 'segmentation']``."""
    return WORD.findall(stem)


def split_of(relative: Path) -> str | None:
    """The split a picture's folders name (``images/train/x.png``: train), when exactly one is named."""
    hits = {SPLIT_NAMES[p.lower()] for p in relative.parts[:-1] if p.lower() in SPLIT_NAMES}
    return hits.pop() if len(hits) == 1 else None


def _folder_signature(relative: Path) -> tuple[str, ...]:
    """Folders named alike up to digits and split names: ``IMD002/IMD002_lesion`` and ``IMD003/IMD003_lesion``
    are one place, ``images/train`` and ``images/valid`` too."""
    return tuple("{split}" if p.lower() in SPLIT_NAMES else re.sub(r"\d+", "#", p) for p in relative.parts[:-1])


def _whole_word(text: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(text)}(?![A-Za-z0-9])")


@dataclass
class Family:
    """Files named alike in alike folders: one kind of picture (the images, the masks, one annotator's masks).

    ``affixes`` holds each split folder's (prefix, suffix): DRIVE names its pictures ``21_training.tif`` in
    training/ and ``01_test.tif`` in test/."""

    root: Path
    files: list[Path]  # relative to root
    affixes: dict[str | None, tuple[str, str]] = field(default_factory=dict)  # split -> (prefix, suffix)
    keys: dict[Key, Path] = field(default_factory=dict)  # (split, key) -> relative path

    @property
    def extension(self) -> str:
        return self.files[0].suffix

    @property
    def splits(self) -> set[str | None]:
        return {split for split, _ in self.keys}

    @property
    def prefixes(self) -> set[str]:
        return {p for p, _ in self.affixes.values()}

    @property
    def suffixes(self) -> set[str]:
        return {s for _, s in self.affixes.values()}

    def glob(self, split_folders: bool) -> str:
        """A glob matching this family's files: the key and differing folders as ``*``; split folders as
        ``{split}`` when ``split_folders`` (then ``split: folders`` reads them)."""
        patterns = []
        for (split, key), path in self.keys.items():
            parts = []
            for part in path.parts[:-1]:
                if split_folders and split is not None and SPLIT_NAMES.get(part.lower()) == split:
                    parts.append("{split}")
                else:  # the key where it stands as a whole word (IMD002/IMD002_lesion), never inside one
                    parts.append(_whole_word(key).sub("*", part) if key else part)
            patterns.append(parts)
        folders = [parts[0] if len(set(parts)) == 1 else "*" for parts in zip(*patterns, strict=True)]
        prefix = next(iter(self.prefixes)) if len(self.prefixes) == 1 else ""
        suffix = next(iter(self.suffixes)) if len(self.suffixes) == 1 else ""
        return re.sub(r"\*+", "*", "/".join([*folders, f"{prefix}*{suffix}{self.extension}"]))

    @property
    def label(self) -> str:
        return self.glob(split_folders=False)


def _affixes(stems: list[list[str]]) -> tuple[int, int]:
    """How many tokens every name shares at its start and at its end (never the whole name, never a
    separator left at the key's edge)."""
    n = min(len(t) for t in stems)
    start = 0
    while start < n - 1 and len({t[start] for t in stems}) == 1:
        start += 1
    end = 0
    while end < n - 1 - start and len({t[-1 - end] for t in stems}) == 1:
        end += 1
    return start, end


def _family(root: Path, files: list[Path]) -> Family:
    """One family: the affixes its names share (within each split folder), and each file's key."""
    family = Family(root, files)
    by_split: dict[str | None, list[Path]] = defaultdict(list)
    for f in files:
        by_split[split_of(f)].append(f)
    for split, members in by_split.items():
        stems = [tokens(f.stem) for f in members]
        start, end = _affixes(stems) if len(members) > 1 else (0, 0)
        family.affixes[split] = ("".join(stems[0][:start]), "".join(stems[0][len(stems[0]) - end :]))
        for f, t in zip(members, stems, strict=True):
            family.keys[(split, "".join(t[start : len(t) - end]))] = f
    return family


MAX_VARIANTS = 8  # annotators, views, kinds of mask: a few; more values than this are part of the key


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


def families(root: Path, files: Iterable[Path]) -> list[Family]:
    """Every family a folder's pictures form: each group of alike files as one family, and split by a variant
    word where it has one. Families of more than one file whose keys repeat are split by their folders."""
    groups: dict[tuple, list[Path]] = defaultdict(list)
    for f in files:
        rel = f.relative_to(root) if f.is_absolute() else f
        groups[(_folder_signature(rel), rel.suffix.lower(), len(tokens(rel.stem)))].append(rel)
    out = []
    for group in groups.values():
        for members in [group, *_variants(group)]:
            family = _family(root, members)
            if len(family.keys) < len(members):  # the same key twice: alike folders that are not one place
                by_folder: dict[Path, list[Path]] = defaultdict(list)
                for f in members:
                    by_folder[f.parent].append(f)
                out += [_family(root, fs) for fs in by_folder.values()]
            else:
                out.append(family)
    return out


def matched(images: Family, masks: Family) -> list[tuple[Key, Path, Path]]:
    """The pairs two families make: the same key, in the same split folder when both have split folders."""
    both_split = None not in images.splits and None not in masks.splits
    if both_split:
        return [(k, images.keys[k], masks.keys[k]) for k in sorted(set(images.keys) & set(masks.keys), key=str)]
    by_key = {k: p for (_, k), p in masks.keys.items()}
    return [((s, k), p, by_key[k]) for (s, k), p in sorted(images.keys.items(), key=str) if k in by_key]


def key_regex(images: Family, masks: Family) -> str | None:
    """One regex whose group is the key of both families' file names, or None when the stems are the keys."""

    def alternatives(options: set[str]) -> str:
        written = sorted(re.escape(o) for o in options if o)
        if not written:
            return ""
        if len(written) == 1 and "" not in options:
            return written[0]
        group = f"(?:{'|'.join(written)})"
        return group + "?" if "" in options else group

    prefixes, suffixes = images.prefixes | masks.prefixes, images.suffixes | masks.suffixes
    if prefixes == {""} and suffixes == {""}:
        return None
    return rf"^{alternatives(prefixes)}(.+?){alternatives(suffixes)}\.\w+$"
