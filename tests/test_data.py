"""Dataset builders on real files: the Oxford-IIIT Pet sample, folders the tests write, synthetic scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segtune.data import build_dataset, index_summary
from segtune.data.base import read_image
from segtune.data.labels import IGNORE_INDEX
from segtune.data.resize import ResizePolicy
from segtune.errors import DataError
from segtune.spec import FolderSpec, OxfordPetsSpec, SyntheticSpec
from tests.conftest import picture_values, pictures


def pets(root: Path | str, **kw) -> OxfordPetsSpec:
    return OxfordPetsSpec(name="oxford_pets", root=str(root), download=False, **{"image_size": 64, **kw})


def test_oxford_pets_trimap_splits_and_labels(pets_sample: Path) -> None:
    data = build_dataset(pets(pets_sample))
    assert data.classes == ["background", "pet", "border"]
    # the official lists: 300 trainval ids (a seeded 20% become val) and 298 test ids
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 240, "val": 60, "test": 298}
    assert data.images.shape == (598, 64, 64, 3) and data.images.dtype == np.uint8
    assert picture_values(data) == {0, 1, 2}  # the padding around non-square pictures is ignored
    assert (data.content.max(1) == 64).all() and (data.content.min(1) < 64).any()  # long side 64, aspect kept
    share = index_summary(data)["pixel_share"]
    assert share["background"] > share["pet"] > share["border"] > 0.05
    again = build_dataset(pets(pets_sample))
    assert all(np.array_equal(data.splits[s], again.splits[s]) for s in data.splits)  # the seed fixes the split


def test_oxford_pets_binary_ignores_the_border(pets_sample: Path) -> None:
    tri = build_dataset(pets(pets_sample, limit=20))
    binary = build_dataset(pets(pets_sample, target="binary", limit=20))
    assert binary.classes == ["background", "pet"]
    assert set(np.unique(binary.masks)) == {0, 1, IGNORE_INDEX}
    # the border is ignored: where the trimap says border, and (as in both) the padding
    assert np.array_equal(binary.masks == IGNORE_INDEX, (tri.masks == 2) | (tri.masks == IGNORE_INDEX))


def test_quirky_pictures_are_read_as_rgb(pets_sample: Path) -> None:
    images = pets_sample / "oxford-iiit-pet" / "images"
    assert Image.open(images / "Abyssinian_34.jpg").mode == "P"
    assert Image.open(images / "Abyssinian_5.jpg").mode == "RGBA"
    for name in ("Abyssinian_34.jpg", "Abyssinian_5.jpg"):
        arr, (h, w), _ = read_image(images / name, ResizePolicy.from_spec(64))
        assert arr.shape == (64, 64, 3) and max(h, w) == 64 and arr[:h, :w].std() > 10


def test_folder_over_the_pets_sample_includes_the_odd_files(pets_sample: Path) -> None:
    spec = FolderSpec(
        name="folder",
        root=str(pets_sample / "oxford-iiit-pet"),
        images="images/Abyssinian_*.jpg",
        masks="annotations/trimaps/Abyssinian_*.png",
        classes=["background", "pet"],
        values={2: 0, 1: 1, 3: 255},
        ignore_index=255,  # the border: the spec says what 255 means
        image_size=64,
    )
    data = build_dataset(spec)
    assert "Abyssinian_34" in data.names and "Abyssinian_5" in data.names
    assert sum(len(v) for v in data.splits.values()) == len(data.names) == 200


def test_packaged_demo_sample_is_complete() -> None:
    data = build_dataset(pets("builtin:oxford-pets-sample", val_fraction=0.25))
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 36, "val": 12, "test": 12}


def test_missing_pets_dataset_says_where_it_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no dataset at .*oxford-iiit-pet and download is off.*--data-root"):
        build_dataset(pets(tmp_path))


def write_lesions(root: Path, n: int = 8) -> None:
    """A PH2-like folder: IMDxxx.jpg images and IMDxxx_lesion.png masks in mixed encodings."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = 48 + 8 * i, 64
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
        if i % 4 == 0:
            img = img.convert("P")  # palette image
        elif i % 4 == 1:
            img = img.convert("RGBA")  # alpha channel
        img.save(root / "images" / f"IMD{i:03d}.{'png' if i % 4 in (0, 1) else 'jpg'}")
        m = Image.fromarray(mask)
        if i % 3 == 0:
            m = Image.fromarray(np.stack([mask] * 3, -1))  # RGB mask with three equal channels
        elif i % 3 == 1:
            m = m.convert("1")  # 1-bit mask
        m.save(root / "masks" / f"IMD{i:03d}_lesion.png")


def lesion_spec(root: Path, **kw) -> FolderSpec:
    fields = dict(
        name="folder",
        root=str(root),
        images="images/*",
        masks="masks/*.png",
        key=r"(IMD\d+)",
        classes=["skin", "lesion"],
        values={0: 0, 255: 1},
        split={"val": 0.25, "test": 0.25, "seed": 1},
        image_size=64,
    )
    return FolderSpec(**{**fields, **kw})


def test_folder_pairs_by_key_and_reads_every_mask_encoding(tmp_path: Path) -> None:
    write_lesions(tmp_path)
    data = build_dataset(lesion_spec(tmp_path))
    assert data.names == [f"IMD{i:03d}" for i in range(8)]
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 4, "val": 2, "test": 2}
    for m in pictures(data):  # every encoding reads as the same square lesion
        assert set(np.unique(m)) == {0, 1}
        assert 0.2 < m.mean() < 0.3


def test_folder_errors_name_the_file(tmp_path: Path) -> None:
    write_lesions(tmp_path)
    (tmp_path / "masks" / "IMD003_lesion.png").unlink()
    with pytest.raises(DataError, match=r"1 bad files among 8 \(1 image without a mask\), e\.g\. .*IMD003\.jpg"):
        build_dataset(lesion_spec(tmp_path))
    Image.fromarray(np.full((72, 64), 7, np.uint8)).save(tmp_path / "masks" / "IMD003_lesion.png")
    with pytest.raises(DataError, match=r"1 mask values outside the classes\), e\.g\. .*IMD003_lesion\.png"):
        build_dataset(lesion_spec(tmp_path))
    Image.fromarray(np.zeros((72, 64, 3), np.uint8) + np.array([255, 0, 0], np.uint8)).save(
        tmp_path / "masks" / "IMD003_lesion.png"
    )
    with pytest.raises(DataError, match=r"1 colour mask\)"):
        build_dataset(lesion_spec(tmp_path))
    with pytest.raises(DataError, match=r"dataset\.images: no files match"):
        build_dataset(lesion_spec(tmp_path, images="pictures/*.jpg"))


def test_synthetic_is_deterministic_and_uses_every_class() -> None:
    spec = SyntheticSpec(name="synthetic", num_images=24, num_classes=4, image_size=32, seed=3)
    a, b = build_dataset(spec), build_dataset(spec)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert set(np.unique(a.masks)) == {0, 1, 2, 3}
    assert sum(len(v) for v in a.splits.values()) == 24
