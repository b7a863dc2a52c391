"""Numbers you can trust, end to end on a local Ray cluster and a real SQLite store (issue 11): a study
refuses trials it could not compare, one metric ranks and labels everything, and a relative
SEGTUNE_WEIGHTS reaches the trials."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
import ray
import segmentation_models_pytorch as smp
import torch
import yaml
from optuna.trial import TrialState

from segtune import cli
from tests.conftest import segtune
from tests.test_trust import lesion_folder

pytestmark = pytest.mark.e2e


def spec_file(tmp: Path, root: Path, **search: object) -> Path:
    spec = {
        "study": "lesions",
        "dataset": {
            "name": "folder",
            "root": str(root),
            "classes": ["background", "lesion"],
            "image_size": 32,
            "split": {"val": 0.25, "test": 0.25, "seed": 1},
        },
        "space": {"arch": "SmallUNet", "augment": "none", "batch_size": 4, "lr": {"loguniform": [1.0e-3, 1.0e-2]}},
        "search": {"trials": 1, "max_epochs": 1, "grace_period": 1, **search},
        "resources": {"cpus_per_trial": 1},
        "results_dir": str(tmp / "runs"),
    }
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_args(tmp: Path, root: Path, *extra: str, **search: object) -> list[str]:
    return ["run", str(spec_file(tmp, root, **search)), "--storage", f"sqlite:///{tmp / 'store.db'}", *extra]


def run(tmp: Path, root: Path, *extra: str, **search: object) -> subprocess.CompletedProcess[str]:
    return segtune(*run_args(tmp, root, *extra, **search), check=False, cwd=tmp)


def before_ray(
    tmp: Path, root: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> subprocess.CompletedProcess[str]:
    """`segtune run` in this process, for a run refused before Ray starts (its comparison with the study comes first):
    the same command line without a process's 10 s of imports."""
    args = run_args(tmp, root, *extra)
    capsys.readouterr()
    rc = cli.main(args)
    assert not ray.is_initialized(), "the refusal came after Ray started: run it in its own process"
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out.out, out.err)


def study(tmp: Path) -> optuna.Study:
    return optuna.load_study(study_name="lesions", storage=f"sqlite:///{tmp / 'store.db'}")


def test_a_study_refuses_incomparable_trials_and_keeps_every_runs_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    lesion_folder(root)
    assert run(tmp_path, root).returncode == 0
    before = study(tmp_path)

    refused = before_ray(tmp_path, root, capsys, "--set", "dataset.image_size=64", "--set", "search.max_epochs=2")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stdout + refused.stderr
    assert "dataset.image_size: 32 in the study, 64 now" in refused.stderr
    assert "search.max_epochs: 1 in the study, 2 now" in refused.stderr and "--allow-spec-change" in refused.stderr
    after = study(tmp_path)
    assert len(after.trials) == len(before.trials) and after.user_attrs["spec"] == before.user_attrs["spec"]

    moved = tmp_path / "mounted-elsewhere"  # the same files under another path: the same data
    shutil.copytree(root, moved)
    # compared and accepted; the study holds its 1 trial: nothing to train (in its own process: Ray has started)
    ok = run(tmp_path, moved, "--resume")
    assert ok.returncode == 0 and "nothing to run" in ok.stdout, ok.stdout + ok.stderr

    changed = tmp_path / "one-image-less"
    shutil.copytree(root, changed)
    (changed / "images" / "IMD005.png").unlink()
    (changed / "masks" / "IMD005.png").unlink()
    other = before_ray(tmp_path, changed, capsys)
    assert other.returncode == 2 and "dataset files: '12 pairs, sha256" in other.stderr
    assert "'11 pairs, sha256" in other.stderr

    allowed = run(tmp_path, root, "--set", "dataset.image_size=64", "--allow-spec-change")
    assert allowed.returncode == 0 and "note: --allow-spec-change: adding trials to 'lesions'" in allowed.stdout
    final = study(tmp_path)
    sizes = [r["spec"]["dataset"]["image_size"] for r in final.user_attrs["runs"]]
    assert sizes == [32, 64] and len([t for t in final.trials if "ray_trial_id" in t.user_attrs]) == 2


def test_search_metric_ranks_picks_epochs_and_labels_everything(tmp_path: Path) -> None:
    root = tmp_path / "data"
    lesion_folder(root)
    proc = run(tmp_path, root, metric="val_dice", trials=3, max_epochs=3, grace_period=3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = study(tmp_path)
    assert s.metric_names == ["val_dice"]  # optuna-dashboard names the objective
    for t in s.trials:  # the kept (checkpointed) epoch is the one best by Dice
        dice = t.intermediate_values
        assert t.user_attrs["best_epoch"] == max(dice, key=lambda e: (dice[e], -e))
        assert t.user_attrs["val_dice"] == pytest.approx(max(dice.values()))
        kept = torch.load(Path(t.user_attrs["checkpoint"], "model.pt"), weights_only=True)
        assert kept["epoch"] == t.user_attrs["best_epoch"]

    url = f"sqlite:///{tmp_path / 'store.db'}"
    lines = segtune("status", "lesions", "--storage", url).stdout.splitlines()
    assert lines[1].split()[:4] == ["trial", "state", "val_Dice", "val_mIoU"]
    ranked = [float(line.split()[2]) for line in lines[3:]]
    assert ranked == sorted(ranked, reverse=True)

    best = max(s.trials, key=lambda t: t.value)
    exported = segtune("export", "lesions", "--storage", url, "-o", str(tmp_path / "best.yaml"), cwd=tmp_path)
    assert f"(val Dice {best.value:.4f})" in exported.stdout
    doc = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert doc["metric"] == "val_dice" and doc["provenance"]["val_dice"] == pytest.approx(best.value)
    out = segtune("retrain", str(tmp_path / "best.yaml"), "--out", str(tmp_path / "re"), cwd=tmp_path).stdout
    assert "val Dice" in out
    metrics = json.loads((tmp_path / "re" / "metrics.json").read_text())
    assert metrics["metric"] == "val_dice"


def test_a_relative_segtune_weights_folder_reaches_every_trial(tmp_path: Path) -> None:
    root = tmp_path / "data"
    lesion_folder(root)
    (tmp_path / "w").mkdir()
    encoder = smp.encoders.get_encoder("resnet18", weights=None)
    torch.save(encoder.state_dict(), tmp_path / "w" / "resnet18.imagenet.pth")
    spec = yaml.safe_load(spec_file(tmp_path, root).read_text())
    spec["space"] = {"arch": "Unet", "encoder": "resnet18", "encoder_weights": "imagenet", "batch_size": 4}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    proc = segtune(
        "run",
        str(tmp_path / "spec.yaml"),
        "--storage",
        f"sqlite:///{tmp_path / 'store.db'}",
        cwd=tmp_path,
        env={"SEGTUNE_WEIGHTS": "w"},
    )  # relative to where `segtune run` starts
    trials = study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE], [t.user_attrs.get("fail_reason") for t in trials]
    assert "1/1 done: 0 running, 1 complete" in proc.stdout
