"""Dataset builders by name, and the decoded arrays every trial of a study shares.

A builder turns a dataset spec into a :class:`SegData`: images decoded and resized once
(uint8, N x S x S x 3), masks as class indices (uint8, IGNORE_INDEX for pixels that count for
nothing), and the train / val / test split as index arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from segtune.data.base import SPLITS, Decode, SegData, index_summary
from segtune.data.camvid import build_camvid
from segtune.data.folder import build_folder
from segtune.data.labels import train_pixels_per_class
from segtune.data.oxford_pets import build_oxford_pets
from segtune.data.synthetic import build_synthetic
from segtune.data.voc import build_voc
from segtune.errors import DataError

BUILDERS: dict[str, Callable[..., SegData]] = {
    "oxford_pets": build_oxford_pets,
    "folder": build_folder,
    "voc": build_voc,
    "camvid": build_camvid,
    "synthetic": build_synthetic,
}


def build_dataset(dataset_spec: Any, only: tuple[str, ...] = SPLITS, full_res: tuple[str, ...] = ()) -> SegData:
    """Decode a dataset once: the splits in ``only`` (a search needs train and val; retrain decodes test too).
    A class with no pixel in the train split is an error (its IoU would mean nothing and its weight would
    be zero), unless the spec says ``allow_missing_classes``. The splits in ``full_res`` keep their masks at the
    original size too (test metrics at full resolution)."""
    data = BUILDERS[dataset_spec.name](dataset_spec, Decode(only, full_res))
    if not dataset_spec.allow_missing_classes:
        counts = train_pixels_per_class(data.masks[data.splits["train"]], data.num_classes)
        absent = [data.classes[c] for c in range(data.num_classes) if counts[c] == 0]
        if absent:
            names = ", ".join(repr(a) for a in absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
            which = f"class {names} has" if len(absent) == 1 else f"classes {names} have"
            how = f"; {data.labels_note}" if data.labels_note else ""
            raise DataError(
                f"dataset: {which} no pixel in the train split (raw mask values seen: "
                f"{', '.join(map(str, data.raw_values)) or 'none'}{how}); check dataset.classes and the mask values, "
                "or set dataset.allow_missing_classes: true if you mean it"
            )
    return data


__all__ = ["BUILDERS", "SegData", "build_dataset", "index_summary"]
