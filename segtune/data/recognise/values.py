"""Classes and how mask values become them, decided from every mask's values at once: 0/255, class indices, grey
levels or colour codes, or lossy (JPEG) masks whose levels are found from what their regions hold (levels.py).
More classes than masks plausibly hold without names, or lossy masks whose evidence allows two readings (k or
k + 1 levels), are a one-line error, never a spec."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from segtune.data.labels import LossyLevels, RawValue, ValueCensus, is_binary_255, tolerance
from segtune.data.recognise.layout import Layout
from segtune.data.recognise.levels import RADIUS, Audit, Evidence, distance, read_levels, smear_of
from segtune.errors import DataError

MAX_CLASSES = 20  # indexed masks with more classes than this need their names: init will not invent them
MAX_CLASS_CODES = 12  # grey levels or colours (not indices 0..K-1): more than a dozen codes are no class codes
MAX_COLOURS = 32
NOISY_VALUES = 64  # lossless masks with more distinct values than this are noisy (a JPEG copy re-saved, say)
MAX_FAR_SHARE = 0.03  # lossy masks: more pixels than this ignored (far from every level) moves class shares too far
AT_TIPS = 0.8  # a doubtful value this much of whose pixels sit where its two regions meet is a smeared tip
LOST_PIXELS, LOST_SHARE = 3, 2e-4  # more unexplained pixels than both: a class JPEG kept no level of
MAX_SPECKS = 2  # classes found on specks alone, at most
Auditor = Callable[[list, float, list], Audit]  # (levels, tolerance, doubtful) -> the audit of every mask
HAND_LOSSY = "write dataset.values (grey levels) or dataset.colors, and dataset.classes, by hand (README: folder)"


def _class_names(k: int) -> list[str]:
    return ["background"] + [f"class_{i}" for i in range(1, k)]


def is_noisy(census: ValueCensus, lossy: bool) -> bool:
    """Masks whose values sit around their levels rather than on them: a lossy format, or too many values."""
    return lossy or len(census.values) > NOISY_VALUES


def decide_values(
    dataset: dict[str, Any],
    layout: Layout,
    census: ValueCensus,
    colour: bool,
    lossy: bool,
    evidence: Evidence,
    auditor: Auditor,
) -> None:
    """Classes and how mask values become them, from every mask's values; a one-line error where no spec could
    mean anything (too many classes to be told without names, masks that sit on no few levels)."""
    root, values = dataset["root"], census.values
    if is_noisy(census, lossy):
        _decide_lossy(dataset, layout, census, colour, evidence, auditor)
        return
    if colour:
        if len(values) > MAX_COLOURS:
            raise DataError(
                f"{root}: the masks hold {len(values)} colours: more than {MAX_COLOURS} are no class codes; write "
                "dataset.colors and dataset.classes by hand (README: folder)"
            )
        ordered = sorted(values, key=lambda c: (c != (0, 0, 0), -census.pixels[c]))  # black first: background
        dataset["classes"] = ["background" if c == (0, 0, 0) else f"class_{i}" for i, c in enumerate(ordered)]
        dataset["colors"] = {",".join(map(str, c)): i for i, c in enumerate(ordered)}
        layout.comments["classes"] = "CHOICE: named by colour order; rename them (the colors below say which is which)"
        return
    if is_binary_255(values, 2):
        dataset["classes"] = ["background", "foreground"]
        layout.comments["classes"] = (
            f"masks hold only 0 and 255: 255 is the foreground (decided from all {census.masks} masks); "
            "rename foreground to what it is"
        )
        return
    indexed = [v for v in values if v != 255]
    if indexed and max(indexed) < 64 and len(indexed) >= max(indexed) * 0.5:
        k = max(indexed) + 1
        if k > MAX_CLASSES:
            raise DataError(
                f"{root}: the masks hold class indices 0..{k - 1}: {k} classes are more than init names by number "
                f"(at most {MAX_CLASSES}); write dataset.classes by hand (README: folder)"
            )
        dataset["classes"] = _class_names(k)
        layout.comments["classes"] = f"CHOICE: masks hold class indices 0..{k - 1}; name them (0 taken as background)"
        if 255 in values:
            share = census.pixels[255] / sum(census.pixels.values())
            dataset["ignore_index"] = 255
            layout.comments["ignore_index"] = (
                f"CHOICE: 255 appears beside 0..{k - 1} (in {census.masks_with[255]} of {census.masks} masks, "
                f"{share:.1%} of pixels): taken as pixels to ignore (outlines, void). If 255 is a class, delete "
                "this line and add the class"
            )
            layout.notes.append("could not tell what mask value 255 means: took it as 'ignore' (see the comment)")
        return
    if len(values) > MAX_CLASS_CODES:
        raise DataError(
            f"{root}: the masks hold {len(values)} grey levels ({census.describe()}): neither class indices nor a "
            f"few codes (at most {MAX_CLASS_CODES}); write dataset.values and dataset.classes by hand (README: folder)"
        )
    # grey levels coding classes (0, 85, 170, 255, say): one class per level, in order
    dataset["classes"] = _class_names(len(values))
    dataset["values"] = {int(v): i for i, v in enumerate(values)}
    layout.comments["values"] = f"CHOICE: {len(values)} grey levels, one class each in order; name the classes"


def _shares(census: ValueCensus, levels: list[RawValue]) -> list[float]:
    """The share of the masks' pixels nearest each level (within the snapping tolerance)."""
    lossy = LossyLevels({v: i for i, v in enumerate(levels)}, tolerance(levels))
    values = list(census.pixels)
    raw = np.array([v if isinstance(v, tuple) else (v,) for v in values], dtype=np.int64)
    n = np.array([census.pixels[v] for v in values], dtype=np.int64)
    nearest, d = lossy.nearest(raw)
    kept = d <= lossy.tolerance
    total = max(1, int(n.sum()))
    return [float(n[kept & (nearest == i)].sum() / total) for i in range(len(levels))]


def _listed(census: ValueCensus, levels: list[RawValue]) -> str:
    return ", ".join(f"{v} {s:.1%}" for v, s in zip(levels, _shares(census, levels), strict=True))


def _two_readings(root: str, census: ValueCensus, levels: list, value: Any, kind: str, why: str) -> None:
    """A one-line refusal naming both readings the evidence leaves, each level with its share of the pixels."""
    more = sorted([*levels, value])
    raise DataError(
        f"{root}: the lossy masks read as {len(levels)} {kind} ({_listed(census, levels)}) or as {len(more)} "
        f"({_listed(census, more)}): {value} {why}; {HAND_LOSSY}"
    )


def _decide_lossy(
    dataset: dict[str, Any], layout: Layout, census: ValueCensus, colour: bool, evidence: Evidence, auditor: Auditor
) -> None:
    """Masks whose values sit around a few levels (JPEG noise, edge blends): the levels are where their regions'
    flat insides (and thin structures' ridges) gather, and each pixel is snapped to the nearest
    (``lossy_masks: nearest``), those too far from every level ignored."""
    root = dataset["root"]
    reading = read_levels(evidence)
    levels = reading.values
    kind = "colours" if colour else "grey levels"
    if len(levels) < 2 or len(levels) > MAX_CLASS_CODES:
        raise DataError(
            f"{root}: the masks hold {len(census.values)} {kind} whose flat regions sit on {len(levels)} levels "
            f"({', '.join(map(str, levels[:14]))}): no masks of 2 to {MAX_CLASS_CODES} classes; {HAND_LOSSY}"
        )
    doubtful = [(lv.value, pair) for lv, pair in reading.doubtful]
    specks: list[Any] = []
    for attempt in range(MAX_SPECKS + 1):
        tol = tolerance(levels)
        seen = auditor(levels, tol, doubtful)
        for k, (value, (a, b)) in enumerate(doubtful):
            if a == b:  # a colour only thin lines hold
                why = "appears only on lines or specks 1-2 px wide, where JPEG keeps no colour's own value"
            elif seen.at_tips.get(k, 0) >= AT_TIPS * seen.doubtful.get(k, 0):
                continue  # the smeared tips of regions: edge blends
            else:
                why = f"appears on lines or specks 1-2 px wide where a blend of {a} and {b} looks the same"
            _two_readings(root, census, levels, value, kind, why)
        if seen.lost <= max(LOST_PIXELS, LOST_SHARE * seen.pixels):
            break
        speck = seen.lost_level(evidence.channels or 1)
        novel = (
            speck is not None
            and speck.pixels >= LOST_PIXELS
            and smear_of(speck.value, levels) is None
            and all(distance(speck.value, v) > 3 * RADIUS[evidence.channels or 1] for v in levels)
        )
        if not novel or attempt == MAX_SPECKS:
            value = seen.lost_value(evidence.channels or 1)
            _two_readings(
                root,
                census,
                levels,
                value,
                kind,
                f"{seen.lost} pixels near it ({seen.lost / max(1, seen.pixels):.2%}) are no blend of the levels "
                "around them: a class too small or thin to keep its value through JPEG",
            )
        levels = sorted([*levels, speck.value])  # a class JPEG left no flat inside: its specks' own value
        specks.append(speck.value)
    if specks:
        layout.notes.append(
            f"{', '.join(map(str, specks))}: found only on specks JPEG left no flat inside (no blend of the levels "
            "around them), taken as a class"
        )
    off = LossyLevels({v: i for i, v in enumerate(levels)}, tol).off_level(census)
    if off.share(off.ignored) > MAX_FAR_SHARE:
        raise DataError(
            f"{root}: the masks' {kind} do not sit on a few levels ({off.share(off.ignored):.0%} of pixels farther "
            f"than {tol:g} from all of {', '.join(map(str, levels))}): no masks segtune can read; {HAND_LOSSY}"
        )
    if colour:
        ordered = sorted(levels, key=lambda c: (sum(c) > 60, -census.pixels.get(c, 0)))  # the darkest first
        dataset["classes"] = ["background"] + [f"class_{i}" for i in range(1, len(ordered))]
        dataset["colors"] = {",".join(map(str, c)): i for i, c in enumerate(ordered)}
        layout.comments["classes"] = "CHOICE: named by colour order; rename them (the colors below say which is which)"
    else:
        dataset["classes"] = ["background", "foreground"] if levels == [0, 255] else _class_names(len(levels))
        dataset["values"] = {int(v): i for i, v in enumerate(levels)}
        layout.comments["values"] = (
            f"{len(levels)} grey levels: {'255 is the foreground' if levels == [0, 255] else 'one class each'}"
        )
    thin = [lv for lv in reading.levels if lv.thin]
    if thin:
        layout.notes.append(
            f"{', '.join(str(lv.value) for lv in thin)}: found on lines or specks 1-2 px wide only (no flat region "
            "holds it), taken as a class"
        )
    if off.snapped + off.ignored == 0:
        return  # a lossy format, but every pixel on a level: nothing to snap
    dataset["lossy_masks"] = "nearest"
    layout.comments["lossy_masks"] = (
        f"the {census.masks} masks are lossy: they hold {len(census.values)} {kind}, and "
        f"{off.share(off.snapped + off.ignored):.1%} of their pixels sit off the {len(levels)} levels "
        f"{', '.join(map(str, levels))} (compression noise); each is snapped to the nearest "
        f"within {tol:g}, the {off.share(off.ignored):.2%} farther from every level are ignored"
    )
