"""Classes and how mask values become them, decided from every mask's values at once: 0/255, class indices, grey
levels or colour codes, or lossy (JPEG) masks whose values cluster around a few levels. More classes than masks
plausibly hold without names is a one-line error, never a spec."""

from __future__ import annotations

from typing import Any

from segtune.data.labels import LossyLevels, ValueCensus, is_binary_255, tolerance
from segtune.data.recognise import content
from segtune.data.recognise.layout import Layout
from segtune.errors import DataError

MAX_CLASSES = 20  # indexed masks with more classes than this need their names: init will not invent them
MAX_CLASS_CODES = 12  # grey levels or colours (not indices 0..K-1): more than a dozen codes are no class codes
MAX_COLOURS = 32
NOISY_VALUES = 64  # lossless masks with more distinct values than this are noisy (a JPEG copy re-saved, say)
MAX_FAR_SHARE = 0.1  # lossy masks: more pixels than this far from every level and they are no masks


def _class_names(k: int) -> list[str]:
    return ["background"] + [f"class_{i}" for i in range(1, k)]


def decide_values(dataset: dict[str, Any], layout: Layout, census: ValueCensus, colour: bool, lossy: bool) -> None:
    """Classes and how mask values become them, from every mask's values; a one-line error where no spec could
    mean anything (too many classes to be told without names, masks that sit on no few levels)."""
    root, values = dataset["root"], census.values
    noisy = lossy or len(values) > NOISY_VALUES
    if noisy:
        _decide_lossy(dataset, layout, census, colour)
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


def _decide_lossy(dataset: dict[str, Any], layout: Layout, census: ValueCensus, colour: bool) -> None:
    """Masks whose values cluster around a few levels (JPEG noise): those levels are the classes, and each pixel
    is snapped to the nearest (``lossy_masks: nearest``), those too far from every level ignored."""
    root = dataset["root"]
    levels = content.find_levels(census.pixels)
    kind = "colours" if colour else "grey levels"
    if not levels or len(levels) > MAX_CLASS_CODES:
        raise DataError(
            f"{root}: the masks hold {len(census.values)} {kind} that do not cluster around a few levels; write "
            "the dataset section by hand (README: folder)"
        )
    tol = tolerance(levels)
    off = LossyLevels({v: i for i, v in enumerate(levels)}, tol).off_level(census)
    if off.share(off.ignored) > MAX_FAR_SHARE:
        raise DataError(
            f"{root}: the masks' {kind} do not sit on a few levels ({off.share(off.ignored):.0%} of pixels far from "
            f"all of {', '.join(map(str, levels))}): no masks segtune can read; write the dataset section by hand"
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
    if off.snapped + off.ignored == 0:
        return  # a lossy format, but every pixel on a level: nothing to snap
    dataset["lossy_masks"] = "nearest"
    layout.comments["lossy_masks"] = (
        f"the {census.masks} masks are lossy: they hold {len(census.values)} {kind}, and "
        f"{off.share(off.snapped + off.ignored):.1%} of their pixels sit off the {len(levels)} levels "
        f"{', '.join(map(str, levels))} (compression noise); each is snapped to the nearest "
        f"within {tol:g}, the {off.share(off.ignored):.2%} farther from every level are ignored"
    )
