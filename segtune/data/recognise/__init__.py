"""`segtune init`: what a dataset folder is, and how segtune should read it.

The known layouts first (torchvision's Oxford-IIIT Pet and VOC, both CamVid layouts), then any images + masks
tree, decided from all its files at once by rules, each stated with its reason:

- **masks by content** (content.py): a picture is a mask when its pixels sit on a few levels or colours,
  whatever its folder is called; the images are the pictures that do not;
- **pairing by a shared key** (pairing.py): the pairing that pairs the most files wins; between masks that
  pair equally, a lossless copy over a lossy one, then more classes; between images, colour over a greyscale
  copy. What else would fit is written as a ``CHOICE`` comment with the line to switch;
- **mask values** from every mask: 0/255, class indices, grey levels or colour codes, or lossy (JPEG) masks
  whose values cluster around a few levels (``lossy_masks: nearest``); more classes than masks plausibly hold
  without names is a one-line error, never a spec;
- **sizes**: masks stored at another size than their picture with the same aspect ratio get
  ``mask_resize: nearest``;
- **splits**: split folders, or a file that lists ids per split (data/splitfiles.py, splits.py), else a seeded draw.

The spec's pairing is then read back with the reader `check` and `run` use: it must pair the same files.

The modules: ``known`` (the known layouts), ``pictures``, ``content`` (masks by content), ``pairing`` (families and
keys), ``choice`` (which families pair), ``values`` (classes from mask values), ``sizes``, ``splits``, ``folder``
(any images + masks tree, the rules together) and ``fingerprint`` (the recognised dataset measured as segtune reads
it).
"""

from __future__ import annotations

from pathlib import Path

from segtune.data.recognise.folder import folder_layout
from segtune.data.recognise.known import known_layout
from segtune.data.recognise.layout import Layout
from segtune.errors import DataError


def detect(root: Path) -> Layout:
    """The layout of ``root``: the known datasets first, then any images + masks tree."""
    root = root.resolve()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    return known_layout(root) or folder_layout(root)


__all__ = ["Layout", "detect"]
