"""Pairing pictures by a shared key, whatever their tokens, case, extensions and affixes: how `init` finds which
file is whose mask.

A *family* is one kind of picture (the images, the masks, one annotator's masks): files in alike folders, in any
mix of extensions and name shapes (places.py gathers them). Two families pair by their files' keys, with the
reader `check` and `run` use (data/folder.py ``pair_files``): the same key, in the same split folder when both
have them, then the same key up to case. The key is the plain stem first; only when the plain stems do not pair
are affixes stripped: the words every name of a family shares at its start and end (``_mask``, ``-label``,
``_segmentation``, ``ISIC_``, and ones nobody listed), the fewest that pair the most; only when no choice of them
pairs every file are they also tried cut back word by word (masks ``label-case_00210`` all share ``label-case_``,
which swallows the id's first word of pictures named ``Case_00631`` and ``case_00210``: ``label-`` pairs them). No
list of folder names or suffixes is involved.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from segtune.data.base import BadFile
from segtune.data.folder import Pairs, pair_files
from segtune.data.splitfiles import SPLIT_NAMES
from segtune.errors import DataError

WORD = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9]+")
WORD_CHARS = re.compile(r"[A-Za-z0-9]+")  # a word of a name, as :func:`tokens` splits it
Key = tuple[str | None, str]  # (split folder or None, key)


def tokens(stem: str) -> list[str]:
    """``ISIC_0000000_segmentation`` -> ``['ISIC', '_', '0000000', '_', 'segmentation']``."""
    return WORD.findall(stem)


def split_of(relative: Path) -> str | None:
    """The split a picture's folders name (``images/train/x.png``: train), when exactly one is named."""
    hits = {SPLIT_NAMES[p.lower()] for p in relative.parts[:-1] if p.lower() in SPLIT_NAMES}
    return hits.pop() if len(hits) == 1 else None


def _whole_word(text: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(text)}(?![A-Za-z0-9])")


def shared_affixes(stems: list[str]) -> tuple[str, str]:
    """The tokens every name shares at its start and at its end (never the whole name, never a separator left at
    the key's edge); ('', '') for a single name."""
    if len(stems) < 2:
        return "", ""
    split = [tokens(s) for s in stems]
    n = min(len(t) for t in split)
    start = 0
    while start < n - 1 and len({t[start] for t in split}) == 1:
        start += 1
    end = 0
    while end < n - 1 - start and len({t[-1 - end] for t in split}) == 1:
        end += 1
    first = split[0]
    return "".join(first[:start]), "".join(first[len(first) - end :]) if end else ""


@dataclass
class Family:
    """Files of one kind in alike folders. ``affixes`` holds each split folder's (prefix, suffix) shared by all
    its names: DRIVE names its pictures ``21_training.tif`` in training/ and ``01_test.tif`` in test/."""

    root: Path
    files: list[Path]  # relative to root
    affixes: dict[str | None, tuple[str, str]] = field(default_factory=dict)  # split -> (prefix, suffix)

    def __post_init__(self) -> None:
        by_split: dict[str | None, list[str]] = defaultdict(list)
        for f in self.files:
            by_split[split_of(f)].append(f.stem)
        self.affixes = {split: shared_affixes(stems) for split, stems in by_split.items()}

    @property
    def splits(self) -> set[str | None]:
        return set(self.affixes)

    @property
    def in_split_folders(self) -> bool:
        return None not in self.splits

    @property
    def extensions(self) -> set[str]:
        return {f.suffix for f in self.files}

    @property
    def prefixes(self) -> set[str]:
        return {p for p, _ in self.affixes.values()}

    @property
    def suffixes(self) -> set[str]:
        return {s for _, s in self.affixes.values()}

    @property
    def prefix_options(self) -> list[set[str]]:
        """The shared prefixes, then the same cut back word by word (``label-case_``, then ``label-``): a shared
        prefix can swallow the id's own first word when every name of the family spells it alike
        (``label-case_00210`` against pictures named ``Case_00631`` and ``case_00210``)."""
        return _cut_options(self.prefixes, keep_start=True)

    @property
    def suffix_options(self) -> list[set[str]]:
        """The shared suffixes, then the same cut back word by word from their start (``_Left_mask``, ``_mask``)."""
        return _cut_options(self.suffixes, keep_start=False)

    def keyed(self, split_folders: bool) -> list[tuple[Path, str | None]]:
        """The files as the reader lists them: absolute, each with its split folder when split folders are read."""
        return [(self.root / f, split_of(f) if split_folders else None) for f in self.files]

    def glob(self, split_folders: bool) -> str:
        """A glob matching this family's files: folders that differ as ``*`` (split folders as ``{split}`` when
        ``split_folders``: then ``split: folders`` reads them); the name as the affixes every name shares around a
        ``*``, with the extension when there is one."""
        parts_of = [f.parts[:-1] for f in self.files]
        if len({len(p) for p in parts_of}) != 1:
            folders = ["**"]
        else:
            folders = [self._folder(i, column, split_folders) for i, column in enumerate(zip(*parts_of, strict=True))]
        prefix = next(iter(self.prefixes)) if len(self.prefixes) == 1 else ""
        suffix = next(iter(self.suffixes)) if len(self.suffixes) == 1 else ""
        extensions = self.extensions
        name = f"{prefix}*{suffix}" + (next(iter(extensions)) if len(extensions) == 1 else ".*")
        return re.sub(r"\*+", "*", "/".join([*folders, name]))

    def _bare(self, f: Path) -> str:
        """A file's stem without the affixes its family shares."""
        prefix, suffix = self.affixes[split_of(f)]
        stem = f.stem.removeprefix(prefix)
        return stem.removesuffix(suffix) if suffix else stem

    def _folder(self, i: int, column: tuple[str, ...], split_folders: bool) -> str:
        """The glob of the folders at depth i: ``{split}``, the one name, the picture's own key where a folder is
        named after each picture (``IMD002/IMD002_lesion``: ``*/*_lesion``), else ``*``."""
        if split_folders and all(c.lower() in SPLIT_NAMES for c in column):
            return "{split}"
        if len(set(column)) == 1:
            return column[0]
        named = {_whole_word(self._bare(f)).sub("*", f.parts[i]) if self._bare(f) else "*" for f in self.files}
        return named.pop() if len(named) == 1 else "*"

    @property
    def label(self) -> str:
        return self.glob(split_folders=False)


def _cut(affix: str, words: int, keep_start: bool) -> str:
    """``affix`` less its last (``keep_start``) or first ``words`` words, each word with the separator beside it;
    '' when it has no more."""
    split = tokens(affix) if keep_start else tokens(affix)[::-1]  # a suffix is cut from its start: reversed
    for _ in range(words):  # the separator at the end, then the word before it
        while split and not _word(split[-1]):
            split.pop()
        if split:
            split.pop()
    return "".join(split if keep_start else split[::-1])


def _word(token: str) -> bool:
    return bool(WORD_CHARS.fullmatch(token))


def _has_word(text: str) -> bool:
    return bool(WORD_CHARS.search(text))


def _cut_options(affixes: set[str], keep_start: bool) -> list[set[str]]:
    """``affixes`` whole, then cut back one word, two, ...: each option a set, the whole ones first, no empty
    option, no option twice, no cut that is separators alone."""
    options: list[set[str]] = []
    depth = 0
    while True:
        option = {c for a in affixes if (c := _cut(a, depth, keep_start) if a else "") and (depth == 0 or _has_word(c))}
        if not option:
            return options
        if option not in options:
            options.append(option)
        depth += 1


def key_regex(prefixes: set[str], suffixes: set[str]) -> str | None:
    """One regex whose group is the key of every name: the given prefixes and suffixes stripped where a name has
    them (each optional), or None when nothing is stripped."""

    def alternatives(options: set[str]) -> str:
        written = sorted((re.escape(o) for o in options if o), key=lambda o: (-len(o), o))
        if not written:
            return ""
        return f"(?:{'|'.join(written)})?"

    if not any(prefixes) and not any(suffixes):
        return None
    return rf"^{alternatives(prefixes)}(.+?){alternatives(suffixes)}\.\w+$"


@dataclass
class Matched:
    """What two families pair to, read as the reader reads the spec: the key regex, the pairs by key, and the
    files that stayed unpaired."""

    key: str | None
    pairs: Pairs
    unpaired: list[BadFile]
    stripped: int  # how many affixes the key strips: fewer is plainer


def _pair(images: Family, masks: Family, key: str | None, split_folders: bool) -> Pairs | None:
    try:
        pairs, _ = pair_files(images.keyed(split_folders), masks.keyed(split_folders), re.compile(key) if key else None)
    except DataError:  # two files with one key: this key does not tell them apart
        return None
    return pairs


Options = list[tuple[str, list[set[str]]]]  # (which affix, its options: whole, then cut back word by word)
Best = tuple[int, int, str | None, Pairs]  # (pairs, affixes stripped, key, the pairs)


def match(images: Family, masks: Family) -> Matched | None:
    """How ``images`` and ``masks`` pair best: by the plain stems when those pair every file they can, else with
    the fewest shared affixes stripped that pair the most. Only when no choice of whole affixes pairs every file it
    can are the affixes also tried cut back word by word (a shared prefix that swallowed the id's first word), and
    a cut is taken only where it pairs more files. None when nothing pairs."""
    split_folders = images.in_split_folders and masks.in_split_folders
    most = min(len(images.files), len(masks.files))
    options: Options = [
        ("image prefix", images.prefix_options),
        ("image suffix", images.suffix_options),
        ("mask prefix", masks.prefix_options),
        ("mask suffix", masks.suffix_options),
    ]
    options = [(name, values) for name, values in options if values]
    tried: dict[str | None, Pairs | None] = {}  # key -> its pairs: the cut pass meets the whole keys again

    def pairs_of(key: str | None) -> Pairs | None:
        if key not in tried:
            tried[key] = _pair(images, masks, key, split_folders)
        return tried[key]

    best = _most_pairs([(name, values[:1]) for name, values in options], pairs_of, most, None)
    if best is None or best[0] < most:
        best = _most_pairs(options, pairs_of, most, best)
    if best is None or best[0] == 0:
        return None
    count, stripped, key, pairs = best
    _, unpaired = pair_files(images.keyed(split_folders), masks.keyed(split_folders), re.compile(key) if key else None)
    return Matched(key, pairs, unpaired, stripped)


def _most_pairs(
    options: Options, pairs_of: Callable[[str | None], Pairs | None], most: int, best: Best | None
) -> Best | None:
    """The key that pairs more files than ``best``, stripping the fewest affixes (each affix's options in order);
    the first that pairs ``most`` ends the search (nothing can pair more)."""
    for n in range(len(options) + 1):
        for names in itertools.combinations(options, n):
            for chosen in itertools.product(*([(name, v) for v in values] for name, values in names)):
                prefixes = set().union(*(v for name, v in chosen if name.endswith("prefix")))
                suffixes = set().union(*(v for name, v in chosen if name.endswith("suffix")))
                key = key_regex(prefixes, suffixes)
                pairs = pairs_of(key)
                if pairs is not None and (best is None or len(pairs) > best[0]):
                    best = (len(pairs), n, key, pairs)
                    if best[0] == most:
                        return best
    return best
