"""The cluster a team runs (issue 29), for real: a two-node local Ray cluster (`setsid ray start --block`, the worker
node on 127.0.0.2), a driver with no disk in common with the workers (its own mount namespace, a private tmpfs
over its folders), a worker node killed mid-trial, S3 through a real S3 server on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.conftest import REPO, Background, ray_node, segtune, stop_nodes
from tests.test_inspect_export_retrain import free_port

pytestmark = pytest.mark.e2e

# short epochs on synthetic scenes (the driver decodes them and ships them to the nodes through Ray)
SPEC = {
    "study": "team",
    "dataset": {"name": "synthetic", "num_images": 96, "num_classes": 2, "image_size": 64},
    "space": {"arch": "SmallUNet", "lr": {"loguniform": [2.0e-3, 1.0e-2]}, "batch_size": 8, "augment": "none"},
    "search": {"trials": 3, "max_epochs": 3, "grace_period": 1, "min_first_rung": 1, "seed": 0},
}
SAMPLE_IMAGES = REPO / "segtune" / "samples" / "oxford-pets-sample" / "oxford-iiit-pet" / "images"
FAST_DEATH = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4"}  # a lost node: ~2 s


class Cluster:
    """A head (1 CPU, 127.0.0.1) and worker nodes (1 CPU each, 127.0.0.2), each in its own session."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}  # what a driver needs to join
        self.env = {**os.environ, **FAST_DEATH, **self.auth}
        head = ["--head", "--port", str(self.port), "--include-dashboard", "false"]
        self.head = ray_node(head, folder / "head.log", self.env)
        self.workers: list[subprocess.Popen[bytes]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add_worker(self) -> subprocess.Popen[bytes]:
        log = self.folder / f"worker{len(self.workers)}.log"
        node = ray_node(["--address", self.address], log, self.env, ip="127.0.0.2")
        self.workers.append(node)
        return node

    def lose(self, node: subprocess.Popen[bytes]) -> None:
        """The node's whole process group (raylet, its workers, the trial on it) killed at once."""
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=30)

    def stop(self) -> None:
        stop_nodes([self.head, *self.workers])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.add_worker()
        yield c
    finally:
        c.stop()


def write_spec(folder: Path, space: dict[str, object] | None = None, **search: object) -> Path:
    spec = {**SPEC, "space": space or SPEC["space"], "search": {**SPEC["search"], **search}}
    path = folder / "team.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


CHECK = """
import json, sys
import optuna
from segtune.search.store import artifacts
study = optuna.load_study(study_name="team", storage=sys.argv[1])
out = {"artifacts": study.user_attrs["artifacts"], "trials": {}}
for t in study.trials:
    out["trials"][t.number] = {"state": t.state.name, "files": sorted(artifacts.files_of(study, t.number)),
                               "node_ip": t.user_attrs.get("node_ip")}
print(json.dumps(out))
"""


def watch_and_lose(cluster: Cluster, run: Background, store: str, node: subprocess.Popen[bytes]) -> int:
    """Kill ``node`` once a trial running there has saved a state (or, states off, trained an epoch)."""
    deadline = time.monotonic() + 600
    while True:
        assert run.proc.poll() is None and time.monotonic() < deadline, run.output
        try:
            trials = optuna.load_study(study_name="team", storage=store).trials
        except KeyError:
            trials = []
        there = [
            t
            for t in trials
            if t.state == TrialState.RUNNING
            and t.user_attrs.get("node_ip") == "127.0.0.2"
            and (t.user_attrs.get("state_epoch") or 0) >= 1
        ]
        if there:
            cluster.lose(node)
            return there[0].number
        time.sleep(0.3)


def test_no_shared_disk_and_a_lost_node(cluster: Cluster, tmp_path: Path) -> None:
    """The driver runs in its own mount namespace with a private tmpfs over its folders: no worker can see where it
    writes. The worker node is killed once the starting point running there has saved a state. That trial ends on
    the head, one value per epoch; every complete and pruned trial's model and overlay reach the driver's artifact
    store anyway, and `predict STUDY` works from it (inside the namespace, where the tmpfs is)."""
    private = tmp_path / "driver-only"
    private.mkdir()
    # two starting points (never stopped) train 10 epochs, one on each node; the two others stop at rung 1. Ten, so
    # that the kill lands mid-trial: an epoch here takes under a second, a state is seen in the store an epoch or two
    # after it is saved, and with 6 epochs a fast machine had finished the trial before the kill (2026-11-29)
    points = [{"lr": 3.0e-3}, {"lr": 5.0e-3}]
    spec = write_spec(
        tmp_path,
        trials=4,
        max_epochs=10,
        min_first_rung=5,
        first_rung="grace",
        promotion=False,
        starting_points=points,
        prior="first",  # run whole, not raced (a race stops the slower point at its milestone)
    )
    shutil.copy(SAMPLE_IMAGES / "Bengal_10.jpg", tmp_path / "x.png")
    (tmp_path / "check.py").write_text(CHECK)
    store = f"sqlite:///{tmp_path / 'store.db'}"  # shared with the test, which watches it to know when to kill
    py, seg = sys.executable, f"{sys.executable} -m segtune"
    script = (
        f"set -e; mount -t tmpfs tmpfs {private}; "
        f"{seg} run {spec} --address {cluster.address} --storage {store} --artifacts {private}/artifacts "
        f"--set results_dir={private}/runs; "
        f"{py} {tmp_path / 'check.py'} {store} > {tmp_path / 'check.json'}; "
        f"{seg} predict team {tmp_path / 'x.png'} --storage {store} -o {private}/pred; "
        f"ls {private}/pred > {tmp_path / 'predicted.txt'}; ls {private}/artifacts | wc -l > {tmp_path / 'n.txt'}"
    )
    command = ["unshare", "--mount", "--propagation", "private", "bash", "-c", script]
    run = Background(cwd=tmp_path, env=cluster.auth, command=command)
    try:
        number = watch_and_lose(cluster, run, store, cluster.workers[-1])
        rc = run.wait(timeout=900)
    finally:
        run.kill()
    assert rc == 0, run.output
    study = optuna.load_study(study_name="team", storage=store)
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"], states
    moved = study.trials[number]
    assert moved.state == TrialState.COMPLETE, moved.user_attrs
    assert sorted(moved.intermediate_values) == list(range(1, 11))  # one value per epoch: no gap, no duplicate
    assert moved.user_attrs["restarts"] == 1 and "127.0.0.2" in moved.user_attrs["lost_node"]
    assert len(moved.user_attrs["nodes"]) == 2 and moved.user_attrs["node_ip"] != "127.0.0.2"  # ended on the head
    assert f"trial {number}: its worker or node was lost" in run.output

    found = json.loads((tmp_path / "check.json").read_text())
    assert found["artifacts"] == str(private / "artifacts")
    assert all(t["files"] == ["model.pt", "overlay.png"] for t in found["trials"].values()), found
    assert int((tmp_path / "n.txt").read_text()) == 8  # 4 models and 4 overlays, in the driver's private folder
    assert not (private / "artifacts").exists()  # outside the namespace: nothing of the driver's was visible
    assert (tmp_path / "predicted.txt").read_text().split() == ["x_mask.png", "x_overlay.png"]


def test_without_states_a_lost_node_fails_its_trial_naming_it(cluster: Cluster, tmp_path: Path) -> None:
    node = cluster.add_worker()
    store = f"sqlite:///{tmp_path / 'store.db'}"
    spec = write_spec(tmp_path, trials=2, max_epochs=8, scheduler="none")
    run = Background(
        "run",
        str(spec),
        "--address",
        cluster.address,
        "--storage",
        store,
        "--set",
        f"results_dir={tmp_path}/runs",
        "--set",
        "train.checkpoint_every=0",
        cwd=tmp_path,
        env=cluster.auth,
    )
    try:
        deadline = time.monotonic() + 600
        number = None
        while number is None:  # states off: kill it once it has trained an epoch there
            assert run.proc.poll() is None and time.monotonic() < deadline, run.output
            with contextlib.suppress(KeyError):
                trials = optuna.load_study(study_name="team", storage=store).trials
                there = [
                    t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("node_ip") == "127.0.0.2"
                ]
                number = there[0].number if there and there[0].intermediate_values else None
            time.sleep(0.3)
        cluster.lose(node)
        rc = run.wait(timeout=600)
    finally:
        run.kill()
    assert rc == 0, run.output  # the search goes on with the nodes left
    study = optuna.load_study(study_name="team", storage=store)
    lost = study.trials[number]
    assert lost.state == TrialState.FAIL and "127.0.0.2" in lost.user_attrs["fail_reason"], lost.user_attrs
    assert "was lost" in lost.user_attrs["fail_reason"]
    others = [t for t in study.trials if t.number != number]
    assert [t.state for t in others] == [TrialState.COMPLETE]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3-protocol server on loopback (moto's standalone server, as Ray's own tests run it): the environment
    segtune's processes find it through, the usual AWS variables."""
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "test-only",
        "AWS_SECRET_ACCESS_KEY": "test-only-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    try:
        import boto3

        deadline = time.monotonic() + 60
        while True:
            try:
                boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], **_keys(env)).create_bucket(Bucket="team")
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                assert time.monotonic() < deadline and server.poll() is None, log.read_text()
                time.sleep(0.3)
        yield env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _keys(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


def test_models_go_to_s3_and_come_back_through_boto3(s3: dict[str, str], tmp_path: Path) -> None:
    """The search uploads every trial's files under a key prefix; export-model (smp's own format) downloads the
    winner's; the dashboard shows a trial's artifacts in headless Chromium."""
    import boto3

    store = f"sqlite:///{tmp_path / 'store.db'}"
    spec = write_spec(tmp_path, {"arch": "Unet", "encoder": "resnet18", "batch_size": 8}, trials=2, max_epochs=2)
    run = Background(
        "run",
        str(spec),
        "--storage",
        store,
        "--artifacts",
        "s3://team/studies/2026",
        "--set",
        f"results_dir={tmp_path}/runs",
        cwd=tmp_path,
        env=s3,
    )
    assert run.wait(timeout=600) == 0, run.output
    assert "test-only-secret" not in run.output
    study = optuna.load_study(study_name="team", storage=store)
    assert study.user_attrs["artifacts"] == "s3://team/studies/2026"  # where, never how to log in
    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], **_keys(s3))
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="team")["Contents"]]
    assert len(keys) == 4 and all(k.startswith("studies/2026/") for k in keys)  # 2 models, 2 overlays
    shutil.rmtree(tmp_path / "runs")  # the trials' own folders are gone: only S3 holds the models
    scratch = tmp_path / "tmp"  # the command's temporary folder (torch keeps a cache there; the model goes)
    scratch.mkdir()
    out = str(tmp_path / "smp")
    segtune(
        "export-model", "team", "--storage", store, "--format", "smp", "-o", out, env={**s3, "TMPDIR": str(scratch)}
    )
    exported = sorted(p.name for p in (tmp_path / "smp").iterdir())
    assert exported == ["README.md", "config.json", "model.safetensors", "preprocessing.json"], exported
    assert not list(scratch.glob("segtune-*")), "the downloaded model is removed when export-model ends"

    port = free_port()
    dash = Background("dashboard", "--storage", store, "--port", str(port), cwd=tmp_path, env=s3)
    try:
        dash.wait_for(f"http://127.0.0.1:{port}/")
        trial = study.trials[0]
        url = f"http://127.0.0.1:{port}/dashboard/studies/1/trials?numbers={trial.number}"  # the store's one study
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
        dom = subprocess.run(
            ["/usr/bin/chromium", *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
        ).stdout
    finally:
        dash.kill()
    assert "model.pt" in dom and "overlay.png" in dom, dom[-2000:]
