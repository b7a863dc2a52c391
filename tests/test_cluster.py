"""A real two-node Ray cluster (`ray start --head` and `ray start --address`, one CPU each, separate
processes on loopback) and a real PostgreSQL store: trials run on both nodes, the store tells the truth,
and the store's password shows up nowhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from segtune.search.store import redact
from tests.conftest import SPACES, segtune
from tests.test_inspect_export_retrain import free_port

pytestmark = pytest.mark.e2e
RAY = str(Path(sys.executable).with_name("ray"))


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen([RAY, "start", *args, "--num-cpus", "1", "--num-gpus", "0", "--node-ip-address",
                                 "127.0.0.1", "--disable-usage-stats", "--block"],
                                stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)  # fmt: skip


def _wait_started(proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.5)


@pytest.fixture()
def two_nodes(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The cluster's address and the environment a driver needs to join it (token authentication on)."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    port = free_port()
    address = f"127.0.0.1:{port}"
    procs = [_start(["--head", "--port", str(port), "--include-dashboard", "false"], tmp_path / "head.log", env)]
    try:
        _wait_started(procs[0], tmp_path / "head.log")
        procs.append(_start(["--address", address], tmp_path / "worker.log", env))
        _wait_started(procs[1], tmp_path / "worker.log")
        yield address, {k: env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    finally:
        for proc in reversed(procs):  # --block: SIGTERM stops the node and every process it started
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # the test is over: no need to wait for a graceful stop
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_a_search_on_two_ray_nodes_with_a_postgres_store(two_nodes, pg_url: str, tmp_path: Path) -> None:
    address, env = two_nodes
    password = pg_url.split(":")[2].split("@")[0]
    proc = segtune(
        "run", str(SPACES / "demo.yaml"), "--address", address, "--storage", pg_url, "--study", "cluster",
        "--set", "search.trials=4", "--set", "search.max_epochs=2", "--set", "search.grace_period=2",
        "--set", "dataset.image_size=64", "--set", f"results_dir={tmp_path / 'runs'}", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert f"4 trials on {address}" in proc.stdout and "4/4 done" in proc.stdout

    study = optuna.load_study(study_name="cluster", storage=pg_url)
    ran = [t for t in study.trials if "ray_trial_id" in t.user_attrs]
    assert len(ran) == 4 and all(t.state == TrialState.COMPLETE for t in ran)
    assert all(len(t.intermediate_values) == 2 and t.value is not None for t in ran)
    nodes = {t.user_attrs["node_id"] for t in ran}
    assert len(nodes) == 2, "trials ran on both nodes"

    status = segtune("status", "cluster", "--storage", pg_url, cwd=tmp_path).stdout
    assert "study 'cluster': 4 trials" in status and status.count("COMPLETE") == 4
    listing = segtune("status", "--storage", pg_url, cwd=tmp_path).stdout
    assert listing.splitlines()[2].split()[:3] == ["cluster", "4", "4"]

    # the password: not printed, not in the study's attrs, not in any file Tune wrote
    assert redact(pg_url) in proc.stdout
    for text in (proc.stdout, proc.stderr, status, listing):
        assert password not in text
    attrs = json.dumps([study.user_attrs] + [t.user_attrs for t in study.trials])
    assert password not in attrs
    leaked = [p for p in (tmp_path / "runs").rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert not leaked, leaked
