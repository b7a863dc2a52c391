"""After a real search: status, dashboard, report, export, retrain and predict through the CLI."""

from __future__ import annotations

import json
import signal
import socket
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
from optuna.trial import TrialState
from PIL import Image

from segtune.search.store import redact
from tests.conftest import PETS_SAMPLE, segtune

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"


def store_url(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'store.db'}"


def best_complete(tmp: Path) -> optuna.trial.FrozenTrial:
    study = optuna.load_study(study_name="e2e", storage=store_url(tmp))
    return max(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)


def test_status_lists_studies_and_trials(searched) -> None:
    tmp, _ = searched
    listing = segtune("status", "--storage", store_url(tmp)).stdout
    header, _, row = listing.splitlines()[:3]
    assert header.split()[:6] == ["study", "trials", "complete", "pruned", "failed", "running"]
    assert row.split()[0] == "e2e" and int(row.split()[2]) >= 1 and int(row.split()[3]) >= 1
    trials = segtune("status", "e2e", "--storage", store_url(tmp)).stdout.splitlines()
    first = trials[3].split()  # title, header, rule, then the best trial
    assert int(first[0]) == best_complete(tmp).number or first[1] == "PRUNED"
    values = [float(line.split()[2]) for line in trials[3:] if line.split()[2] != "-"]
    assert values == sorted(values, reverse=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_study_on_loopback_and_stops_on_ctrl_c(searched) -> None:
    tmp, _ = searched
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "segtune", "dashboard", "--storage", store_url(tmp), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline, body = time.monotonic() + 90, None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(0.5)
        assert body is not None, "the dashboard did not answer"
        assert "e2e" in [s["study_name"] for s in body["study_summaries"]]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/" in out and "dashboard stopped" in out


def test_report_renders_every_figure_in_chromium(searched, tmp_path: Path) -> None:
    tmp, _ = searched
    html = tmp_path / "e2e.html"
    out = segtune("report", "e2e", "--storage", store_url(tmp), "-o", str(html)).stdout
    figures = int(out.split("(")[1].split()[0])
    assert figures == 7  # history, curves, parallel coordinates, importances, per-class IoU, table, images
    text = html.read_text()
    assert 'src="http' not in text  # self-contained: plotly.js is inside the file
    assert Path(CHROMIUM).exists(), "headless Chromium is needed (.ci/run installs Debian's chromium)"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--virtual-time-budget=20000",
    ]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120)
    chunks = dom.stdout.split('id="figure-')[1:]
    assert len(chunks) == figures
    for i, chunk in enumerate(chunks):
        assert 'class="main-svg"' in chunk, f"figure {i} did not render"
    assert 'class="parcoords"' in dom.stdout and "image | ground truth | trial" in dom.stdout


def test_export_writes_a_fixed_spec_that_retrains_and_predicts(searched, tmp_path: Path) -> None:
    tmp, _ = searched
    best = best_complete(tmp)
    spec_path = tmp_path / "best.yaml"
    segtune("export", "e2e", "--storage", store_url(tmp), "-o", str(spec_path))
    doc = yaml.safe_load(spec_path.read_text())
    assert doc["provenance"]["trial"] == best.number and doc["provenance"]["val_miou"] == pytest.approx(best.value)
    assert doc["provenance"]["storage"] == store_url(tmp) and doc["epochs"] == 4
    assert doc["config"] == best.user_attrs["config"]
    assert all(not isinstance(v, dict) for v in doc["config"].values())  # no ranges left
    assert {k: doc["config"][k] for k in best.params} == best.params

    complete = sorted(
        optuna.load_study(study_name="e2e", storage=store_url(tmp)).get_trials(states=(TrialState.COMPLETE,)),
        key=lambda t: t.value,
        reverse=True,
    )
    last = tmp_path / "last.yaml"  # --rank N: the N-th best, here the weakest complete trial
    segtune("export", "e2e", "--storage", store_url(tmp), "-o", str(last), "--rank", str(len(complete)))
    assert yaml.safe_load(last.read_text())["provenance"]["trial"] == complete[-1].number

    run_dir = tmp_path / "retrained"
    out = segtune("retrain", str(spec_path), "--out", str(run_dir), "--set", "epochs=2", cwd=tmp_path).stdout
    assert "epoch 2/2" in out and "test mIoU" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_images"] == 12 and metrics["epochs"] == 2
    assert 0 < metrics["test_miou"] <= 1 and 0 < metrics["test_pixel_acc"] <= 1
    assert set(metrics["test_iou_per_class"]) == {"background", "pet", "border"}
    assert len(list((run_dir / "overlays").glob("*.png"))) == 6
    ckpt = run_dir / "model.pt"
    payload = torch.load(ckpt, weights_only=True)
    assert payload["config"]["arch"] == doc["config"]["arch"] and payload["classes"] == ["background", "pet", "border"]

    images = PETS_SAMPLE / "oxford-iiit-pet" / "images"
    inputs = [images / "Abyssinian_5.jpg", images / "Bengal_10.jpg", images / "american_bulldog_100.jpg"]
    pred_dir = tmp_path / "pred"
    segtune("predict", str(ckpt), *map(str, inputs), "-o", str(pred_dir))
    for path in inputs:
        mask = Image.open(pred_dir / f"{path.stem}_mask.png")
        assert mask.size == Image.open(path).size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 1, 2}
        assert Image.open(pred_dir / f"{path.stem}_overlay.png").size == mask.size

    # a checkpoint whose weights do not fit its config, and a file that is not an image
    payload["config"]["encoder"] = "resnet34" if payload["config"]["encoder"] != "resnet34" else "resnet18"
    bad_ckpt = tmp_path / "bad.pt"
    torch.save(payload, bad_ckpt)
    proc = segtune("predict", str(bad_ckpt), str(inputs[0]), "-o", str(tmp_path / "p2"), check=False)
    assert proc.returncode == 2 and "do not match its config" in proc.stderr and "Traceback" not in proc.stderr
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not a picture")
    proc = segtune("predict", str(ckpt), str(inputs[0]), str(not_image), "-o", str(tmp_path / "p3"), check=False)
    assert proc.returncode == 2 and "notes.jpg: cannot read image" in proc.stderr
    assert not (tmp_path / "p3").exists()  # nothing written when one input is bad


def test_bad_inputs_are_one_line_and_exit_2(searched, tmp_path: Path) -> None:
    tmp, _ = searched
    cases = [
        (["status", "nope", "--storage", store_url(tmp)], "study 'nope' is not in the store (studies: e2e)"),
        (["report", "nope", "--storage", store_url(tmp)], "study 'nope' is not in the store"),
        (["status", "--storage", f"sqlite:///{tmp_path / 'absent.db'}"], "no study store at"),
        (["export", "e2e", "--storage", store_url(tmp), "--rank", "99"], "--rank: 99 is out of range"),
        (["retrain", str(tmp_path / "missing.yaml")], "missing.yaml: cannot read the spec"),
    ]
    empty = tmp_path / "empty.db"
    optuna.create_study(study_name="fresh", storage=f"sqlite:///{empty}")
    cases.append((["export", "fresh", "--storage", f"sqlite:///{empty}"], "has no complete trial to export yet"))
    for args, message in cases:
        proc = segtune(*args, check=False, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr and proc.stderr.count("\n") == 1, (args, proc.stderr)
    assert not (tmp_path / "absent.db").exists()


def test_passwords_never_leave_the_url() -> None:
    assert (
        redact("postgresql+psycopg://segtune:s3cret@db:5432/studies")
        == "postgresql+psycopg://segtune:***@db:5432/studies"
    )
