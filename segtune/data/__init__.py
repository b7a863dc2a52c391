"""Dataset builders by name, and the decoded arrays every trial of a study shares.

A builder turns a dataset spec into a :class:`SegData`: images decoded and resized once
(uint8, N x S x S x 3), masks as class indices (uint8, IGNORE_INDEX for pixels that count for
nothing), and the train / val / test split as index arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from segtune.data.base import SegData, index_summary
from segtune.data.camvid import build_camvid
from segtune.data.folder import build_folder
from segtune.data.oxford_pets import build_oxford_pets
from segtune.data.synthetic import build_synthetic
from segtune.data.voc import build_voc

BUILDERS: dict[str, Callable[[Any], SegData]] = {
    "oxford_pets": build_oxford_pets,
    "folder": build_folder,
    "voc": build_voc,
    "camvid": build_camvid,
    "synthetic": build_synthetic,
}


def build_dataset(dataset_spec: Any) -> SegData:
    return BUILDERS[dataset_spec.name](dataset_spec)


__all__ = ["BUILDERS", "SegData", "build_dataset", "index_summary"]
