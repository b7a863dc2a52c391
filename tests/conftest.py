"""Shared fixtures. The real Oxford-IIIT Pet sample lives in ../shared/datasets beside the checkout (CI has it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
SPACES = REPO / "search_spaces"
PETS_SAMPLE = REPO.parent / "shared" / "datasets" / "oxford-iiit-pet-sample"


@pytest.fixture(scope="session")
def pets_sample() -> Path:
    assert (PETS_SAMPLE / "oxford-iiit-pet" / "images").is_dir(), (
        f"the Oxford-IIIT Pet sample is expected at {PETS_SAMPLE} (../shared/datasets beside the checkout)"
    )
    return PETS_SAMPLE


@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so a stray segtune.db or runs/ would be noticed, not shared."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
