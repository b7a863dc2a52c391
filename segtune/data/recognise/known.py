"""The datasets segtune knows by their structure: torchvision's Oxford-IIIT Pet and VOC, both CamVid layouts."""

from __future__ import annotations

import contextlib
from pathlib import Path

from segtune.data.recognise.layout import Layout
from segtune.errors import DataError


def known_layout(root: Path) -> Layout | None:
    """``root`` as one of the datasets segtune knows by their structure, or None."""
    from segtune.data.camvid import _layout as camvid_layout
    from segtune.data.oxford_pets import find_pets_dir

    pets = find_pets_dir(root)
    if pets is not None:
        parent = pets.parent if pets.name == "oxford-iiit-pet" else root
        return Layout(
            "oxford_pets",
            {"name": "oxford_pets", "root": str(parent), "download": False},
            "torchvision's Oxford-IIIT Pet (images/, annotations/trimaps/, the official lists)",
        )
    for candidate in (root / "VOCdevkit", root):
        for year in ("2012", "2011", "2010", "2009", "2008", "2007"):
            base = candidate / f"VOC{year}"
            if (base / "JPEGImages").is_dir() and (base / "SegmentationClass").is_dir():
                voc_root = candidate.parent if candidate.name == "VOCdevkit" else candidate
                return Layout(
                    "voc",
                    {"name": "voc", "root": str(voc_root), "year": year},
                    f"Pascal VOC {year} in torchvision's layout",
                )
    with contextlib.suppress(DataError):
        kind = camvid_layout(root)
        how = "CamVid, SegNet's 11 classes" if kind == "segnet" else "CamVid, 32 classes coded by colour"
        return Layout("camvid", {"name": "camvid", "root": str(root)}, how)
    return None
