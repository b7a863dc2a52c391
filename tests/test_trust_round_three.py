"""Issue 38, items 1-4: node-local state a second user can share, a stored model checked by its hash, figures and
tests that measure what they name, and a library that sets no process state when it is imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import torch
import yaml

from segtune.results.export import ranked_complete
from segtune.search.store import artifacts
from tests.conftest import PETS_SAMPLE, SPACES, demo_search, segtune

PETS_IMAGES = PETS_SAMPLE / "oxford-iiit-pet" / "images"

REPO = Path(__file__).resolve().parents[1]

# Imports every third-party module segtune's modules import (so that what they set at import is not counted), then
# takes the process's state, imports segtune and every module under it, and prints what changed.
IMPORT_ALL = r"""
import ast, importlib, json, logging, os, pkgutil, sys, warnings
from pathlib import Path

package = Path(sys.argv[1])
outside = set()
for path in package.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            outside |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            outside.add(node.module)
for name in sorted(n for n in outside if not n.startswith(("segtune", "__future__"))):
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # an optional extra (boto3, onnx) that is not installed
for name in ("HF_HUB_OFFLINE", "NO_ALBUMENTATIONS_UPDATE", "SEGTUNE_DOWNLOAD_WEIGHTS"):
    os.environ.pop(name, None)  # the libraries that read them are imported by now

def levels():
    names = ["", "optuna", "ray", "ray.tune", "ray.tune.execution.experiment_state", *logging.root.manager.loggerDict]
    return {n: logging.getLogger(n).level for n in names}

env, logs, filters = dict(os.environ), levels(), list(warnings.filters)
import segtune
imported = ["segtune"]
for found in pkgutil.walk_packages(segtune.__path__, "segtune."):
    if found.name not in ("segtune.__main__",):  # running the command is not importing it
        importlib.import_module(found.name)
        imported.append(found.name)
after = levels()
print(json.dumps({
    "imported": imported,
    "environ": sorted(k for k in {*env, *os.environ} if env.get(k) != os.environ.get(k)),
    "loggers": {n: level for n, level in after.items() if logs.get(n, logging.NOTSET) != level},
    "warnings": [str(f) for f in warnings.filters if f not in filters],
}))
"""


def test_importing_segtune_and_every_module_sets_no_process_state() -> None:
    """A notebook that imports segtune keeps its environment, its loggers' levels and its warning filters: HF Hub
    downloads still work, Optuna still says what it says. (On main: HF_HUB_OFFLINE and NO_ALBUMENTATIONS_UPDATE set,
    Optuna's verbosity and two warning filters.)"""
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, str(REPO / "segtune")], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    changed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"segtune.spec", "segtune.cli", "segtune.search.run", "segtune.search.nodes.cluster"} <= set(
        changed["imported"]
    )
    assert changed["environ"] == [], changed
    assert changed["loggers"] == {}, changed
    assert changed["warnings"] == [], changed


COMMAND_THEN_STATE = r"""
import json, os, sys
from segtune import cli
code = cli.main(sys.argv[1:])
import huggingface_hub.constants
print(json.dumps({"code": code, "hub_offline": huggingface_hub.constants.HF_HUB_OFFLINE,
                  "after": os.environ.get("HF_HUB_OFFLINE")}))
"""


def test_a_command_runs_with_the_hub_offline_and_gives_the_environment_back(tmp_path: Path) -> None:
    """`segtune check` of a spec whose pretrained weights are not on this machine: the command's imports saw the
    Hugging Face Hub offline (no download attempted in every trial at once), the error is the clear one, and an
    in-process caller's environment is its own again once the command returns."""
    spec = yaml.safe_load((SPACES / "demo.yaml").read_text())
    spec["space"] = {"arch": "Unet", "encoder": "resnet34", "encoder_weights": "imagenet"}
    spec["search"].pop("starting_points")  # they belong to the space replaced here
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "SEGTUNE_DOWNLOAD_WEIGHTS")}
    env.update(HF_HOME=str(tmp_path / "hf"), SEGTUNE_WEIGHTS=str(tmp_path / "weights"), PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", COMMAND_THEN_STATE, "check", str(tmp_path / "spec.yaml")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    state = json.loads(proc.stdout.strip().splitlines()[-1])
    assert state == {"code": 2, "hub_offline": True, "after": None}, proc.stderr[-2000:]
    assert "imagenet weights for resnet34 are not on this machine" in proc.stderr


def test_tune_snapshots_its_experiment_only_at_a_runs_start_and_end(tmp_path: Path) -> None:
    """Tune copies a periodic snapshot of its experiment into results_dir from a background thread, while it writes the
    next one into the folder being copied (a temporary file renamed meanwhile fails the copy). segtune never restores
    that snapshot, so during a search there is none between the first and the last; Tune's default takes one every 10
    s at least. A callback's state is asked for at every snapshot: a real Tune run counts them."""
    from ray import tune

    from segtune.search.nodes.cluster import connect_ray, tune_environment

    connect_ray(None, local_cpus=1)

    class Counted(tune.Callback):
        snapshots = 0

        def get_state(self) -> None:
            Counted.snapshots += 1

    def trainable(config: dict) -> None:
        for epoch in range(26):
            time.sleep(0.5)
            tune.report({"epoch": epoch})

    with tune_environment():
        tune.Tuner(
            trainable,
            run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0, callbacks=[Counted()]),
        ).fit()
    assert Counted.snapshots == 2


def test_a_model_overwritten_in_its_run_folder_is_refused_and_the_stored_one_stays_as_it_was(tmp_path: Path) -> None:
    """After a search, a user's `torch.save` over the best trial's `model.pt` in its run folder (it truncates and
    rewrites that file) with zeroed weights: `predict STUDY` and `export-model STUDY` refuse it with one line naming
    the run folder's file and the stored one, exit 2. The stored file was never that file and is as uploaded: once the
    run folder is gone, predict reads it from the store. A stored file changed in place is refused too. (On main both
    commands used the zeroed weights without a word.)"""
    demo_search(tmp_path, 2, one_at_a_time=True)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    study = optuna.load_study(study_name="e2e", storage=url)
    best = ranked_complete(study)[0]
    in_run = Path(best.user_attrs["checkpoint"], artifacts.MODEL)
    stored = Path(study.user_attrs[artifacts.ATTR], artifacts.files_of(study, best.number)[artifacts.MODEL])
    assert best.user_attrs[artifacts.SHA256_ATTR] == artifacts.sha256(stored) == artifacts.sha256(in_run)
    assert not os.path.samefile(in_run, stored)

    payload = torch.load(in_run, weights_only=True)
    payload["state_dict"] = {k: torch.zeros_like(v) for k, v in payload["state_dict"].items()}
    torch.save(payload, in_run)  # in place: the same file, truncated and rewritten
    picture = next((PETS_IMAGES).glob("*.jpg"))
    for args in (
        ["predict", "e2e", str(picture), "-o", str(tmp_path / "masks")],
        ["export-model", "e2e", "-o", str(tmp_path / "model.onnx")],
    ):
        proc = segtune(*args, "--storage", url, cwd=tmp_path, check=False)
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        error = proc.stderr.strip().splitlines()
        assert len(error) == 1 and f"trial {best.number}'s model {in_run} is not the model stored" in error[0], error
        assert f"the stored one: {stored}" in error[0]
    assert not (tmp_path / "model.onnx").exists()
    assert artifacts.sha256(stored) == best.user_attrs[artifacts.SHA256_ATTR]  # the store never shared that file

    shutil.rmtree(in_run.parent)  # the run folder is gone: predict fetches the stored model
    proc = segtune("predict", "e2e", str(picture), "-o", str(tmp_path / "masks"), "--storage", url, cwd=tmp_path)
    assert "wrote 1 masks" in proc.stdout
    with open(stored, "r+b") as f:  # the stored file itself changed in place
        f.seek(-8, os.SEEK_END)
        f.write(b"\0" * 8)
    proc = segtune("predict", "e2e", str(picture), "-o", str(tmp_path / "masks"), "--storage", url, check=False)
    error = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(error) == 1 and f"fetched from {stored}" in error[0], error
