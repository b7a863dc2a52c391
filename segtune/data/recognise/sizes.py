"""Masks stored at another size than their picture: resized when the aspect ratio is the same, else bad files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from segtune.data.base import same_aspect
from segtune.data.recognise.choice import Pairing
from segtune.data.recognise.layout import Layout


def _sizes(root: Path, pairs: list[tuple[Any, Path, Path]]) -> tuple[list[float], int, int]:
    """For every pair whose mask is stored at another size than its picture: the scale, and how many mismatch
    with the same aspect ratio and with another one."""
    scales, same, other = [], 0, 0
    for _, image, mask in pairs:
        try:
            with Image.open(root / image) as im, Image.open(root / mask) as mk:
                if im.size == mk.size:
                    continue
                if same_aspect(im.size, mk.size):
                    same += 1
                    scales.append(mk.size[0] / im.size[0])
                else:
                    other += 1
        except (OSError, UnidentifiedImageError):
            continue  # unreadable: check names it
    return scales, same, other


def decide_sizes(root: Path, best: Pairing, dataset: dict[str, Any], layout: Layout) -> None:
    scales, same, other = _sizes(root, best.pairs)
    if same:
        dataset["mask_resize"] = "nearest"
        layout.comments["mask_resize"] = (
            f"{same} of {len(best.pairs)} masks are stored at another size than their picture (scale "
            f"{min(scales):.2g}-{max(scales):.2g}x, the same aspect ratio within 1%): resized to it nearest-neighbour"
        )
    if other:
        dataset["skip_bad_files"] = True
        layout.comments["skip_bad_files"] = (
            f"CHOICE: {other} masks have another aspect ratio than their picture: no resize fits them; they are left "
            "out (`segtune check` names them)"
        )
        layout.notes.append(f"{other} masks have another aspect ratio than their picture: left out as bad files")
