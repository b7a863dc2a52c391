"""Numbers you can trust (issue 11), through the CLI on real files: 0/255 masks keep their foreground,
a class with no train pixel is an error, a hand-written retrain spec takes its defaults, metrics.json
is strict JSON, checkpoints that name code are not run, and a dashboard off loopback warns."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from PIL import Image

from segtune.config import TrialConfig
from segtune.data.base import carve
from segtune.data.resize import ResizePolicy
from segtune.training import checkpoint
from segtune.training.models import build_model
from tests.conftest import REPO, segtune
from tests.test_inspect_export_retrain import free_port

RNG = np.random.default_rng(7)


def lesion_folder(root: Path, n: int = 12, empty: tuple[int, ...] = (), one_bit: tuple[int, ...] = ()) -> None:
    """Dermoscopy-like pairs with 0/255 masks; ``empty`` masks hold no lesion, ``one_bit`` ones are 1-bit PNGs."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image = RNG.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        mask = np.zeros((48, 64), np.uint8)
        if i not in empty:
            mask[12:36, 16:48] = 255
            image[12:36, 16:48] = (200, 60, 60)
        Image.fromarray(image).save(root / "images" / f"IMD{i:03d}.png")
        picture = Image.fromarray(mask).convert("1") if i in one_bit else Image.fromarray(mask)
        picture.save(root / "masks" / f"IMD{i:03d}.png")


def folder_spec(path: Path, root: Path, **dataset: object) -> Path:
    spec = {
        "study": "lesions",
        "dataset": {
            "name": "folder",
            "root": str(root),
            "classes": ["background", "lesion"],
            "image_size": 32,
            "split": {"val": 0.25, "test": 0.25, "seed": 1},
            **dataset,
        },
        "space": {"arch": "SmallUNet", "augment": "none", "batch_size": 4},
        "search": {"trials": 1, "max_epochs": 1, "grace_period": 1},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def test_0_255_masks_make_255_the_foreground_decided_from_all_masks(tmp_path: Path) -> None:
    root = tmp_path / "lesions"
    lesion_folder(root, empty=(0, 1, 2), one_bit=(3, 4))  # some masks all 0, some 1-bit (read as 0/255)
    out = segtune("check", str(folder_spec(tmp_path / "s.yaml", root))).stdout
    assert "mask values: masks hold only 0 and 255 across all 12 masks: 0 is background, 255 is lesion" in out
    share = dict(part.rsplit(" ", 1) for part in out.split("share of pixels): ")[1].splitlines()[0].split(", "))
    assert float(share["lesion"].rstrip("%")) > 10 and "ignore" not in share  # 255 is not the ignore label


def test_a_class_without_train_pixels_is_an_error_in_check_and_run(tmp_path: Path) -> None:
    root = tmp_path / "lesions"
    lesion_folder(root, empty=tuple(range(12)))  # no mask holds a lesion
    spec = folder_spec(tmp_path / "s.yaml", root)
    for command in (["check", str(spec)], ["run", str(spec), "--storage", f"sqlite:///{tmp_path / 'st.db'}"]):
        proc = segtune(*command, check=False, cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert "class 'lesion' has no pixel in the train split (raw mask values seen: 0;" in proc.stderr
        assert "dataset.allow_missing_classes" in proc.stderr
    assert not (tmp_path / "st.db").exists()
    ok = segtune("check", str(spec), "--set", "dataset.allow_missing_classes=true")  # the user who means it
    assert "dataset ok: 12 images" in ok.stdout


def test_ignore_index_applies_only_when_set(tmp_path: Path) -> None:
    root = tmp_path / "lesions"
    lesion_folder(root)
    proc = segtune("check", str(folder_spec(tmp_path / "s.yaml", root, ignore_index=255)), check=False)
    assert proc.returncode == 2 and "class 'lesion' has no pixel in the train split" in proc.stderr
    assert "255 is ignored (dataset.ignore_index)" in proc.stderr


def three_class_folder(root: Path, n: int = 12, seed: int = 1) -> list[str]:
    """Background, lesion and ruler; the images that split seed 1 sends to test hold no ruler."""
    names = [f"IMD{i:03d}" for i in range(n)]
    test = {k for k, split in carve(names, {"val": 0.25, "test": 0.25}, seed).items() if split == "test"}
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name in names:
        image = RNG.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        mask[8:24, 8:24] = 1
        if name not in test:
            mask[0:4, :] = 2
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return sorted(test)


def three_class_dataset(root: Path) -> dict:
    """The dataset section that reads :func:`three_class_folder` with the split its test names assume."""
    split = {"val": 0.25, "test": 0.25, "seed": 1}
    return {
        "name": "folder",
        "root": str(root),
        "classes": ["background", "lesion", "ruler"],
        "image_size": 32,
        "split": split,
    }


class NeverRuler(torch.nn.Module):
    """Predicts background and lesion only, so the ruler (absent from the test split) has no IoU there."""

    def __init__(self, in_channels: int = 3, classes: int = 3):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, classes - 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.conv(x)
        return torch.cat([logits, torch.full_like(logits[:, :1], -1e4)], dim=1)


def test_a_hand_written_retrain_spec_takes_defaults_and_metrics_json_is_strict(tmp_path: Path) -> None:
    root = tmp_path / "three"
    test_names = three_class_folder(root)
    assert test_names
    spec = {
        "name": "by-hand",
        "dataset": three_class_dataset(root),
        "config": {"arch": "tests.test_trust:NeverRuler", "batch_size": 4},  # no aug_strength, lr, ...: defaults
        "epochs": 1,
    }
    path = tmp_path / "by-hand.yaml"
    path.write_text(yaml.safe_dump(spec))
    out_dir = tmp_path / "run"
    env = {"PYTHONPATH": str(REPO)}
    segtune("retrain", str(path), "--out", str(out_dir), "--trust-code", cwd=tmp_path, env=env)

    def refuse(constant: str) -> float:
        raise AssertionError(f"metrics.json holds {constant}, which is not JSON")

    metrics = json.loads((out_dir / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["test_iou_per_class"]["ruler"] is None  # absent from the test split: no IoU, not NaN
    assert metrics["test_iou_per_class"]["lesion"] is not None and metrics["test_images"] == len(test_names)

    spec["config"]["aug_strenght"] = 0.5  # a typo: one line naming it, exit 2
    path.write_text(yaml.safe_dump(spec))
    proc = segtune(
        "retrain", str(path), "--out", str(tmp_path / "run2"), "--trust-code", check=False, cwd=tmp_path, env=env
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "config.aug_strenght: unknown parameter" in proc.stderr


def test_a_retrain_specs_seed_is_another_run_of_the_same_configuration(tmp_path: Path) -> None:
    """People retrain a configuration with a few seeds to see its spread (and a benchmark compares medians):
    the spec's seed reaches the training, the same seed repeats the run, and metrics.json says which it was."""
    from segtune.results.retrain import retrain
    from segtune.spec import RetrainSpec

    root = tmp_path / "three"
    three_class_folder(root)
    doc = {
        "name": "seeds",
        "dataset": three_class_dataset(root),
        "config": {"arch": "SmallUNet", "batch_size": 4},
        "epochs": 1,
    }
    runs = {}
    for name, seed in [("a", 0), ("b", 0), ("c", 7)]:
        spec = RetrainSpec.model_validate({**doc, **({"seed": seed} if seed else {})})
        retrain(spec, tmp_path / name, overlays=0, out=io.StringIO())
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert [runs[k]["seed"] for k in "abc"] == [0, 0, 7]
    scores = {k: (runs[k]["val_miou"], runs[k]["test_miou"], runs[k]["test_pixel_acc"]) for k in "abc"}
    assert scores["a"] == scores["b"]
    assert scores["c"] != scores["a"]


EVIL = """
from pathlib import Path
Path(__file__).with_name("IMPORTED").write_text("the checkpoint ran this module")
import torch
class Net(torch.nn.Module):
    def __init__(self, in_channels=3, classes=2):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, classes, 1)
    def forward(self, x):
        return self.conv(x)
"""


def code_checkpoint(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A checkpoint whose model is ``evil_mod:Net``, a module that leaves a mark when imported."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "evil_mod.py").write_text(EVIL)
    sys.path.insert(0, str(code))
    try:
        model = build_model(TrialConfig(arch="evil_mod:Net"), 2)
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("evil_mod", None)
    (code / "IMPORTED").unlink()
    ckpt = checkpoint.save(
        tmp_path / "ckpt" / "model.pt",
        model,
        TrialConfig(arch="evil_mod:Net"),
        ["bg", "fg"],
        ResizePolicy.from_spec(32),
    )
    return ckpt, {"PYTHONPATH": f"{code}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_predict_refuses_a_checkpoint_that_names_code_unless_trusted(tmp_path: Path) -> None:
    ckpt, env = code_checkpoint(tmp_path)
    image = tmp_path / "x.png"
    Image.fromarray(RNG.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(image)
    proc = segtune("predict", str(ckpt), str(image), "-o", str(tmp_path / "p"), check=False, env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "'evil_mod:Net', code outside segtune" in proc.stderr and "--trust-code" in proc.stderr
    assert not (tmp_path / "code" / "IMPORTED").exists() and not (tmp_path / "p").exists()
    segtune("predict", str(ckpt), str(image), "-o", str(tmp_path / "p"), "--trust-code", env=env)
    assert (tmp_path / "code" / "IMPORTED").exists() and (tmp_path / "p" / "x_mask.png").is_file()


def test_report_does_not_run_a_shared_stores_checkpoint_code(tmp_path: Path) -> None:
    ckpt, env = code_checkpoint(tmp_path)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    study = optuna.create_study(study_name="shared", storage=url, direction="maximize")
    study.set_user_attr(
        "spec",
        {"study": "shared", "dataset": {"name": "synthetic", "num_classes": 2, "image_size": 32, "num_images": 8}},
    )
    study.set_user_attr("classes", ["bg", "fg"])
    trial = study.ask()
    trial.set_user_attr("checkpoint", str(ckpt.parent))
    study.tell(trial, 0.5)
    out = tmp_path / "r.html"
    proc = segtune("report", "shared", "--storage", url, "-o", str(out), env=env)
    assert "code outside segtune" in proc.stderr and not (tmp_path / "code" / "IMPORTED").exists()
    assert "No predictions shown" in out.read_text()


def test_dashboard_off_loopback_warns_that_anyone_can_delete_studies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    optuna.create_study(study_name="d", storage=url)
    for host, warned in (("0.0.0.0", True), ("127.0.0.1", False)):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "segtune", "dashboard", "--storage", url, "--host", host, "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).close()
                    break
                except OSError:
                    time.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        assert ("can read and delete the studies" in err) is warned, (host, err)


def test_a_typed_config_fills_defaults_and_names_unknown_keys() -> None:
    from segtune.errors import SpecError

    config = TrialConfig.from_dict({"arch": "FPN", "lr": 0.01})
    assert (config.arch, config.lr, config.aug_strength, config.batch_size) == ("FPN", 0.01, 0.5, 8)
    with pytest.raises(SpecError, match=r"^config\.learning_rate: unknown parameter"):
        TrialConfig.from_dict({"learning_rate": 0.01})
    assert math.isclose(TrialConfig().replace(lr=0.2).lr, 0.2)
