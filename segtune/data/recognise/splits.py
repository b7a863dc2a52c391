"""The split a folder ships: split folders on both sides, or a file that lists ids per split."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from segtune.data.base import SPLITS
from segtune.data.recognise.choice import Pairing
from segtune.data.recognise.layout import Layout
from segtune.data.splitfiles import find_split_files, match_ids, read_split_file


def decide_split(root: Path, best: Pairing, key: str | None, dataset: dict[str, Any], layout: Layout) -> None:
    """Split folders when both sides have train and val folders; else a split file that lists the pairs' ids."""
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
