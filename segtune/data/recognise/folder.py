"""Any images + masks tree, decided from all its files at once by the rules of this package, each stated with its
reason. The pairs init reports are the reader's: the spec's globs and key are read back with the reader `check`
and `run` use, and a pairing they would read otherwise is never written."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from segtune.data.base import BadFile, MaskReading, read_mask
from segtune.data.labels import ValueCensus
from segtune.data.recognise.choice import HAND, Pairing, alternatives, candidates, image_choice, mask_choice
from segtune.data.recognise.layout import Layout
from segtune.data.recognise.levels import Audit, Evidence, audit
from segtune.data.recognise.pictures import pictures
from segtune.data.recognise.places import Judged, families
from segtune.data.recognise.sizes import decide_sizes
from segtune.data.recognise.splits import decide_split
from segtune.data.recognise.values import Auditor, decide_values, is_noisy
from segtune.errors import DataError

LISTED = 5  # unpaired files named in init's note
CLEAR = 0.75  # the pairs are the clear majority: at least this share of each side's files pairs
TRIED = 8  # pairings as good as the best tried through the reader, for the one whose spec reads back cleanest


def folder_layout(root: Path) -> Layout:
    """Any images + masks tree, recognised by content and by names."""
    judged = families(root, pictures(root))
    found = candidates(root, judged)
    best, dataset, problems = _written(root, found, judged)
    others = alternatives(best, found)
    images, masks = dataset["images"], dataset["masks"]
    key = dataset.get("key")
    how = f"images + masks: {len(best.pairs)} pairs ({images} with {masks}"
    how += ", paired by the name left once their own affixes are stripped)" if key else ", by file name)"
    layout = Layout("folder", dataset, how)
    if key:
        layout.comments["key"] = f"the part of the name both sides share: {_affix_text(key)} stripped"
    for other in others:
        if other.masks.family is not best.masks.family:
            layout.comments.setdefault("masks", mask_choice(best, other, best.split_folders))
        elif other.images.family is not best.images.family:
            layout.comments.setdefault("images", image_choice(best, other))
    _unpaired(root, best, problems, dataset, layout)
    decide_split(root, best, key, dataset, layout)
    masks, census, evidence = _read_masks(root, best)
    decide_values(dataset, layout, census, masks.colour, best.masks.sample.lossy_format, evidence, _auditor(masks))
    decide_sizes(root, best, dataset, layout)
    _reads_back(dataset)
    return layout


def _spec_of(root: Path, p: Pairing) -> dict[str, Any]:
    dataset: dict[str, Any] = {
        "name": "folder",
        "root": str(root),
        "images": p.images.family.glob(p.split_folders),
        "masks": p.masks.family.glob(p.split_folders),
    }
    if p.matched.key:
        dataset["key"] = p.matched.key
    if p.split_folders:
        dataset["split"] = "folders"
    return dataset


def _index(dataset: dict[str, Any]) -> tuple[list, list[BadFile]]:
    from segtune.data.folder import index_records
    from segtune.spec import validate

    probe = validate({"study": "init", "dataset": {"classes": ["a", "b"], **dataset}}, source="init")
    return index_records(probe.dataset)


def _pairs_of(records: list) -> set[tuple[Path, Path]]:
    return {(r.image.resolve(), r.mask.resolve()) for r in records}


def _exclude(root: Path, dataset: dict[str, Any], lone: list[BadFile], judged: list[Judged], best: Pairing) -> None:
    """Masks of another family that the images' glob also matches (a second annotator's ``x_mask2.png`` beside
    ``x.png`` and ``x_mask.png``): left out by the key, which no longer matches their names."""
    lone_files = {p.path.resolve() for p in lone if p.kind == "image without a mask"}
    guards: list[str] = []
    for j in judged:
        files = {(root / f).resolve() for f in j.family.files}
        if j.kind != "mask" or j is best.masks or not files <= lone_files:
            continue  # a family all of whose files the images' glob takes and leaves unpaired
        guards += [rf"(?!.*{re.escape(s)}\.\w+$)" for s in j.family.suffixes - best.images.family.suffixes if s]
        guards += [rf"(?!{re.escape(p)})" for p in j.family.prefixes - best.images.family.prefixes if p]
    if guards:
        body = dataset.get("key", r"^(.+?)\.\w+$").removeprefix("^")
        dataset["key"] = "^" + "".join(dict.fromkeys(guards)) + body


def _read_back(root: Path, p: Pairing, judged: list[Judged]) -> tuple[dict[str, Any], list[BadFile]] | None:
    """The dataset section for ``p`` and the files its globs leave unpaired, when the reader pairs exactly
    ``p``'s pairs from it; else None."""
    dataset = _spec_of(root, p)
    chosen = {((root / i).resolve(), (root / m).resolve()) for _, i, m in p.pairs}
    for attempt in range(2):
        try:
            records, problems = _index(dataset)
        except DataError:
            return None
        if _pairs_of(records) != chosen:
            return None
        lone = [b for b in problems if b.unpaired]
        if not lone or attempt:
            return dataset, problems
        guarded = dict(dataset)
        _exclude(root, guarded, lone, judged, p)
        if guarded == dataset:
            return dataset, problems
        try:
            records, again = _index(guarded)
        except DataError:
            return dataset, problems
        if _pairs_of(records) == chosen and len(again) < len(problems):
            dataset, problems = guarded, again
        return dataset, problems
    return None


def _written(root: Path, found: list[Pairing], judged: list[Judged]) -> tuple[Pairing, dict[str, Any], list[BadFile]]:
    """The best pairing whose dataset section the reader `check` and `run` use reads back to exactly its pairs,
    among those that pair as many files as the best (the fewest files left unpaired first); when none does (a glob
    that also matches other files), init asks rather than write a spec that pairs otherwise than it said."""
    top = found[0]
    tied = [p for p in found if p.rank()[:2] == top.rank()[:2]][:TRIED]
    read = []
    for p in tied:
        result = _read_back(root, p, judged)
        if result is not None:
            rank = p.rank()  # the reader's unpaired files count where the families' do
            read.append(((*rank[:3], len([b for b in result[1] if b.unpaired]), *rank[3:]), p, *result))
    if not read:
        dataset = _spec_of(root, top)
        try:
            records, _ = _index(dataset)
        except DataError as e:
            raise DataError(f"{root}: the spec init would write does not pair its files ({e}); {HAND}") from None
        written = _pairs_of(records)
        chosen = {((root / i).resolve(), (root / m).resolve()) for _, i, m in top.pairs}
        extra = sorted(written - chosen)[:1] or sorted(chosen - written)[:1]
        raise DataError(
            f"{root}: init found {len(chosen)} pairs but the spec it would write pairs {len(written)} (e.g. "
            f"{extra[0][0].name} with {extra[0][1].name}); {HAND}"
        )
    _, best, dataset, problems = min(read, key=lambda r: r[0])
    return best, dataset, problems


def _unpaired(root: Path, best: Pairing, problems: list[BadFile], dataset: dict[str, Any], layout: Layout) -> None:
    """Files the spec's globs match that found no partner: named; the spec is written only when the pairs are
    the clear majority of each side, and then leaves them out."""
    lone = [p for p in problems if p.unpaired]
    if not lone:
        return
    n = len(best.pairs)
    images = sum(p.kind == "image without a mask" for p in lone)
    masks = len(lone) - images
    names = sorted(str(p.path.relative_to(root)) for p in lone)
    named = ", ".join(names[:LISTED]) + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")
    if n < CLEAR * (n + images) or n < CLEAR * (n + masks):
        raise DataError(
            f"{root}: {n} pairs, but {images} pictures and {masks} masks found no partner ({named}): too many to "
            f"leave out; {HAND}"
        )
    layout.notes.append(f"{len(lone)} pictures found no partner and are left out: {named}")
    dataset["skip_bad_files"] = True
    layout.comments["skip_bad_files"] = (
        f"CHOICE: {images} pictures and {masks} masks found no partner ({named}); they are left out"
    )


def _affix_text(key: str) -> str:
    parts = re.findall(r"\(\?:([^)]*)\)\?", key)
    texts = [a.replace("\\", "") for part in parts for a in part.split("|")]
    return " and ".join(repr(t) for t in texts) or "nothing"


CACHE_BYTES = 1 << 29  # masks kept in memory between init's passes while they take at most this (512 MiB)


class Masks:
    """The pairs' masks as init reads them (lossy reading, grey or colour), each read once while they fit in
    CACHE_BYTES: the census, the levels' evidence and the audit all pass over them."""

    def __init__(self, root: Path, paths: list[Path], colour: bool):
        self.root, self.paths, self.colour = root, paths, colour
        self.reading = MaskReading(rgb=colour, lossy=True)
        self.kept: dict[Path, np.ndarray] = {}
        self.size = 0
        self.colours_seen = False

    def read(self, path: Path) -> np.ndarray | None:
        if path in self.kept:
            return self.kept[path]
        try:
            arr = read_mask(self.root / path, self.reading)
        except BadFile as e:  # an unreadable mask is a bad file: check names it
            self.colours_seen |= e.kind == "colour mask"
            return None
        if self.size + arr.nbytes <= CACHE_BYTES:
            self.kept[path] = arr
            self.size += arr.nbytes
        return arr

    def map(self, fn: Any) -> list:
        """``fn(array)`` for every readable mask (threads: decoding and numpy release the GIL)."""

        def one(path: Path) -> Any:
            arr = self.read(path)
            return None if arr is None else fn(arr)

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            return [r for r in pool.map(one, self.paths) if r is not None]


def _read_masks(root: Path, best: Pairing) -> tuple[Masks, ValueCensus, Evidence]:
    """Every mask's values (the census), and, for lossy masks, what their regions hold (levels.py); read as
    colours when the sample saw colour, or when any mask turns out to hold colours."""
    paths = [m for _, _, m in best.pairs]
    masks = Masks(root, paths, best.masks.sample.colour)
    lossy = best.masks.sample.lossy_format

    censuses = masks.map(census_of_one)
    if masks.colours_seen and not masks.colour:
        masks = Masks(root, paths, colour=True)
        censuses = masks.map(census_of_one)
    census = ValueCensus().merge(censuses)
    evidence = Evidence()
    if is_noisy(census, lossy):
        evidence.merge(masks.map(evidence_of))
    return masks, census, evidence


def census_of_one(arr: np.ndarray) -> ValueCensus:
    census = ValueCensus()
    census.add(arr)
    return census


def evidence_of(arr: np.ndarray) -> Evidence:
    evidence = Evidence()
    evidence.add(arr)
    return evidence


def _auditor(masks: Masks) -> Auditor:
    """A second look at every mask once its levels are known (levels.audit)."""

    def run(levels: list, tol: float, doubtful: list) -> Audit:
        return Audit().merge(masks.map(lambda arr: audit(arr, levels, tol, doubtful)))

    return run


def _reads_back(dataset: dict[str, Any]) -> None:
    """The finished dataset section must index with the reader (its split included): a bug otherwise."""
    try:
        _index(dataset)
    except DataError as e:
        raise DataError(
            f"{dataset['root']}: init would write a dataset section the reader refuses ({e}); {HAND}"
        ) from None
