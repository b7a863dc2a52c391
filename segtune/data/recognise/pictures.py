"""The pictures under a dataset folder, in every format segtune reads."""

from __future__ import annotations

from pathlib import Path

from segtune.data.base import PICTURE_EXTENSIONS as IMAGE_EXTENSIONS
from segtune.errors import DataError

MAX_FILES = 100_000


def pictures(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            files.append(path)
            if len(files) > MAX_FILES:
                raise DataError(f"{root}: more than {MAX_FILES} pictures; point init at the dataset's own folder")
    if not files:
        raise DataError(f"{root}: no pictures found ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files
