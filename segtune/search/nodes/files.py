"""Files written whole or not at all: a reader (a driver fetching a trial's model, a restarted trial reading its
state) sees the old file or the new one, never half of one. Nothing in segtune writes a file in place, which is
also what makes a hard link a safe way to keep a file twice without its bytes twice (:func:`link_atomic`)."""

from __future__ import annotations

import os
from pathlib import Path


def link_atomic(source: Path, path: Path) -> bool:
    """``path`` made the same file as ``source`` (a hard link: no second copy of a model on disk), never half there;
    False where no link can be made (another filesystem, one without links, a file of another user's). Safe because
    nothing in segtune writes a file in place: a link keeps the bytes it was made with."""
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.unlink(missing_ok=True)
        os.link(source, partial)
    except OSError:
        return False
    os.replace(partial, path)
    return True


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` at ``path``, never half written (a reader sees the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
