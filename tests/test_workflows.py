"""Issue 6: every hand-run workflow as a spec. Dataset builders on fixtures written in each dataset's real
on-disk layout, the shipped specs through `segtune check --spec-only`, segtune's own networks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segtune import spec as spec_mod
from segtune.config import TrialConfig
from segtune.data import build_dataset
from segtune.data.labels import IGNORE_INDEX
from segtune.errors import DataError
from segtune.spec import CamVidSpec, SyntheticSpec, VocSpec
from segtune.training.loop import fit, median_frequency_weights
from segtune.training.nets import NETS
from tests.conftest import SPACES, picture_values, pictures, segtune

RNG = np.random.default_rng(0)


def picture(path: Path, h: int = 40, w: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def write_voc(root: Path) -> None:
    """VOCdevkit/VOC2012 as torchvision unpacks it: palette PNG masks, 255 outlines, split lists."""
    base = root / "VOCdevkit" / "VOC2012"
    train, val = [f"2008_{i:06d}" for i in range(8)], [f"2009_{i:06d}" for i in range(3)]
    palette = [v for i in range(256) for v in (i * 7 % 256, i * 13 % 256, i * 29 % 256)]
    for name in train + val:
        picture(base / "JPEGImages" / f"{name}.jpg")
        mask = np.zeros((40, 48), np.uint8)
        mask[10:30, 10:30] = 15  # a person
        mask[9, 9:31] = 255  # the outline VOC draws around objects
        m = Image.fromarray(mask, mode="P")
        m.putpalette(palette)
        (base / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        m.save(base / "SegmentationClass" / f"{name}.png")
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(train) + "\n")
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(val) + "\n")


def test_voc_21_classes_border_ignored_official_val_is_test(tmp_path: Path) -> None:
    write_voc(tmp_path)
    data = build_dataset(
        VocSpec(name="voc", root=str(tmp_path), image_size=32, val_fraction=0.25, seed=1, allow_missing_classes=True)
    )  # a fixture of people only
    assert data.num_classes == 21 and data.classes[15] == "person"
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 6, "val": 2, "test": 3}
    assert [data.names[i] for i in data.splits["test"]] == [f"2009_{i:06d}" for i in range(3)]
    assert set(np.unique(data.masks)) == {0, 15, IGNORE_INDEX}


def write_camvid_segnet(root: Path) -> None:
    for split in ("train", "val", "test"):
        for i in range(2):
            picture(root / split / f"0001TP_{i:06d}.png")
            label = np.zeros((40, 48), np.uint8)  # 0 = Sky
            label[20:, :] = 3  # Road
            label[25:35, 5:15] = 8  # Car
            label[0:2, :] = 11  # void
            (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
            Image.fromarray(label).save(root / f"{split}annot" / f"0001TP_{i:06d}.png")


def test_camvid_segnet_layout_keeps_a_subset_and_ignores_void(tmp_path: Path) -> None:
    write_camvid_segnet(tmp_path)
    full = build_dataset(CamVidSpec(name="camvid", root=str(tmp_path), image_size=32, allow_missing_classes=True))
    assert full.num_classes == 11 and {k: len(v) for k, v in full.splits.items()} == {"train": 2, "val": 2, "test": 2}
    data = build_dataset(CamVidSpec(name="camvid", root=str(tmp_path), image_size=32, keep=["road", "Car"]))
    assert data.classes == ["background", "Road", "Car"]
    mask = pictures(data)[0]  # 40 x 48 pictures: 27 x 32 inside the 32 x 32 canvas
    assert mask[-1, 0] == 1 and mask[0, 0] == IGNORE_INDEX and mask[5, 20] == 0  # road, void, sky -> background
    assert (mask == 2).any()  # the car


CLASS_DICT = "name,r,g,b\nVoid,0,0,0\nRoad,128,64,128\nCar,64,0,128\nSky,128,128,128\nPedestrian,64,64,0\n"


def write_camvid_32(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "class_dict.csv").write_text(CLASS_DICT)
    for split in ("train", "val", "test"):
        for i in range(2):
            picture(root / split / f"0016E5_{i:05d}.png")
            label = np.zeros((40, 48, 3), np.uint8)
            label[:20] = (128, 128, 128)
            label[20:] = (128, 64, 128)
            label[22:30, 30:34] = (64, 64, 0)
            (root / f"{split}_labels").mkdir(parents=True, exist_ok=True)
            Image.fromarray(label).save(root / f"{split}_labels" / f"0016E5_{i:05d}_L.png")


def test_camvid_32_class_layout_reads_colours_from_class_dict(tmp_path: Path) -> None:
    write_camvid_32(tmp_path / "CamVid")
    root = str(tmp_path / "CamVid")
    full = build_dataset(
        CamVidSpec(name="camvid", root=root, image_size=32, allow_missing_classes=True)
    )  # no car drawn
    assert full.classes == ["Road", "Car", "Sky", "Pedestrian"]
    assert picture_values(full) == {0, 2, 3}
    data = build_dataset(CamVidSpec(name="camvid", root=root, image_size=32, keep=["Pedestrian", "road"]))
    assert data.classes == ["background", "Pedestrian", "Road"] and picture_values(data) == {0, 1, 2}
    with pytest.raises(DataError, match=r"dataset\.keep: 'Bicyclist' is not a CamVid class"):
        build_dataset(CamVidSpec(name="camvid", root=root, keep=["Bicyclist"]))
    bad = np.zeros((40, 48, 3), np.uint8) + np.array([1, 2, 3], np.uint8)
    Image.fromarray(bad).save(tmp_path / "CamVid" / "val_labels" / "0016E5_00001_L.png")
    with pytest.raises(DataError, match=r"1 bad files among 6 \(1 mask values outside the classes\)") as bad_colours:
        build_dataset(CamVidSpec(name="camvid", root=root, image_size=32, allow_missing_classes=True))
    assert "0016E5_00001_L.png: mask values outside the classes (colours [(1, 2, 3)]" in bad_colours.value.details[0]


def test_ph2_spec_reads_ph2s_own_layout_and_splits_half_quarter_quarter(tmp_path: Path) -> None:
    root = tmp_path / "PH2 Dataset images"
    for i in range(1, 21):
        name = f"IMD{i:03d}"
        picture(root / name / f"{name}_Dermoscopic_Image" / f"{name}.bmp", 48, 64)
        lesion = np.zeros((48, 64), np.uint8)
        lesion[12:36, 16:48] = 255
        (root / name / f"{name}_lesion").mkdir()
        Image.fromarray(lesion).save(root / name / f"{name}_lesion" / f"{name}_lesion.bmp")
    spec = spec_mod.load(SPACES / "ph2.yaml", ["dataset.image_size=64"], data_root=str(root))
    data = build_dataset(spec.dataset)
    assert data.classes == ["skin", "lesion"]
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 10, "val": 5, "test": 5}  # 100/50/50 of 200
    assert picture_values(data) == {0, 1}


def test_every_shipped_spec_validates_and_samples(tmp_path: Path) -> None:
    """What `segtune check SPEC --spec-only` does for each spec: the CLI once, the same function for the rest."""
    import io

    from segtune.check import check

    out = segtune("check", str(SPACES / "voc.yaml"), "--spec-only", cwd=tmp_path).stdout
    assert out.count("  sample: ") == 3 and "model ok:" in out and "pretrained weights not checked" in out
    names = sorted(p.stem for p in SPACES.glob("*.yaml"))
    assert {"pets", "pets_binary", "voc", "camvid", "ph2", "demo", "folder_example"} <= set(names)
    for name in names:
        buf = io.StringIO()
        check(spec_mod.load(SPACES / f"{name}.yaml", check_root=False), spec_only=True, out=buf)
        assert buf.getvalue().count("  sample: ") == 3 and "model ok:" in buf.getvalue(), name


def test_median_frequency_weights_favour_rare_classes() -> None:
    data = build_dataset(SyntheticSpec(name="synthetic", num_images=16, num_classes=3, image_size=32))
    weights = median_frequency_weights(data)
    counts = np.bincount(data.masks[data.splits["train"]].ravel(), minlength=3)
    assert np.argmax(weights) == np.argmin(counts) and sorted(weights)[1] == pytest.approx(1.0)


@pytest.mark.parametrize("arch", sorted(NETS))
def test_segtunes_own_networks_train_and_keep_the_input_size(arch: str) -> None:
    data = build_dataset(SyntheticSpec(name="synthetic", num_images=16, num_classes=3, image_size=64))
    cfg = TrialConfig(
        arch=arch,
        encoder="resnet18",
        augment="none",
        lr=3e-3,
        weight_decay=0.0,
        schedule="none",
        batch_size=4,
        accum_steps=2,
    )
    result = fit(cfg, data, epochs=2, device="cpu")
    losses = [row["train_loss"] for row in result.history]
    assert all(np.isfinite(losses)) and 0 <= result.best["val_miou"] <= 1
    with torch.no_grad():
        assert result.model(torch.zeros(1, 3, 96, 96)).shape == (1, 3, 96, 96)


def test_segnet_upsamples_with_the_pooling_indices() -> None:
    net = NETS["SegNet"](3, 2).eval()
    x = torch.zeros(1, 3, 32, 32)
    x[..., 5, 7] = 10.0
    calls: list[torch.Tensor] = []
    original = torch.nn.functional.max_unpool2d

    def spy(*args, **kw):
        calls.append(args[1])
        return original(*args, **kw)

    torch.nn.functional.max_unpool2d = spy
    try:
        with torch.no_grad():
            net(x)
    finally:
        torch.nn.functional.max_unpool2d = original
    assert len(calls) == 3  # one unpooling per encoder level, each with that level's indices


class PixelLinear(torch.nn.Module):
    """No BatchNorm, so the batch size changes nothing but the gradient's averaging."""

    def __init__(self, in_channels: int = 3, classes: int = 2):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_accum_steps_trains_like_the_larger_batch() -> None:
    data = build_dataset(SyntheticSpec(name="synthetic", num_images=40, num_classes=3, image_size=32))
    assert len(data.splits["train"]) % 8 == 0
    cfg = dict(
        arch="tests.test_workflows:PixelLinear",
        augment="none",
        optimizer="sgd",
        lr=0.05,
        weight_decay=0.0,
        momentum=0.0,
        schedule="none",
    )
    big = fit(TrialConfig(**cfg, batch_size=8, accum_steps=1), data, epochs=2, device="cpu").model.state_dict()
    accumulated = fit(TrialConfig(**cfg, batch_size=4, accum_steps=2), data, epochs=2, device="cpu").model.state_dict()
    small = fit(TrialConfig(**cfg, batch_size=4, accum_steps=1), data, epochs=2, device="cpu").model.state_dict()
    for key in big:
        assert torch.allclose(big[key], accumulated[key], atol=1e-5), key
    assert not torch.allclose(big["conv.weight"], small["conv.weight"], atol=1e-5)


def test_bce_is_for_two_classes_and_matches_ce_there() -> None:
    from segtune.training.losses import build_loss, check_loss

    logits, target = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 8, 8))
    target[0, 0, :] = IGNORE_INDEX
    bce, ce = build_loss(TrialConfig(loss="bce")), build_loss(TrialConfig(loss="ce"))
    assert torch.allclose(bce(logits, target), ce(logits, target))
    assert "bce needs exactly 2 classes" in check_loss("bce+dice", num_classes=3)


def test_model_pairs_set_arch_and_encoder_together() -> None:
    import optuna

    from segtune import space
    from segtune.errors import SpecError

    params = space.parse_space({"model": {"choice": ["Unet/resnet18", "SegNet/-", "FPN/mobilenet_v2"]}})
    drawn = {(c.arch, c.encoder) for c, _ in space.sample_configs(params, 12, seed=1)}
    assert drawn == {("Unet", "resnet18"), ("SegNet", "-"), ("FPN", "mobilenet_v2")}
    fixed = space.sample(optuna.trial.FixedTrial({"model": "FPN/mobilenet_v2"}), params)
    assert (fixed.arch, fixed.encoder) == ("FPN", "mobilenet_v2")
    with pytest.raises(SpecError, match="give either model .* or arch and encoder, not both"):
        space.parse_space({"model": "Unet/resnet18", "arch": "FPN"})
    with pytest.raises(SpecError, match="space.model: 'Unet' is not Arch/encoder"):
        space.validate_space(space.parse_space({"model": {"choice": ["Unet"]}}), num_classes=2)
