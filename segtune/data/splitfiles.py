"""Official splits as datasets ship them: one file listing ids per split (YAML, JSON, CSV or text).

Read the same way by `init` (which looks for such a file) and by the folder reader (``split: {file: ...}``).
Listed ids are matched to the pairs' keys leniently, as people write them: the key itself, a file name or
stem, or what the pairing regex makes of it (``001_img.jpg`` and ``001`` both mean the pair ``001``).
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
FILE_TYPES = (".yaml", ".yml", ".json", ".csv", ".tsv", ".txt")
MAX_BYTES = 20_000_000  # a split file is a list of names; anything larger is something else


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


@dataclass
class Assignment:
    """Which split each pair key goes to, and what the file listed that fits no pair or two splits."""

    splits: dict[str, str] = field(default_factory=dict)  # key -> split
    absent: list[str] = field(default_factory=list)  # listed ids with no pair
    twice: dict[str, list[str]] = field(default_factory=dict)  # key -> the splits listing it (more than one)


def match_ids(listed: dict[str, list[str]], keys: Iterable[str], key_of: Callable[[str], str | None]) -> Assignment:
    """Listed ids -> pair keys: the id itself, what ``key_of`` (the pairing regex) makes of it as a file name
    (with or without its extension), or its stem."""
    known = set(keys)
    out = Assignment()
    for split, ids in listed.items():
        for listed_id in ids:
            stem = Path(listed_id).stem if "." in listed_id else listed_id
            candidates = (listed_id, key_of(listed_id), key_of(f"{listed_id}.x"), stem, key_of(f"{stem}.x"))
            key = next((c for c in candidates if c is not None and c in known), None)
            if key is None:
                out.absent.append(listed_id)
                continue
            previous = out.splits.get(key)
            if previous is not None and previous != split:
                out.twice.setdefault(key, [previous]).append(split)
            out.splits[key] = split
    return out


def find_split_files(root: Path, exclude: set[Path]) -> list[Path]:
    """Candidate split files under ``root`` (two folders deep at most): the files of the types above."""
    out = []
    for pattern in ("*", "*/*", "*/*/*"):
        out += [p for p in sorted(root.glob(pattern)) if p.suffix.lower() in FILE_TYPES and p.is_file()]
    return [p for p in out if p not in exclude]
