"""The split a folder ships: split folders on both sides, one file listing every split, or one file per split
(data/splitfiles.py), anywhere in the folder; else a seeded draw. `init` says which file it used and how the ids
matched the pairs; ids that match no pair, or a pair listed in two splits, are named."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segtune.data.base import SPLITS
from segtune.data.folder import VAL_FRACTION, VAL_SEED, file_key
from segtune.data.recognise.choice import Pairing
from segtune.data.recognise.layout import Layout
from segtune.data.splitfiles import (
    Assignment,
    find_split_files,
    match_ids,
    per_split_lists,
    read_id_list,
    read_split_file,
)


@dataclass
class Source:
    """One shipped split: where it is listed, what it lists, and how that matched the pairs."""

    files: list[Path]  # one file, or one per split
    listed: dict[str, list[str]]
    found: Assignment
    per_split: bool = False

    def spec(self, root: Path) -> dict[str, Any]:
        if len(self.files) == 1 and not self.per_split:
            return {"file": self.files[0].relative_to(root).as_posix()}
        return {split: path.relative_to(root).as_posix() for split, path in zip(self.listed, self.files, strict=True)}

    def where(self, root: Path) -> str:
        return ", ".join(p.relative_to(root).as_posix() for p in self.files)


def _sources(root: Path, keys: set[str], key_of: Any) -> list[Source]:
    candidates = find_split_files(root, set())
    out = []
    for path in candidates:
        listed = read_split_file(path)
        if listed and "train" in listed and len(listed) >= 2:
            out.append(Source([path], listed, match_ids(listed, keys, key_of)))
    for group in per_split_lists(candidates):
        listed = {split: read_id_list(group[split]) for split in SPLITS if split in group}
        if all(listed.values()):
            files = [group[split] for split in listed]
            out.append(Source(files, listed, match_ids(listed, keys, key_of), per_split=True))
    return out


def decide_split(root: Path, best: Pairing, key: str | None, dataset: dict[str, Any], layout: Layout) -> None:
    """Split folders when both sides have them; else the shipped split file (or files) whose ids match the most
    pairs, when they list every pair; else the seeded draw (the spec's default)."""
    if best.split_folders:
        splits = {s for (s, _), _, _ in best.pairs}
        dataset["split"] = "folders"
        why = f"split folders: {', '.join(s for s in SPLITS if s in splits)}"
        if "val" not in splits:
            why += f"; no val folder: val is carved from train ({VAL_FRACTION:g}, seed {VAL_SEED})"
        layout.comments["split"] = why
        return
    keys = {k for (_, k), _, _ in best.pairs}
    pattern = re.compile(key) if key else None
    sources = [
        s
        for s in _sources(root, keys, lambda name: file_key(pattern, Path(name)))
        if len(s.found.splits) >= len(keys) / 2 and len(s.found.absent) <= sum(map(len, s.listed.values())) / 2
    ]
    if not sources:
        return
    source = max(sources, key=lambda s: (len(s.found.splits), -len(s.found.absent), not s.per_split, s.where(root)))
    where, found = source.where(root), source.found
    counts = ", ".join(f"{s} {len(source.listed[s])}" for s in SPLITS if s in source.listed)
    why = f"the official split in {where} ({counts} ids; matched {found.how()})"
    unpaired = sorted(keys - set(found.splits))
    if unpaired:
        layout.notes.append(
            f"{where} lists {len(found.splits)} of the {len(keys)} pairs ({len(unpaired)} in no split, e.g. "
            f"{unpaired[0]!r}): not used, a seeded draw instead; list them all to use it"
        )
        return  # the reader refuses pairs in no split: keep the seeded draw rather than write a spec that fails
    spec = source.spec(root)
    if "val" not in source.listed:
        why += f"; no val list: val is carved from train ({VAL_FRACTION:g}, seed {VAL_SEED})"
    if found.twice:
        spec["wins"] = "test"
        first, both = next(iter(found.twice.items()))
        splits = " and ".join(sorted(set(both), key=SPLITS.index))
        why += (
            f"; CHOICE: {len(found.twice)} id(s) listed in two splits (e.g. {first!r} in {splits}): "
            "each goes to test, so no test picture is trained on; set wins to train or val to change it"
        )
        layout.notes.append(f"{where} lists {len(found.twice)} id(s) in two splits: they go to test (see the comment)")
    if found.absent:
        named = ", ".join(repr(a) for a in found.absent[:3])
        layout.notes.append(f"{where} lists {len(found.absent)} ids with no pair ({named}): left out")
        dataset["skip_bad_files"] = True
        layout.comments.setdefault(
            "skip_bad_files",
            f"CHOICE: {where} lists {len(found.absent)} ids no image + mask has ({named}); they are left out",
        )
    dataset["split"] = spec
    layout.comments["split"] = why
