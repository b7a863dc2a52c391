"""The folders issue 39 names, each read by `segtune init` as a user runs it and decoded by the reader `check` and
`run` use: Oxford-IIIT Pet names beside their masks, pictures that mix JPEG and PNG, JPEG colour masks at the
qualities people save them, a grey class of a tenth of a percent in JPEG masks, split files as datasets ship them
(integer ids, one list per split, split folders without val), product photos on a white backdrop, files without a
partner, names that differ in case. Each failed before issue 39.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import yaml

from segtune import cli
from segtune import spec as spec_mod
from segtune.check import check_dataset
from segtune.data import build_dataset
from segtune.data.folder import index_records
from segtune.data.labels import IGNORE_INDEX
from tests import layouts

RED, GREEN, BLUE = (200, 30, 30), (30, 170, 60), (40, 40, 220)


def run_init(root: Path, tmp: Path) -> tuple[int, str, str, Path]:
    """`segtune init ROOT -o spec.yaml` in this process: exit code, stdout, stderr, the spec's path."""
    out = tmp / f"{root.name}.yaml"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(["init", str(root), "-o", str(out)])
    return code, stdout.getvalue(), stderr.getvalue(), out


def read(root: Path, tmp: Path) -> tuple[spec_mod.StudySpec, str]:
    code, printed, err, out = run_init(root, tmp)
    assert code == 0, err
    return spec_mod.load(out), printed


def blobs(rng: np.random.Generator, k: int, h: int = 64, w: int = 64) -> np.ndarray:
    """Class indices: background and k - 1 classes as ellipses of random size and place."""
    out = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for c in range(1, k):
        cy, cx, ry, rx = rng.uniform(12, 52), rng.uniform(12, 52), rng.uniform(5, 14), rng.uniform(5, 14)
        out[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = c
    return out


def decoded_agreement(spec: spec_mod.StudySpec, truth: dict[str, np.ndarray]) -> tuple[float, float]:
    """How the decoded masks agree with the drawn ones: the share of labelled pixels in their drawn class (classes
    matched by overlap, over all masks), and the worst recall of a drawn class (ignored pixels count as missed)."""
    data = build_dataset(spec.dataset)
    records, _ = index_records(spec.dataset)
    k = max(int(m.max()) for m in truth.values()) + 1
    confusion = np.zeros((k, 256), np.int64)
    for i, record in enumerate(records):
        want = truth[record.mask.name]
        h, w = (int(x) for x in data.content[i])
        confusion += np.bincount(
            (want.astype(np.int64) * 256 + data.masks[i][:h, :w]).ravel(), minlength=k * 256
        ).reshape(k, 256)
    labelled = confusion[:, :IGNORE_INDEX]
    mapping = labelled.argmax(axis=1)
    assert len(set(mapping.tolist())) == k, mapping  # each drawn class decoded as a class of its own
    right = labelled[np.arange(k), mapping]
    return float(right.sum() / labelled.sum()), float((right / confusion.sum(axis=1)).min())


def test_oxford_style_names_of_two_and_three_tokens_pair_whole(tmp_path: Path) -> None:
    """images/Abyssinian_1.jpg with masks/Abyssinian_1.png, breeds named in one word or two: every pair, one spec."""
    root, rng = tmp_path / "pets", np.random.default_rng(1)
    breeds = ["Abyssinian", "Bengal", "american_bulldog", "great_pyrenees", "english_cocker_spaniel", "pug"]
    for i in range(24):
        name = f"{breeds[i % len(breeds)]}_{i + 1}"
        labels = layouts.label_map()
        layouts.save(layouts.photo(rng), root / "images" / f"{name}.jpg", quality=95)
        layouts.save(labels + 1, root / "masks" / f"{name}.png")  # trimap-like values 1 and 2
    spec, printed = read(root, tmp_path)
    assert "24 pairs" in printed
    records, problems = index_records(spec.dataset)
    assert len(records) == 24 and not problems
    assert len(build_dataset(spec.dataset).names) == 24


def test_pictures_that_mix_jpg_and_png_pair_whole_and_check_accepts_them(tmp_path: Path) -> None:
    root, rng = tmp_path / "mixed", np.random.default_rng(2)
    for i in range(12):
        layouts.save(layouts.photo(rng), root / "images" / f"case{i:03d}.{('jpg', 'png')[i % 2]}", quality=95)
        layouts.save(layouts.label_map() * 255, root / "masks" / f"case{i:03d}.png")
    spec, printed = read(root, tmp_path)
    assert "12 pairs" in printed
    buf = io.StringIO()
    assert check_dataset(spec, buf)["images"] == 12, buf.getvalue()
    assert "without" not in buf.getvalue()


@pytest.mark.parametrize("quality", [85, 90, 95])
def test_jpeg_colour_masks_give_their_class_count(quality: int, tmp_path: Path) -> None:
    """Three colour classes and a black background saved as JPEG: four classes, whatever the shapes; edge blends
    and JPEG's colour bleed never become a class of their own."""
    root, rng = tmp_path / f"colours{quality}", np.random.default_rng(quality)
    palette = np.array([(0, 0, 0), RED, GREEN, BLUE], np.uint8)
    truth = {}
    for i in range(12):
        labels = blobs(rng, 4)
        layouts.save(layouts.photo(rng), root / "images" / f"s{i}.png")
        layouts.jpeg(palette[labels], root / "masks" / f"s{i}.jpg", quality=quality)
        truth[f"s{i}.jpg"] = labels
    spec, _ = read(root, tmp_path)
    assert len(spec.dataset.classes) == 4 and spec.dataset.lossy_masks == "nearest"
    agreement, recall = decoded_agreement(spec, truth)
    assert agreement > 0.97 and recall > 0.8, (agreement, recall)


def test_the_jpeg_colour_fixture_at_quality_90_keeps_its_green_class(tmp_path: Path) -> None:
    root, rng = tmp_path / "fixture", np.random.default_rng(3)
    fg = {1: layouts.SQUARE, 2: layouts.SECOND}
    for i in range(10):
        layouts.save(layouts.photo(rng, fg=fg), root / "img" / f"s{i}.png")
        labels = layouts.label_map(fg=fg)
        colours = np.zeros((layouts.H, layouts.W, 3), np.uint8)
        colours[labels == 1], colours[labels == 2] = layouts.RED, layouts.GREEN
        layouts.jpeg(colours, root / "lbl" / f"s{i}.jpg", quality=90)
    spec, _ = read(root, tmp_path)
    assert len(spec.dataset.classes) == 3


@pytest.mark.parametrize("quality", [90, 98])
def test_a_white_line_across_a_yellow_region_in_jpeg_is_no_class_of_its_own(quality: int, tmp_path: Path) -> None:
    """White lines 1 px wide over black and across yellow rectangles (and white squares), green ellipses beside
    them, saved as JPEG: four classes, or a refusal naming the two readings; never five. Over yellow, JPEG keeps
    the line's luma and halves its chroma, a band 3 px wide whose middle is flat (yellow's luma, a yellow-white
    chroma): read as a fifth class before (a drawn folder, benchmarks/init_fuzz.py --seed 3017)."""
    root, rng = tmp_path / f"lines{quality}", np.random.default_rng(quality)
    palette = np.array([(0, 0, 0), (255, 255, 0), (255, 255, 255), GREEN], np.uint8)
    truth = {}
    for i in range(12):
        labels = np.zeros((64, 48), np.uint8)
        y, x = int(rng.integers(30, 40)), int(rng.integers(8, 20))
        labels[y : y + 20, x : x + 24] = 1  # a yellow rectangle
        labels[blobs(rng, 2, 64, 48) == 1] = 3  # a green ellipse
        for _ in range(2):
            labels[6:57, int(rng.integers(x + 1, x + 23))] = 2  # a white line 1 px wide, through the rectangle
        if i % 3 == 0:
            labels[2:10, 2:10] = 2  # white as a square too: a class with a flat inside
        layouts.save(layouts.photo(rng, 64, 48), root / "images" / f"s{i}.png")
        layouts.jpeg(palette[labels], root / "masks" / f"s{i}.jpg", quality=quality)
        truth[f"s{i}.jpg"] = labels
    code, printed, err, out = run_init(root, tmp_path)
    if code == 2:  # where the band's value alone cannot tell: a refusal that names both readings, nothing written
        assert "read as 4 colours" in err and "or as 5" in err and not out.exists(), err
        return
    assert code == 0, err
    spec = spec_mod.load(out)
    assert len(spec.dataset.classes) == 4, printed
    agreement, _ = decoded_agreement(spec, truth)
    assert agreement > 0.95, agreement


def test_grey_jpeg_masks_keep_a_class_of_a_tenth_of_a_percent(tmp_path: Path) -> None:
    """0 and 255, and a third level (128) on 0.1% of the pixels: three classes, the small one decoded."""
    root, rng = tmp_path / "grey", np.random.default_rng(4)
    truth = {}
    for i in range(20):
        labels = layouts.label_map()
        if i in (3, 11):
            labels[50:57, 6:12] = 2  # 2 x 42 of 81920 pixels: 0.1%
        layouts.save(layouts.photo(rng), root / "images" / f"{i}.jpg", quality=95)
        layouts.jpeg(np.array([0, 255, 128], np.uint8)[labels], root / "masks" / f"{i}.jpg", quality=90)
        truth[f"{i}.jpg"] = labels
    spec, _ = read(root, tmp_path)
    values = spec.dataset.values
    assert sorted(values.values()) == [0, 1, 2] and abs(sorted(values)[1] - 128) <= 2, values
    data = build_dataset(spec.dataset)
    assert (data.masks == 1).sum() >= 60  # most of the 84 pixels of the small class, decoded as it


def test_a_split_file_of_integer_ids_is_used(tmp_path: Path) -> None:
    """``train: [2, 5, 6, ...]`` for 002_image.png, as a public crop/weed set ships it: the split used, as listed."""
    root, rng = tmp_path / "weeds", np.random.default_rng(6)
    ids = list(range(1, 16))
    for i in ids:
        layouts.save(layouts.photo(rng), root / "images" / f"{i:03d}_image.png")
        layouts.save(layouts.label_map(), root / "annotations" / f"{i:03d}_annotation.png")
    split = {"train": ids[:9], "val": ids[9:12], "test": ids[12:]}
    (root / "train_test_split.yaml").write_text(yaml.safe_dump(split))
    spec, printed = read(root, tmp_path)
    assert spec.dataset.split.file == "train_test_split.yaml"
    assert "the official split in train_test_split.yaml (train 9, val 3, test 3 ids" in printed, printed
    assert "up to case, zero padding" in printed
    data = build_dataset(spec.dataset)
    assert {s: len(v) for s, v in data.splits.items()} == {"train": 9, "val": 3, "test": 3}


def test_one_list_per_split_anywhere_in_the_folder_is_used(tmp_path: Path) -> None:
    root, rng = tmp_path / "lists", np.random.default_rng(7)
    names = [f"img_{i:04d}" for i in range(12)]
    for n in names:
        layouts.save(layouts.photo(rng), root / "data" / "images" / f"{n}.jpg", quality=95)
        layouts.save(layouts.label_map() * 255, root / "data" / "masks" / f"{n}.png")
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, part in (("train", names[:8]), ("val", names[8:10]), ("test", names[10:])):
        (lists / f"{split}.txt").write_text("".join(f"{n}.jpg\n" for n in part))
    spec, _ = read(root, tmp_path)
    assert spec.dataset.split.train == "ImageSets/Segmentation/train.txt"
    data = build_dataset(spec.dataset)
    assert {s: len(v) for s, v in data.splits.items()} == {"train": 8, "val": 2, "test": 2}


def backdrop_photo(rng: np.random.Generator, cover: float = 0.75) -> np.ndarray:
    """A product photo: a textured object in the middle, a white backdrop filling ``cover`` of the frame."""
    image = layouts.photo(rng).astype(np.float64)
    image += rng.normal(0, 12, image.shape)
    yy, xx = np.mgrid[0:64, 0:64] / 64
    radius = np.sqrt((1 - cover) / np.pi)
    image[(yy - 0.5) ** 2 + (xx - 0.5) ** 2 > radius**2] = 255
    return np.clip(image, 0, 255).astype(np.uint8)


def test_a_photo_on_a_white_backdrop_is_no_mask(tmp_path: Path) -> None:
    """JPEG product photos whose white backdrop fills 75% of the frame, beside 0/255 masks: read as the images."""
    root, rng = tmp_path / "products", np.random.default_rng(8)
    for i in range(12):
        layouts.jpeg(backdrop_photo(rng), root / "photos" / f"p{i}.jpg", quality=92)
        layouts.save(layouts.label_map() * 255, root / "labels" / f"p{i}.png")
    spec, printed = read(root, tmp_path)
    assert spec.dataset.images == "photos/*.jpg" and spec.dataset.masks == "labels/*.png", printed
    assert spec.dataset.classes == ["background", "foreground"]


def test_files_without_a_partner_are_named_and_left_out_when_the_pairs_are_the_clear_majority(tmp_path: Path) -> None:
    root, rng = tmp_path / "unpaired", np.random.default_rng(9)
    for i in range(12):
        layouts.save(layouts.photo(rng), root / "images" / f"a{i}.png")
        layouts.save(layouts.label_map() * 255, root / "masks" / f"a{i}.png")
    layouts.save(layouts.photo(rng), root / "images" / "lonely.png")
    spec, printed = read(root, tmp_path)
    assert "1 pictures found no partner and are left out: images/lonely.png" in printed
    assert spec.dataset.skip_bad_files is True and len(build_dataset(spec.dataset).names) == 12
    for i in range(8):  # now most pictures have no mask: init asks
        layouts.save(layouts.photo(rng), root / "images" / f"extra{i}.png")
    code, _, err, out = run_init(root, tmp_path / "again")
    assert code == 2 and err.count("\n") == 1 and "found no partner" in err and "by hand" in err
    assert not out.exists()


def test_names_that_differ_in_case_pair(tmp_path: Path) -> None:
    """``P3A7X.JPG`` with ``p3a7x.png``: the same name up to case."""
    root, rng = tmp_path / "case", np.random.default_rng(10)
    for i in range(10):
        name = f"P{i}A{9 - i}X"
        layouts.save(layouts.photo(rng), root / "images" / f"{name}.JPG", quality=95)
        layouts.save(layouts.label_map() * 255, root / "masks" / f"{name.lower()}.png")
    spec, printed = read(root, tmp_path)
    assert "10 pairs" in printed and len(build_dataset(spec.dataset).names) == 10


def test_split_folders_without_val_carve_it_from_train(tmp_path: Path) -> None:
    root, rng = tmp_path / "drive", np.random.default_rng(11)
    for split, n in (("training", 10), ("test", 4)):
        for i in range(n):
            layouts.save(layouts.photo(rng), root / split / "images" / f"{split}{i}.tif")
            layouts.save(layouts.label_map() * 255, root / split / "mask" / f"{split}{i}.gif")
    spec, _ = read(root, tmp_path)
    assert spec.dataset.split == "folders"
    data = build_dataset(spec.dataset)
    assert len(data.splits["test"]) == 4 and len(data.splits["train"]) + len(data.splits["val"]) == 10
    assert len(data.splits["val"]) >= 1
