"""From the winner to a model people deploy (issue 15), through the CLI: `finish` on folds (resuming after an
interruption, choosing TTA and the ensemble without test data), ONNX export checked in onnxruntime, and
`predict` on the ONNX file writing what it writes from the checkpoint."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from segtune.config import TrialConfig
from segtune.data import build_dataset
from segtune.results.onnx import export_model
from segtune.spec import OxfordPetsSpec
from segtune.training.loop import fit
from tests.conftest import ONE_AT_A_TIME, PETS_SAMPLE, Background, segtune
from tests.test_trust import lesion_folder

pytestmark = pytest.mark.e2e


def searched_lesions(tmp: Path) -> str:
    """A real little search whose 3 complete trials differ (so the top 2 are distinct configurations)."""
    root = tmp / "lesions"
    lesion_folder(root, n=48)  # enough pictures that a fold takes seconds: an interruption lands mid-finish
    url = f"sqlite:///{tmp / 'store.db'}"
    segtune(
        "run",
        str(Path(__file__).parents[1] / "search_spaces" / "demo.yaml"),
        "--storage",
        url,
        "--study",
        "les",
        "--set",
        f"dataset={{name: folder, root: {root}, classes: [skin, lesion], image_size: 64, "
        "split: {val: 0.25, test: 0.25, seed: 1}}",
        "--set",
        "space={arch: SmallUNet, augment: none, batch_size: 4, lr: {choice: [0.003, 0.01, 0.001]}}",
        "--set",
        "search.starting_points=[]",
        "--set",
        "search.trials=3",
        "--set",
        "search.max_epochs=5",
        "--set",
        "search.scheduler=none",
        "--set",
        "search.sampler=random",
        *ONE_AT_A_TIME,
        "--set",
        f"results_dir={tmp / 'runs'}",
        cwd=tmp,
    )
    return url


def finish_args(url: str, out: Path) -> list[str]:
    return ["finish", "les", "--storage", url, "--top", "2", "--folds", "2", "-o", str(out)]


def test_finish_on_folds_resumes_and_chooses_without_test_data(tmp_path: Path) -> None:
    url = searched_lesions(tmp_path)
    out = tmp_path / "finish"
    # interrupted after its first fold model (5 epochs a fold give the signal time to land before the rest is done)
    run = Background(*finish_args(url, out), cwd=tmp_path)
    try:
        run.wait_for("fold 1/2:")
        run.proc.send_signal(signal.SIGINT)
        assert run.wait(60) != 0
    finally:
        run.kill()
    partial = json.loads((out / "finish.json").read_text())
    assert 1 <= len(partial["results"]) < 4 and "summary" not in partial

    proc = segtune(*finish_args(url, out), cwd=tmp_path)
    assert "2 configurations x 2 folds = 4 trainings of 5 epochs" in proc.stdout
    assert "configuration 1 (trial" in proc.stdout and "fold 1/2: done earlier" in proc.stdout  # resumed
    record = json.loads((out / "finish.json").read_text())
    assert len(record["results"]) == 4 and len(record["summary"]["means"]) == 2
    for key in ("0/0", "0/1", "1/0", "1/1"):
        assert 0 <= record["results"][key]["val_miou"] <= 1 and Path(record["results"][key]["checkpoint"]).is_file()
    assert "fold mean" in proc.stdout and "<- winner" in proc.stdout and "flip TTA:" in proc.stdout
    assert record["test"]["resolution"].startswith("original: each test mask at its own size")
    assert record["test"]["model"].startswith("ensemble of the 2 fold")
    study = optuna.load_study(study_name="les", storage=url)
    assert study.user_attrs["finish"]["summary"] == record["summary"]  # the report reads it from the store

    # the choice never saw the test split: with every test mask changed, it is the same
    test_names = record_test_names(tmp_path)
    for path in (tmp_path / "lesions" / "masks").glob("*.png"):
        if path.stem in test_names:
            Image.fromarray(255 - np.asarray(Image.open(path).convert("L"))).save(path)
    again = segtune(*finish_args(url, tmp_path / "finish2"), cwd=tmp_path)
    other = json.loads((tmp_path / "finish2" / "finish.json").read_text())
    assert other["summary"] == record["summary"] and other["results"].keys() == record["results"].keys()
    assert all(other["results"][k]["val_miou"] == record["results"][k]["val_miou"] for k in record["results"])
    assert other["test"]["miou"] != record["test"]["miou"]  # the test masks did change
    assert "Traceback" not in again.stderr

    html = tmp_path / "r.html"
    segtune("report", "les", "--storage", url, "-o", str(html))
    assert "Finish: the best 2 configurations on 2 folds" in html.read_text()


def record_test_names(tmp: Path) -> set[str]:
    from segtune.spec import FolderSpec

    spec = FolderSpec(
        name="folder",
        root=str(tmp / "lesions"),
        classes=["skin", "lesion"],
        image_size=64,
        split={"val": 0.25, "test": 0.25, "seed": 1},
    )
    data = build_dataset(spec)
    return {data.names[i] for i in data.splits["test"]}


@pytest.fixture(scope="module")
def pets() -> object:
    return build_dataset(
        OxfordPetsSpec(name="oxford_pets", root=str(PETS_SAMPLE), download=False, image_size=64, limit=60)
    )


@pytest.mark.parametrize(
    ("arch", "encoder"),
    [
        ("Unet", "resnet18"),
        ("FPN", "resnet18"),
        ("DeepLabV3Plus", "resnet18"),
        ("Segformer", "mit_b0"),
        ("SmallUNet", "-"),
    ],
)
def test_onnx_round_trips_with_its_pytorch_outputs(arch: str, encoder: str, pets: object, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    config = TrialConfig(arch=arch, encoder=encoder, augment="none", lr=3e-3, schedule="none", batch_size=8)
    model = fit(config, pets, epochs=4, device="cpu", seed=0).model
    canvases = pets.images[pets.splits["val"][:8]]
    report = export_model([model], pets.classes, pets.resize, canvases, tmp_path / f"{arch}.onnx")
    assert report.classes_predicted >= 2, "a model predicting one class would agree trivially"
    assert report.agreement >= 0.999 and report.max_abs_diff < 1e-3
    assert report.dynamic == "batch, height, width"
    assert set(report.latency_ms) == {"torch_b1", "torch_b8", "onnx_b1", "onnx_b8"}


def test_export_model_and_predict_on_onnx_write_the_masks_the_checkpoint_writes(tmp_path: Path) -> None:
    root = tmp_path / "lesions"
    lesion_folder(root, n=48)  # enough pictures that a fold takes seconds: an interruption lands mid-finish
    spec = tmp_path / "retrain.yaml"
    spec.write_text(
        json.dumps(
            {
                "name": "les",
                "dataset": {
                    "name": "folder",
                    "root": str(root),
                    "classes": ["skin", "lesion"],
                    "image_size": [48, 64],
                    "split": {"val": 0.25, "test": 0.25, "seed": 1},
                },
                "config": {"arch": "SmallUNet", "augment": "none", "lr": 0.01, "batch_size": 4},
                "epochs": 3,
            }
        )
    )
    segtune("retrain", str(spec), "--out", str(tmp_path / "run"), cwd=tmp_path)
    started = time.monotonic()
    out = segtune("export-model", str(tmp_path / "run" / "model.pt"), "-o", str(tmp_path / "m.onnx")).stdout
    assert "argmax agreement" in out and "latency, median ms per image" in out and time.monotonic() - started < 300
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(meta["classes"]) == ["skin", "lesion"] and json.loads(meta["resize"])["mode"] == "pad"
    pictures = sorted((root / "images").glob("*.png"))[:4]
    segtune("predict", str(tmp_path / "run" / "model.pt"), *map(str, pictures), "-o", str(tmp_path / "pt"))
    segtune("predict", str(tmp_path / "m.onnx"), *map(str, pictures), "-o", str(tmp_path / "ox"))
    for p in pictures:
        a = np.asarray(Image.open(tmp_path / "pt" / f"{p.stem}_mask.png"))
        b = np.asarray(Image.open(tmp_path / "ox" / f"{p.stem}_mask.png"))
        assert a.shape == (48, 64) and (a == b).mean() >= 0.999


def test_finish_trains_each_configuration_for_the_epochs_export_gives_it(tmp_path: Path) -> None:
    """An exact budget of 12 trial-epochs for 5-epoch trials: the third trial's schedule ends at epoch 2. `finish`
    retrains each configuration for the epochs its trial ran, as `export` writes them, not for max_epochs."""
    root = tmp_path / "lesions"
    lesion_folder(root, n=24)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    segtune(
        "run",
        str(Path(__file__).parents[1] / "search_spaces" / "demo.yaml"),
        *("--storage", url, "--study", "les"),
        "--set",
        f"dataset={{name: folder, root: {root}, classes: [skin, lesion], image_size: 64, "
        "split: {val: 0.25, test: 0.25, seed: 1}}",
        *("--set", "space={arch: SmallUNet, augment: none, batch_size: 4, lr: {loguniform: [0.001, 0.01]}}"),
        *("--set", "search.starting_points=[]", "--set", "search.trials=3", "--set", "search.max_epochs=5"),
        *("--set", "search.scheduler=none", "--set", "search.sampler=random"),
        *("--set", "search.budget_epochs=12", "--set", "search.budget_rule=exact"),
        *ONE_AT_A_TIME,
        *("--set", f"results_dir={tmp_path / 'runs'}"),
        cwd=tmp_path,
    )
    study = optuna.load_study(study_name="les", storage=url)
    planned = {t.number: int(t.user_attrs.get("epochs_planned") or 5) for t in study.trials}
    assert sorted(planned.values()) == [2, 5, 5], planned
    out = tmp_path / "finish"
    proc = segtune(*finish_args(url, out)[:4], "--top", "3", "--folds", "2", "-o", str(out), "--device", "cpu")
    record = json.loads((out / "finish.json").read_text())
    assert record["epochs_per_config"] == [planned[t] for t in record["trials"]]
    shown = "/".join(str(planned[t]) for t in record["trials"])
    assert f"3 configurations x 2 folds = 6 trainings of {shown} epochs" in proc.stdout
    short = next(t for t, e in planned.items() if e == 2)
    segtune(
        "export",
        "les",
        "--storage",
        url,
        "--rank",
        str(record["trials"].index(short) + 1),
        "-o",
        "x.yaml",
        cwd=tmp_path,
    )
    import yaml

    assert yaml.safe_load((tmp_path / "x.yaml").read_text())["epochs"] == 2
