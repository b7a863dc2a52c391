"""Official splits as datasets ship them: one file listing ids per split (YAML, JSON, CSV or text), or one file
per split (``train.txt``, ``val.txt``, ``test.txt``: ids one a line, a CSV column, a JSON or YAML list).

Read the same way by `init` (which looks for such files anywhere in the folder) and by the folder reader
(``split: {file: ...}``, ``split: {train: ..., val: ..., test: ...}``). Listed ids are matched to the pairs' keys
leniently, as people write them: the key itself, a file name or stem, or what the pairing regex makes of it
(``001_img.jpg`` and ``001`` both mean the pair ``001``); failing those, the same id up to case, zero padding and
an affix every key shares (``28`` means ``028_image``).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segtune.data.base import PICTURE_EXTENSIONS
from segtune.errors import DataError

SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "trn": "train",
    "trainval": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "tst": "test",
}
SPLIT_COLUMNS = ("split", "set", "subset", "partition", "phase", "stage")
FILE_TYPES = (".yaml", ".yml", ".json", ".csv", ".tsv", ".txt", ".lst")
MAX_BYTES = 20_000_000  # a split file is a list of names; anything larger is something else
MAX_DEPTH = 4  # split files are looked for this many folders deep at most
MAX_CANDIDATES = 500  # and among this many files of those types at most
ID_HEADERS = {"id", "ids", "image", "images", "image_id", "filename", "file", "name", "names", "stem", "key", "path"}


def _split_name(text: Any) -> str | None:
    return SPLIT_NAMES.get(str(text).strip().lower())


def _from_mapping(raw: Any) -> dict[str, list[str]]:
    """``{train: [ids], val: [ids], test: [ids]}``, perhaps under one top-level key (``{splits: {...}}``)."""
    if isinstance(raw, dict) and len(raw) == 1:
        (only,) = raw.values()
        if isinstance(only, dict):
            raw = only
    if not isinstance(raw, dict):
        return {}
    out: dict[str, list[str]] = {}
    for key, ids in raw.items():
        split = _split_name(key)
        if split is not None and isinstance(ids, list) and all(isinstance(i, str | int) for i in ids):
            out.setdefault(split, []).extend(str(i) for i in ids)
    return out


def _from_rows(rows: list[list[str]]) -> dict[str, list[str]]:
    """Rows of a table: a header naming a split column (the id column is the first other one), or
    headerless ``id split`` / ``split id`` rows."""
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        return {}
    header = [c.strip().lower() for c in rows[0]]
    split_col = next((header.index(c) for c in SPLIT_COLUMNS if c in header), None)
    if split_col is not None and len(header) > 1:
        id_col = next(i for i in range(len(header)) if i != split_col)
        body = rows[1:]
    elif len(rows[0]) >= 2 and _split_name(rows[0][-1]) is not None:
        id_col, split_col, body = 0, len(rows[0]) - 1, rows
    elif len(rows[0]) >= 2 and _split_name(rows[0][0]) is not None:
        id_col, split_col, body = 1, 0, rows
    else:
        return {}
    out: dict[str, list[str]] = {}
    for row in body:
        if len(row) <= max(id_col, split_col):
            continue
        split = _split_name(row[split_col])
        if split is not None and row[id_col].strip():
            out.setdefault(split, []).append(row[id_col].strip())
    return out


def read_split_file(path: Path) -> dict[str, list[str]]:
    """Split name (train / val / test) -> the ids the file lists for it; {} when it lists no splits."""
    try:
        if path.stat().st_size > MAX_BYTES:
            return {}
        text = path.read_text(errors="replace")
    except OSError as e:
        raise DataError(f"{path}: cannot read the split file: {e.strerror or e}") from None
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            return _from_mapping(yaml.safe_load(text))
        if suffix == ".json":
            return _from_mapping(json.loads(text))
    except (yaml.YAMLError, json.JSONDecodeError):
        return {}
    if suffix in (".csv", ".tsv"):
        dialect = "excel-tab" if suffix == ".tsv" or "\t" in text.partition("\n")[0] else "excel"
        return _from_rows(list(csv.reader(text.splitlines(), dialect=dialect)))
    return _from_rows([re.split(r"[\s,;]+", line.strip()) for line in text.splitlines() if not line.startswith("#")])


def read_id_list(path: Path) -> list[str]:
    """The ids one split's list file holds: one a line (text: the first field), a CSV's first column (its header
    skipped), a JSON or YAML list (or a mapping holding one list). [] when the file holds none."""
    try:
        if path.stat().st_size > MAX_BYTES:
            return []
        text = path.read_text(errors="replace")
    except OSError as e:
        raise DataError(f"{path}: cannot read the split list: {e.strerror or e}") from None
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml", ".json"):
        try:
            raw = yaml.safe_load(text) if suffix != ".json" else json.loads(text)
        except (yaml.YAMLError, json.JSONDecodeError):
            return []
        if isinstance(raw, dict) and len(raw) == 1:
            (raw,) = raw.values()
        if isinstance(raw, list) and all(isinstance(i, str | int) and not isinstance(i, bool) for i in raw):
            return [str(i) for i in raw]
        return []
    if suffix in (".csv", ".tsv"):
        dialect = "excel-tab" if suffix == ".tsv" or "\t" in text.partition("\n")[0] else "excel"
        rows = [r for r in csv.reader(text.splitlines(), dialect=dialect) if r and r[0].strip()]
        if rows and rows[0][0].strip().lower() in ID_HEADERS:
            rows = rows[1:]
        return [r[0].strip() for r in rows]
    return [line.split()[0] for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class Assignment:
    """Which split each pair key goes to, and what the file listed that fits no pair or two splits."""

    splits: dict[str, str] = field(default_factory=dict)  # key -> split
    absent: list[str] = field(default_factory=list)  # listed ids with no pair
    twice: dict[str, list[str]] = field(default_factory=dict)  # key -> the splits listing it (more than one)
    loose: list[tuple[str, str]] = field(default_factory=list)  # (listed id, key) matched up to case, padding, affix

    def how(self) -> str:
        """How the ids matched, in words."""
        if not self.loose:
            return "every id as a pair's name"
        listed, key = self.loose[0]
        return (
            f"{len(self.loose)} of {len(self.splits)} ids up to case, zero padding or an affix every name shares "
            f"(e.g. {listed!r} for {key!r})"
        )


def canonical(text: str) -> str:
    """An id as loosely compared: lower case, numbers without their zero padding (``Case_028`` -> ``case_28``)."""
    return re.sub(r"\d+", lambda m: str(int(m.group())), text.lower())


def _shared_affixes(keys: list[str]) -> tuple[str, str]:
    """The start and end every key shares, whole words and separators (``_image`` of ``028_image``), never all
    of a key."""
    if len(keys) < 2:
        return "", ""
    split = [re.findall(r"[A-Za-z0-9]+|[^A-Za-z0-9]+", k) for k in keys]
    n = min(len(t) for t in split)
    start = 0
    while start < n - 1 and len({t[start] for t in split}) == 1:
        start += 1
    end = 0
    while end < n - 1 - start and len({t[-1 - end] for t in split}) == 1:
        end += 1
    return "".join(split[0][:start]), "".join(split[0][len(split[0]) - end :]) if end else ""


def _loose_index(keys: list[str]) -> tuple[dict[str, str], tuple[str, str]]:
    """canonical form -> key, for the forms exactly one key has: each key whole, and without the affixes every
    key shares."""
    prefix, suffix = _shared_affixes(keys)
    forms: dict[str, set[str]] = {}
    for key in keys:
        bare = key[len(prefix) : len(key) - len(suffix)] if suffix else key[len(prefix) :]
        for form in {canonical(key), canonical(bare)}:
            forms.setdefault(form, set()).add(key)
    return {form: next(iter(ks)) for form, ks in forms.items() if len(ks) == 1}, (prefix, suffix)


def _without_extension(name: str) -> str:
    """A listed id without its picture extension (``case.17.png``: ``case.17``; ``case.17`` stays whole)."""
    return name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in PICTURE_EXTENSIONS else name


def match_ids(listed: dict[str, list[str]], keys: Iterable[str], key_of: Callable[[str], str | None]) -> Assignment:
    """Listed ids -> pair keys: the id itself, what ``key_of`` (the pairing regex) makes of it as a file name
    (with or without its extension), its stem or its file name without folders; failing those, the one key that
    is the same up to case, zero padding and the affixes every key shares."""
    known = set(keys)
    loose, (prefix, suffix) = _loose_index(sorted(known))
    every = [_without_extension(Path(i).name) for ids in listed.values() for i in ids]
    listed_prefix, listed_suffix = _shared_affixes(every)  # what every listed id carries (``Case_`` of Case_0463)
    out = Assignment()
    for split, ids in listed.items():
        for listed_id in ids:
            name = Path(listed_id).name if "/" in listed_id or "\\" in listed_id else listed_id
            stem = _without_extension(name)
            candidates = (listed_id, name, key_of(name), key_of(f"{name}.x"), stem, key_of(f"{stem}.x"))
            key = next((c for c in candidates if c is not None and c in known), None)
            if key is None:
                bare = stem.removeprefix(prefix) if prefix else stem
                bare = bare.removesuffix(suffix) if suffix else bare
                own = stem.removeprefix(listed_prefix) if listed_prefix else stem
                own = own.removesuffix(listed_suffix) if listed_suffix else own
                forms = (stem, bare, key_of(f"{stem}.x") or stem, own)
                for form in map(canonical, forms):
                    if form in loose:
                        key = loose[form]
                        out.loose.append((listed_id, key))
                        break
            if key is None:
                out.absent.append(listed_id)
                continue
            previous = out.splits.get(key)
            if previous is not None and previous != split:
                out.twice.setdefault(key, [previous]).append(split)
            out.splits[key] = split
    return out


def find_split_files(root: Path, exclude: set[Path]) -> list[Path]:
    """Candidate split files anywhere under ``root`` (MAX_DEPTH folders deep at most): the files of the types
    above, nearest the root first."""
    out: list[Path] = []
    for depth in range(MAX_DEPTH + 1):
        pattern = "/".join(["*"] * (depth + 1))
        out += [p for p in sorted(root.glob(pattern)) if p.suffix.lower() in FILE_TYPES and p.is_file()]
        if len(out) > MAX_CANDIDATES:
            break
    return [p for p in out[:MAX_CANDIDATES] if p not in exclude]


def split_word(path: Path) -> tuple[str, str] | None:
    """``(split, the name with that word as {split})`` when a file's name names exactly one split
    (``train.txt``, ``val_list.csv``, ``test-ids.json``), else None."""
    words = re.findall(r"[A-Za-z0-9]+|[^A-Za-z0-9]+", path.stem)
    hits = [i for i, w in enumerate(words) if w.lower() in SPLIT_NAMES]
    if len(hits) != 1:
        return None
    i = hits[0]
    pattern = "".join(words[:i]) + "{split}" + "".join(words[i + 1 :]) + path.suffix.lower()
    return SPLIT_NAMES[words[i].lower()], pattern


def per_split_lists(candidates: list[Path]) -> list[dict[str, Path]]:
    """Files that list one split each, grouped as they ship (``train.txt``, ``val.txt``, ``test.txt`` in one
    folder, named alike): split -> file, for the groups with a train list and a val or test list. A
    ``trainval`` list is left out beside a train one."""
    groups: dict[tuple[Path, str], dict[str, list[Path]]] = {}
    for path in candidates:
        found = split_word(path)
        if found is not None:
            split, pattern = found
            groups.setdefault((path.parent, pattern), {}).setdefault(split, []).append(path)
    out = []
    for files in groups.values():
        chosen: dict[str, Path] = {}
        for split, paths in files.items():
            plain = [p for p in paths if "trainval" not in p.stem.lower()] or paths
            chosen[split] = sorted(plain)[0]
        if "train" in chosen and ("val" in chosen or "test" in chosen):
            out.append(chosen)
    return out
