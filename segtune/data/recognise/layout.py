"""What `init` found a folder to be: the dataset section it reads as, how that was recognised, and the choices made
on the way (each a note, and a comment beside its field in the spec)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Layout:
    """What the folder is: the dataset section it reads as, and how that was recognised."""

    kind: str
    dataset: dict[str, Any]
    how: str
    notes: list[str] = field(default_factory=list)  # choices made that the files could not settle
    comments: dict[str, str] = field(default_factory=dict)  # dataset field -> the comment written beside it
