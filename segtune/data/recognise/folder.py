"""Any images + masks tree, decided from all its files at once by the rules of this package, each stated with its
reason; the spec's pairing is then read back with the reader `check` and `run` use: it must pair the same files."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from segtune.data.base import MaskReading, read_mask
from segtune.data.labels import ValueCensus
from segtune.data.recognise import content
from segtune.data.recognise.choice import Judged, Pairing, choose, image_choice, mask_choice
from segtune.data.recognise.layout import Layout
from segtune.data.recognise.pairing import Family, families, key_regex
from segtune.data.recognise.pictures import pictures
from segtune.data.recognise.sizes import decide_sizes
from segtune.data.recognise.splits import decide_split
from segtune.data.recognise.values import decide_values
from segtune.errors import DataError

LISTED = 5  # unpaired files named in init's note


def folder_layout(root: Path) -> Layout:
    """Any images + masks tree, recognised by content and by names."""
    files = pictures(root)
    judged = [Judged(f, content.sample([root / p for p in f.files])) for f in families(root, files)]
    best, others = choose(root, judged)
    images, masks = best.images.family, best.masks.family
    split_folders = (
        None not in images.splits
        and None not in masks.splits
        and {"train", "val"} <= {s for (s, _), _, _ in best.pairs}
    )
    dataset: dict[str, Any] = {
        "name": "folder",
        "root": str(root),
        "images": images.glob(split_folders),
        "masks": masks.glob(split_folders),
    }
    key = key_regex(images, masks)
    how = f"images + masks: {len(best.pairs)} pairs ({dataset['images']} with {dataset['masks']}"
    how += ", paired by the name left once their own affixes are stripped)" if key else ", by file name)"
    layout = Layout("folder", dataset, how)
    if key:
        dataset["key"] = key
        layout.comments["key"] = f"the part of the name both sides share: {_affix_text(images, masks)} stripped"
    for other in others:
        if other.masks.family is not masks:
            layout.comments.setdefault("masks", mask_choice(best, other, split_folders))
        elif other.images.family is not images:
            layout.comments.setdefault("images", image_choice(best, other))
    decide_split(root, best, key, dataset, layout)
    paired = {p for _, i, m in best.pairs for p in (i, m)}
    unpaired = sorted(str(p) for p in [*images.files, *masks.files] if p not in paired)
    if unpaired:
        named = ", ".join(unpaired[:LISTED]) + (f" and {len(unpaired) - LISTED} more" if len(unpaired) > LISTED else "")
        layout.notes.append(f"{len(unpaired)} pictures found no partner and are left out: {named}")
    reading = MaskReading(rgb=best.masks.sample.colour, lossy=True)
    census = ValueCensus()
    for _, _, mask in best.pairs:
        with contextlib.suppress(DataError):  # an unreadable mask is a bad file: check names it
            census.add(read_mask(root / mask, reading))
    lossy = any(content.is_lossy_file(root / m) for _, _, m in best.pairs[:: max(1, len(best.pairs) // 20)])
    decide_values(dataset, layout, census, best.masks.sample.colour, lossy)
    decide_sizes(root, best, dataset, layout)
    _same_pairs(dataset, best)
    return layout


def _affix_text(images: Family, masks: Family) -> str:
    parts = []
    for family, side in ((images, "images"), (masks, "masks")):
        affixes = sorted(a for a in family.prefixes | family.suffixes if a)
        parts.append(f"{' and '.join(repr(a) for a in affixes) or 'nothing'} on the {side}")
    return ", ".join(parts)


def _same_pairs(dataset: dict[str, Any], best: Pairing) -> None:
    """The spec's globs and key, read by the folder reader `check` and `run` use, must pair exactly these files."""
    from segtune.data.folder import index_records
    from segtune.spec import validate

    probe = validate({"study": "init", "dataset": dataset}, source="init")
    records, _ = index_records(probe.dataset)
    root = Path(dataset["root"])
    written = {(r.image.resolve(), r.mask.resolve()) for r in records}
    chosen = {((root / i).resolve(), (root / m).resolve()) for _, i, m in best.pairs}
    if written != chosen:
        extra = sorted(written - chosen)[:1] or sorted(chosen - written)[:1]
        raise DataError(
            f"{root}: init found {len(chosen)} pairs but the spec it would write pairs {len(written)} (e.g. "
            f"{extra[0][0].name} with {extra[0][1].name}); write the dataset section by hand (README: folder)"
        )
