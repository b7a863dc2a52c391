"""Issue 38, items 1-4: node-local state a second user can share, a stored model checked by its hash, figures and
tests that measure what they name, and a library that sets no process state when it is imported."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
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
    import ray
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

    try:
        with tune_environment():
            tune.Tuner(
                trainable,
                run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0, callbacks=[Counted()]),
            ).fit()
    finally:
        ray.shutdown()
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


# What a trial does with its node's state: a step under the node's lock, then its model's costs, timed in a quiet
# moment and kept for the node. In the node's default folder (under $TMPDIR).
TRIAL_ON_NODE = r"""
import json, sys, torch
from segtune.config import TrialConfig
from segtune.search.nodes.quiet import NodeQuiet
from segtune.search.trial.costs import measure
torch.set_num_threads(1)
node = NodeQuiet()
with node.step():
    pass
size = int(sys.argv[1])
print(json.dumps(measure(TrialConfig(arch="SmallUNet"), 2, (size, size), torch.device("cpu"), ["latency_ms"], node)))
node.close()
"""


def trial_on_node(tmp: Path, uid: int = 0, size: int = 32, **env: str) -> subprocess.CompletedProcess[str]:
    """:data:`TRIAL_ON_NODE` as user ``uid``. The interpreter lives under /root (0700), so another uid keeps one
    capability: reading and searching folders (CAP_DAC_READ_SEARCH); it writes as that user, nothing more."""
    as_user = []
    if uid != 0:
        caps = ["--inh-caps", "+dac_read_search", "--ambient-caps", "+dac_read_search"]
        as_user = ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups", *caps]
    environ = {**os.environ, "TMPDIR": str(tmp), "HOME": str(tmp), "PYTHONPATH": str(REPO), **env}
    environ["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [*as_user, sys.executable, "-c", TRIAL_ON_NODE, str(size)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp,
        env=environ,
    )


@pytest.fixture()
def node_tmp() -> Iterator[Path]:
    """A temporary folder like /tmp (every user may write there, sticky), for the node's state."""
    folder = Path(tempfile.mkdtemp(prefix="segtune-test-node-"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_second_user_runs_trials_on_a_node_after_root_did(node_tmp: Path) -> None:
    """root's trial, then uid 65534's, on one node: each user has a folder of its own (0700, its own), times its model
    in a quiet moment and keeps the figure there. A folder of another user's under a user's name is never used: that
    user's trial times alone and says why. (On main: PermissionError, the second user opening root's lock file.)"""
    first = trial_on_node(node_tmp)
    assert first.returncode == 0, first.stderr[-2000:]
    second = trial_on_node(node_tmp, uid=65534)
    assert second.returncode == 0, second.stderr[-2000:]
    for proc, uid in ((first, 0), (second, 65534)):
        costs = json.loads(proc.stdout.strip().splitlines()[-1])
        assert costs["latency_ms"] > 0 and costs["latency_quiet"] is True, costs
        folder = node_tmp / f"segtune-node-{uid}"
        info = folder.stat()
        assert info.st_uid == uid and stat.S_IMODE(info.st_mode) == 0o700
        assert (folder / "costs.json").stat().st_uid == uid

    planted = node_tmp / "segtune-node-65533"  # made by root, open to all, under the name uid 65533 would use
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)
    third = trial_on_node(node_tmp, uid=65533)
    assert third.returncode == 0, third.stderr[-2000:]
    costs = json.loads(third.stdout.strip().splitlines()[-1])
    assert costs["latency_quiet"] is False and f"{planted} belongs to uid 0" in costs["latency_quiet_reason"], costs
    assert list(planted.iterdir()) == []  # nothing of uid 65533's was put there
    assert not list(node_tmp.glob("segtune-node-65533-*"))  # its private folder went with the trial


HOLDER = r"""
import sys, time
from pathlib import Path
from segtune.search.nodes.quiet import NodeQuiet
node = NodeQuiet(Path(sys.argv[1]))
with node.step():  # a step that does not end: a hung loader, then a SIGSTOP or a debugger
    print("stepping", flush=True)
    time.sleep(600)
"""


def time_model(node: Any, into: list[dict]) -> None:
    """A trial's costs, timed in a quiet moment of ``node``, into ``into``."""
    from segtune.config import TrialConfig
    from segtune.search.trial import costs

    into.append(costs.measure(TrialConfig(arch="SmallUNet"), 2, (32, 32), torch.device("cpu"), ["latency_ms"], node))


def test_a_stopped_or_hung_neighbour_does_not_stall_a_timing_beyond_the_bound(tmp_path: Path) -> None:
    """A neighbour holds the node's step lock in a step that never ends. The timing gives up after its bound (2 s here)
    and records why, when the neighbour hangs; at once when it is stopped (SIGSTOP: its state says so). It times
    anyway, says `latency_quiet: false`, and the node does not keep that figure. (On main: the timing waits for
    ever.)"""
    from segtune.search.nodes.quiet import NodeQuiet
    from segtune.search.trial import costs

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "stepping"
        for stop in (False, True):
            if stop:
                os.kill(holder.pid, signal.SIGSTOP)
            costs._cache.clear()
            timer = NodeQuiet(tmp_path, wait_s=2.0)
            measured: list[dict] = []
            started = time.monotonic()
            timing = threading.Thread(target=time_model, args=(timer, measured), daemon=True)
            timing.start()
            timing.join(timeout=30)
            took = time.monotonic() - started
            assert measured, "the timing is still waiting for the neighbour's step"
            figure = measured[0]
            assert figure["latency_ms"] > 0 and figure["latency_quiet"] is False, figure
            if stop:
                assert f"pid {holder.pid} holds the node's step lock and is stopped" in figure["latency_quiet_reason"]
                assert figure["latency_quiet_wait_s"] < 1.0  # seen at once, not after the bound
            else:
                assert "the node's step lock was still held after 2 s" in figure["latency_quiet_reason"]
                assert 2.0 <= figure["latency_quiet_wait_s"] < 3.0
            assert took < 20
            timer.close()
        assert not (tmp_path / "costs.json").exists()  # a figure timed beside a training neighbour is not kept
    finally:
        holder.kill()  # a stopped process dies of SIGKILL too
        holder.wait()


def test_the_nodes_figures_are_keyed_to_what_they_measured_expire_and_can_be_refreshed(node_tmp: Path) -> None:
    """One trial's figure is reused by the next for the same model, canvas and code; another canvas is measured; a
    figure older than SEGTUNE_COST_TTL_S is measured again, and so is one from before a worker started with
    SEGTUNE_COST_REFRESH=1. (On main: a figure never expires, and the key names no canvas precision or code.)"""
    timed = "latency_quiet_wait_s"  # present when this trial timed the model itself
    first = json.loads(trial_on_node(node_tmp).stdout.strip().splitlines()[-1])
    reused = json.loads(trial_on_node(node_tmp).stdout.strip().splitlines()[-1])
    assert timed in first and timed not in reused and reused["latency_ms"] == first["latency_ms"]
    other = json.loads(trial_on_node(node_tmp, size=48).stdout.strip().splitlines()[-1])
    assert timed in other
    figures = json.loads((node_tmp / "segtune-node-0" / "costs.json").read_text())
    assert len(figures) == 2
    for key in figures:
        assert all(f"{part}=" in key for part in ("model", "canvas", "precision", "device", "threads", "code"))

    time.sleep(1.5)
    expired = json.loads(trial_on_node(node_tmp, SEGTUNE_COST_TTL_S="1").stdout.strip().splitlines()[-1])
    assert timed in expired
    refreshed = json.loads(trial_on_node(node_tmp, SEGTUNE_COST_REFRESH="1").stdout.strip().splitlines()[-1])
    assert timed in refreshed
    again = json.loads(trial_on_node(node_tmp, SEGTUNE_COST_REFRESH="0").stdout.strip().splitlines()[-1])
    assert timed not in again and again["latency_ms"] == refreshed["latency_ms"]


TIMER = r"""
import sys, time
from pathlib import Path
from segtune.search.nodes.quiet import NodeQuiet
node = NodeQuiet(Path(sys.argv[1]))
with node.quiet():  # a timing that does not end: stopped (SIGSTOP, a debugger) while it holds the node
    print("timing", flush=True)
    time.sleep(600)
"""


def test_a_stopped_timer_does_not_stall_its_neighbours_steps(tmp_path: Path) -> None:
    """A trial stopped while it times its model holds the node's locks exclusively: its neighbours see that it is
    stopped and train on (a step, not the neighbour's figure, is what must not wait). (On main: they wait for
    ever.)"""
    from segtune.search.nodes.quiet import NodeQuiet

    timer = subprocess.Popen(
        [sys.executable, "-c", TIMER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert timer.stdout is not None and timer.stdout.readline().strip() == "timing"
        os.kill(timer.pid, signal.SIGSTOP)
        neighbour = NodeQuiet(tmp_path, wait_s=60.0)
        steps: list[float] = []

        def train() -> None:
            for _ in range(3):
                started = time.monotonic()
                with neighbour.step():
                    pass
                steps.append(time.monotonic() - started)

        training = threading.Thread(target=train, daemon=True)
        training.start()
        training.join(timeout=30)
        assert len(steps) == 3, "the neighbour's steps wait for the stopped timer"
        assert max(steps) < 2.0, steps  # seen as stopped, long before the 180 s a step would wait for a live timer
        neighbour.close()
    finally:
        timer.kill()
        timer.wait()


def test_the_machines_cpus_come_from_its_affinity_and_its_cgroup_quota(tmp_path: Path) -> None:
    """What a local cluster is capped by, read from public sources: the CPUs this process may run on, and a
    container's CPU quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`)."""
    from segtune.search.nodes.cluster import cgroup_cpu_quota, machine_cpus

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(v1) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    assert cgroup_cpu_quota(v1) == 4.0
    assert cgroup_cpu_quota(tmp_path / "none") is None
    quota = cgroup_cpu_quota()
    expected = len(os.sched_getaffinity(0)) if quota is None else max(1, min(len(os.sched_getaffinity(0)), int(quota)))
    assert machine_cpus() == expected >= 1
