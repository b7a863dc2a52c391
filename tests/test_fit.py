"""`segtune fit`: one command from a folder as it ships to a checked ONNX model, a report and a card, within the hours
given, resumable as a whole (issue 41)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import optuna
import torch
from PIL import Image

from .conftest import Background, segtune
from .layouts import label_map, photo, save


def lesions(root: Path, n: int = 40) -> Path:
    """ISIC's convention, small: ISIC_0000000.jpg with ISIC_0000000_segmentation.png in folders of their own."""
    rng = np.random.default_rng(0)
    for i in range(n):
        save(photo(rng), root / "ISIC2018_Task1-2_Training_Input" / f"ISIC_{i:07d}.jpg", quality=95)
        save(label_map() * 255, root / "ISIC2018_Task1_Training_GroundTruth" / f"ISIC_{i:07d}_segmentation.png")
    return root


def stored_trials(out: Path) -> int:
    state = json.loads((out / "fit.json").read_text())
    return len(optuna.load_study(study_name=state["study"], storage=state["storage"]).trials)


def test_fit_goes_from_a_folder_to_a_checked_model_within_its_budget_and_goes_on_after_ctrl_c(tmp_path: Path) -> None:
    """Ctrl-C once the finishing step began: exit 130 with the search kept; the same command completes it without
    training anything (no new trial); the ONNX model predicts what PyTorch does; the card and the report exist; every
    phase stayed within its share and the whole within the budget (+10%); a third invocation does nothing again."""
    data = lesions(tmp_path / "lesions")
    out = tmp_path / "fit"
    hours = 0.06  # 216 s for init, check, the search and everything after it
    args = ["fit", str(data), "--hours", str(hours), "-o", str(out)]
    run = Background(*args, cwd=tmp_path)
    try:
        run.wait_for("[finish]", timeout=900)
        run.proc.send_signal(signal.SIGINT)
        assert run.wait(300) == 130, run.output[-3000:]
    finally:
        run.kill()
    assert "interrupted by Ctrl-C during finish" in run.output
    state = json.loads((out / "fit.json").read_text())
    assert state["phases"]["search"]["done"] and not state["phases"]["finish"]["done"]
    searched = stored_trials(out)
    assert searched >= 2

    proc = segtune(*args, cwd=tmp_path, timeout=900)
    assert "[search] done before" in proc.stdout
    assert stored_trials(out) == searched, "the finishing trains nothing"
    state = json.loads((out / "fit.json").read_text())
    assert all(p["done"] for p in state["phases"].values()), state["phases"]
    budget = hours * 3600
    assert state["budget_s"] == budget
    spent = sum(p["spent_s"] for p in state["phases"].values())
    assert spent <= 1.1 * budget, (spent, state["phases"])
    search = state["phases"]["search"]
    assert search["spent_s"] <= 1.1 * search["planned_s"], search
    onnx, card, report = out / "model.onnx", out / "MODEL_CARD.md", out / "report.html"
    assert onnx.is_file() and card.is_file() and report.is_file()
    deliverable = state["deliverable"]
    assert deliverable["kind"] in ("ensemble", "trial") and deliverable["test"]["pictures"] > 0
    assert f"test mIoU {deliverable['test']['miou']:.4f}" in card.read_text()
    assert "onnxruntime vs PyTorch" in proc.stdout and f"test mIoU {deliverable['test']['miou']:.4f}" in proc.stdout

    # the ONNX file predicts what the deliverable's PyTorch models do, picture by picture
    from segtune.results import fetch
    from segtune.results.predict import TorchPredictor, load_predictor, predict_picture
    from segtune.search import store
    from segtune.training import checkpoint

    study = store.load_study(store.open_storage(state["storage"]), state["study"])
    members = deliverable["members"]
    models, meta = [], None
    for m in members:
        model, meta = checkpoint.load(fetch.trial_model(study, m["trial"], state["artifacts"]), "cpu")
        models.append(model)
    assert meta is not None
    from segtune.data.resize import ResizePolicy

    torch_side = TorchPredictor(
        models,
        meta["classes"],
        ResizePolicy.from_checkpoint(meta),
        torch.device("cpu"),
        weights=[m["weight"] for m in members],
    )
    onnx_side = load_predictor(onnx)
    pictures = sorted((data / "ISIC2018_Task1-2_Training_Input").glob("*.jpg"))[:6]
    agree = [
        np.mean(
            predict_picture(onnx_side, Image.open(p).convert("RGB"))
            == predict_picture(torch_side, Image.open(p).convert("RGB"))
        )
        for p in pictures
    ]
    assert min(agree) >= 0.999, agree

    again = segtune(*args, cwd=tmp_path, timeout=300)
    assert all(f"[{p}] done before" in again.stdout for p in state["phases"]), again.stdout
    assert stored_trials(out) == searched


def test_a_budget_too_small_for_one_epoch_is_exit_2_naming_hours(tmp_path: Path) -> None:
    data = lesions(tmp_path / "lesions", n=12)
    proc = segtune("fit", str(data), "--hours", "0.0003", "-o", str(tmp_path / "fit"), cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("segtune: error: --hours: ") and "one epoch of the smallest model" in last
    assert "Traceback" not in proc.stderr


def test_a_folder_init_refuses_is_exit_2_in_one_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(6):  # pictures, and no mask among them
        save(photo(rng), tmp_path / "photos" / f"p{i}.jpg", quality=95)
    proc = segtune(
        "fit", str(tmp_path / "photos"), "--hours", "1", "-o", str(tmp_path / "fit"), cwd=tmp_path, check=False
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "cannot tell images from masks" in proc.stderr
