"""Data as people have it (issue 14): `segtune init` on real folders in each layout it reads and in layouts
it was not written against, aspect ratios kept from training to serving, and test metrics at full resolution."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from segtune import spec as spec_mod
from segtune.check import check
from segtune.data import build_dataset
from segtune.data.resize import ResizePolicy
from segtune.results.predict import split_metrics
from tests.conftest import ONE_AT_A_TIME, PETS_SAMPLE, segtune
from tests.test_workflows import write_camvid_32, write_camvid_segnet, write_voc

RNG = np.random.default_rng(11)


def lesion(h: int = 60, w: int = 80, small: bool = True) -> tuple[Image.Image, np.ndarray]:
    """A 4:3 dermoscopy-like picture and its 0/255 mask: a small round lesion (a rare foreground)."""
    mask = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    r = 6 if small else 20
    mask[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < r**2] = 255
    image = RNG.integers(100, 180, (h, w, 3), dtype=np.uint8)
    image[mask > 0] = (120, 40, 40)
    return Image.fromarray(image), mask


def run_init(root: Path, tmp: Path) -> tuple[dict, str, str]:
    """init through the CLI: the spec written, its text, and what init printed."""
    out = tmp / f"{root.name}.yaml"
    proc = segtune("init", str(root), "-o", str(out))
    return yaml.safe_load(out.read_text()), out.read_text(), proc.stdout


def accepted(path: Path) -> str:
    """What `segtune check` says of the written spec (in process: the same function the CLI calls)."""
    buf = io.StringIO()
    check(spec_mod.load(path), out=buf)
    return buf.getvalue()


def tiny_run(path: Path, tmp: Path) -> str:
    """Two tiny trials of the written spec (the starting point first) on a local Ray cluster."""
    return segtune(
        "run",
        str(path),
        "--storage",
        f"sqlite:///{tmp / 'init.db'}",
        "--set",
        "search.trials=2",
        "--set",
        "search.max_epochs=1",
        "--set",
        "search.grace_period=1",
        "--set",
        "dataset.image_size=64",
        "--set",
        "dataset.limit=32",  # per split: what is checked is that the written spec runs, not what it learns
        *ONE_AT_A_TIME,
        "--set",
        f"results_dir={tmp / 'runs'}",
        cwd=tmp,
    ).stdout


def test_init_on_0_255_masks_with_a_suffix_in_a_sibling_folder(tmp_path: Path) -> None:
    root = tmp_path / "lesions"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for i in range(16):
        picture, mask = lesion()
        picture.save(root / "images" / f"IMD{i:03d}.jpg", quality=95)
        Image.fromarray(mask).save(root / "annotations" / f"IMD{i:03d}_lesion.png")
    spec, text, printed = run_init(root, tmp_path)
    ds = spec["dataset"]
    assert ds["name"] == "folder" and ds["images"] == "images/*.jpg" and ds["masks"] == "annotations/*_lesion.png"
    assert "values" not in ds and ds["classes"] == ["background", "foreground"]  # 255 is the foreground
    assert "masks hold only 0 and 255: 255 is the foreground" in text
    assert ds["image_size"] == [48, 64]  # 60 x 80 is 4:3: that shape at about its own size, not a square
    assert set(spec["space"]["loss"]["choice"]) >= {"dice", "tversky", "dice+focal"}  # a rare foreground
    assert spec["space"]["class_weights"] == {"choice": [None, "median_frequency"], "when": {"loss": "ce"}}
    assert "covers" in printed and "rare foreground" in printed and "foreground" in printed
    # a person's short list as the prior, each with its reason: with a rare foreground, Tversky and weighted CE too
    points = spec["search"]["starting_points"]
    assert [(p["loss"], p.get("class_weights"), p["lr"]) for p in points] == [
        ("ce", None, 1e-3),
        ("dice+focal", None, 1e-3),
        ("tversky", None, 1e-3),
        ("ce", "median_frequency", 1e-3),
        ("ce", None, 3e-3),
    ]
    assert all(p["arch"] == "Unet" and p["encoder"] == "resnet34" for p in points)
    assert "Tversky, which weighs recall: foreground covers" in printed
    assert "mask values: masks hold only 0 and 255" in accepted(tmp_path / "lesions.yaml")
    out = tiny_run(tmp_path / "lesions.yaml", tmp_path)
    assert "2/2 done" in out
    # two trials run the list's first two; the other three are not left queued in the store for ever
    assert "search.starting_points lists 5 configurations and search.trials is 2: the first 2 run" in out
    study = optuna.load_study(study_name=spec["study"], storage=f"sqlite:///{tmp_path / 'init.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


def test_init_on_indexed_masks_in_split_folders_leaves_255_as_a_stated_choice(tmp_path: Path) -> None:
    root = tmp_path / "kvasir-like"
    for split, n in (("train", 8), ("valid", 3), ("test", 3)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(n):
            image = RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            mask = np.zeros((64, 64), np.uint8)
            mask[10:30, 10:30], mask[40:60, 30:50] = 1, 2
            mask[9, 9:31] = 255  # an outline, as VOC draws them
            Image.fromarray(image).save(root / "images" / split / f"{split}{i}.png")
            Image.fromarray(mask).save(root / "masks" / split / f"{split}{i}.png")
    spec, text, printed = run_init(root, tmp_path)
    ds = spec["dataset"]
    assert ds["split"] == "folders" and "{split}" in ds["images"] and "{split}" in ds["masks"]
    assert ds["classes"] == ["background", "class_1", "class_2"] and ds["image_size"] == 64
    assert ds["ignore_index"] == 255 and "CHOICE: 255 appears beside 0..2" in text
    assert "could not tell what mask value 255 means" in printed
    data = build_dataset(spec_mod.load(tmp_path / "kvasir-like.yaml").dataset)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 8, "val": 3, "test": 3}


@pytest.mark.parametrize("layout", ["voc", "camvid-segnet", "camvid-32", "nested-ph2", "mask-suffix", "colour"])
def test_init_recognises_the_layout_and_check_accepts_the_spec(layout: str, tmp_path: Path) -> None:
    root = tmp_path / layout
    if layout == "voc":
        write_voc(root)
    elif layout == "camvid-segnet":
        write_camvid_segnet(root)
    elif layout == "camvid-32":
        write_camvid_32(root)
    elif layout == "nested-ph2":  # IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp + IMDxxx/IMDxxx_lesion/IMDxxx_lesion.bmp
        for i in range(12):
            name = f"IMD{i:03d}"
            (root / name / f"{name}_Dermoscopic_Image").mkdir(parents=True)
            (root / name / f"{name}_lesion").mkdir()
            picture, mask = lesion(small=False)
            picture.save(root / name / f"{name}_Dermoscopic_Image" / f"{name}.bmp")
            Image.fromarray(mask).convert("1").save(root / name / f"{name}_lesion" / f"{name}_lesion.bmp")
    elif layout == "mask-suffix":  # pictures and their masks side by side in one folder
        (root / "data").mkdir(parents=True)
        for i in range(12):
            picture, mask = lesion(small=False)
            picture.save(root / "data" / f"case{i}.png")
            Image.fromarray(mask // 255).save(root / "data" / f"case{i}_mask.png")
    else:  # colour-coded masks in a folder called "ground truth"
        (root / "pictures").mkdir(parents=True)
        (root / "ground truth").mkdir()
        for i in range(12):
            picture, mask = lesion(small=False)
            colours = np.zeros((*mask.shape, 3), np.uint8)
            colours[mask > 0] = (200, 30, 30)
            colours[:5] = (30, 200, 30)
            picture.save(root / "pictures" / f"p{i}.png")
            Image.fromarray(colours).save(root / "ground truth" / f"p{i}.png")
    spec, text, _ = run_init(root, tmp_path)
    ds = spec["dataset"]
    expected = {"voc": "voc", "camvid-segnet": "camvid", "camvid-32": "camvid"}.get(layout, "folder")
    assert ds["name"] == expected
    if layout == "nested-ph2":
        assert ds["images"] == "*/*_Dermoscopic_Image/*.bmp" and ds["masks"] == "*/*_lesion/*_lesion.bmp"
        assert ds["classes"] == ["background", "foreground"]  # 1-bit masks read as 0/255: 255 is the lesion
    if layout == "mask-suffix":
        assert ds["images"] == "data/*.png" and ds["masks"] == "data/*_mask.png" and "key" in ds
        assert ds["classes"] == ["background", "class_1"]
    if layout == "colour":
        assert set(ds["colors"]) == {"0,0,0", "200,30,30", "30,200,30"} and ds["colors"]["0,0,0"] == 0
    if layout == "camvid-segnet":
        assert ds["image_size"] == [53, 64]  # 40 x 48 pictures are 6:5: a box of that shape, not a square
        assert (
            ds["allow_missing_classes"] is True and "CHOICE: Building, Pole, Pavement" in text
        )  # a fixture: 3 classes
    report = accepted(tmp_path / f"{layout}.yaml")
    assert "dataset ok:" in report and "model ok:" in report


def test_init_on_the_pets_layout_runs(tmp_path: Path) -> None:
    spec, _, _ = run_init(PETS_SAMPLE, tmp_path)
    assert spec["dataset"]["name"] == "oxford_pets" and spec["dataset"]["image_size"] == [288, 384]
    out = tiny_run(tmp_path / f"{PETS_SAMPLE.name}.yaml", tmp_path)
    assert "2/2 done" in out and "288x384 px (pad)" not in out  # --set dataset.image_size=64: 64x64 here


def test_init_says_what_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = segtune("init", str(tmp_path / "empty"), "-o", str(tmp_path / "x.yaml"), check=False)
    assert proc.returncode == 2 and "no pictures found" in proc.stderr and proc.stderr.count("\n") == 1
    (tmp_path / "x.yaml").write_text("keep me")
    proc = segtune("init", str(PETS_SAMPLE), "-o", str(tmp_path / "x.yaml"), check=False)
    assert proc.returncode == 2 and "exists; pass --force" in proc.stderr
    assert (tmp_path / "x.yaml").read_text() == "keep me"


def test_a_circle_stays_a_circle_through_resize_and_back() -> None:
    """A 4:3 picture: fitted into its box with the aspect kept, then predicted and resized back."""
    h, w = 300, 400
    picture = Image.new("RGB", (w, h))
    ImageDraw.Draw(picture).ellipse((150, 100, 250, 200), fill=(255, 255, 255))  # a circle, radius 50
    policy = ResizePolicy.from_spec([96, 128])
    canvas, (ch, cw) = policy.image(picture)
    assert policy.canvas == (96, 128) and (ch, cw) == (96, 128)
    ys, xs = np.nonzero(canvas[..., 0] > 127)
    assert abs((xs.max() - xs.min()) - (ys.max() - ys.min())) <= 1  # round, not an ellipse
    square = ResizePolicy.from_spec(96)  # one side: the long side; a 4:3 picture is padded, not squashed
    canvas, (ch, cw) = square.image(picture)
    assert (ch, cw) == (72, 96) and (canvas[72:] == 0).all()
    ys, xs = np.nonzero(canvas[..., 0] > 127)
    assert abs((xs.max() - xs.min()) - (ys.max() - ys.min())) <= 1
    one_hot = torch.zeros(1, 2, *square.canvas)
    one_hot[0, 1] = torch.from_numpy(canvas[..., 0] > 127).float()
    one_hot[0, 0] = 1 - one_hot[0, 1]
    back = square.restore(one_hot, (ch, cw), (h, w)).argmax(1)[0].numpy()
    truth = np.asarray(picture)[..., 0] > 127
    assert back.shape == (h, w) and (back.astype(bool) & truth).sum() / (back.astype(bool) | truth).sum() > 0.95


class CanvasTruth:
    """A predictor that is exactly right at the training size: it returns the canvas masks as probabilities."""

    def __init__(self, data) -> None:  # noqa: ANN001
        self.data, self.classes, self.resize = data, data.classes, data.resize
        self.by_bytes = {data.images[i].tobytes(): i for i in range(len(data.images))}

    def probabilities(self, canvases: np.ndarray) -> torch.Tensor:
        out = torch.zeros(len(canvases), self.data.num_classes, *canvases.shape[1:3])
        for j, c in enumerate(canvases):
            mask = torch.from_numpy(self.data.masks[self.by_bytes[c.tobytes()]]).long()
            for k in range(self.data.num_classes):
                out[j, k] = (mask == k).float()
        return out


def test_full_resolution_metrics_differ_from_the_downsized_ones_and_match_a_hand_computation(tmp_path: Path) -> None:
    """A 1-pixel line in 64 x 64 masks, trained at 32 px: a model exactly right at 32 px predicts a 2-pixel
    line at full size (bilinear, then argmax). By hand: line IoU 64 / 128 = 0.5, background IoU
    (4096 - 128) / (4096 - 64) = 0.984127; mIoU 0.742063. At the training size: 1.0."""
    root = tmp_path / "lines"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(8):
        mask = np.zeros((64, 64), np.uint8)
        mask[:, 21] = 1
        Image.fromarray(RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "images" / f"l{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"l{i}.png")
    ds = spec_mod.FolderSpec(
        name="folder",
        root=str(root),
        classes=["background", "line"],
        image_size=32,
        split={"val": 0.25, "test": 0.25, "seed": 0},
    )
    data = build_dataset(ds, full_res=("test",))
    predictor = CanvasTruth(data)
    at_training_size = split_metrics(predictor, data, "test", full_resolution=False)
    full = split_metrics(predictor, data, "test", full_resolution=True)
    assert at_training_size["miou"] == pytest.approx(1.0)
    assert full["iou_per_class"] == pytest.approx([3968 / 4032, 0.5])
    assert full["miou"] == pytest.approx((3968 / 4032 + 0.5) / 2) and not math.isclose(full["miou"], 1.0)
