"""Bad files in a real folder dataset: `check` and `run` name them all before any trial runs, or skip them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from tests.conftest import SPACES, segtune
from tests.test_data import write_lesions


def broken_folder(root: Path) -> dict[str, str]:
    """12 PH2-like pairs, then five faults a user meets: what each one did to which file."""
    write_lesions(root, n=12)
    jpg = root / "images" / "IMD002.jpg"
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])  # a copy cut off half way
    h = 48 + 8 * 5
    Image.fromarray(np.full((h, 64), 7, np.uint8)).save(root / "masks" / "IMD005_lesion.png")  # 7: no such class
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "masks" / "IMD006_lesion.png")  # wrong size
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "images" / "IMD099.jpg")  # no mask
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "masks" / "IMD098_lesion.png")  # no image
    return {
        "IMD002.jpg": "unreadable image",
        "IMD005_lesion.png": "mask values outside the classes",
        "IMD006_lesion.png": "mask size differs from its image",
        "IMD099.jpg": "image without a mask",
        "IMD098_lesion.png": "mask without an image",
    }


def folder_spec(tmp: Path, root: Path, **dataset: object) -> Path:
    spec = yaml.safe_load((SPACES / "demo.yaml").read_text())
    spec["dataset"] = {
        "name": "folder",
        "root": str(root),
        "images": "images/*",
        "masks": "masks/*.png",
        "key": r"(IMD\d+)",
        "classes": ["skin", "lesion"],
        "values": {0: 0, 255: 1},
        "image_size": 64,
        "split": {"val": 0.25, "test": 0.25, "seed": 3},
        **dataset,
    }
    spec["space"] = {"arch": "Unet", "encoder": "resnet18", "lr": 1e-3}
    spec["search"].pop("starting_points")  # they belong to the space replaced here
    path = tmp / "lesions.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_check_names_every_bad_file_with_counts_and_exits_2(tmp_path: Path) -> None:
    faults = broken_folder(tmp_path / "lesions")
    proc = segtune("check", str(folder_spec(tmp_path, tmp_path / "lesions")), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    error = lines[-1]
    assert error.startswith("segtune: error: dataset: 5 bad files among 14 (")
    assert "dataset.skip_bad_files: true" in error
    for kind in faults.values():
        assert f"1 {kind}" in error
    for name, kind in faults.items():  # one line per file, naming it and what is wrong with it
        assert any(name in line and kind in line for line in lines[:-1]), (name, proc.stderr)
    assert "truncated" in next(line for line in lines if "IMD002.jpg" in line)


def test_skip_bad_files_leaves_them_out_and_says_how_many(tmp_path: Path) -> None:
    faults = broken_folder(tmp_path / "lesions")
    spec = folder_spec(tmp_path, tmp_path / "lesions")
    proc = segtune("check", str(spec), "--set", "dataset.skip_bad_files=true")
    assert "skipped 5 bad files (dataset.skip_bad_files is on)" in proc.stdout
    for name in faults:
        assert name in proc.stdout
    assert "dataset ok: 9 images" in proc.stdout  # 12 pairs, 3 of them bad


def test_a_split_left_empty_is_an_error_not_a_silent_study(tmp_path: Path) -> None:
    root = tmp_path / "lesions"
    write_lesions(root, n=4)
    for i in range(4):  # every mask cut to the wrong size: skipping leaves nothing to train on
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / f"IMD{i:03d}_lesion.png")
    proc = segtune(
        "run",
        str(folder_spec(tmp_path, root, skip_bad_files=True)),
        "--storage",
        f"sqlite:///{tmp_path / 'store.db'}",
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    # `run` decodes the splits a search uses (train and val): the fourth pair, in the test split, waits for retrain
    assert proc.stderr.strip().splitlines()[-1] == (
        "segtune: error: dataset: the train split is empty after skipping 3 bad files; "
        "every study needs train and val images"
    )
    assert not (tmp_path / "store.db").exists()  # nothing was stored for a study that cannot run
