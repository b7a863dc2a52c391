"""A real two-node Ray cluster (`ray start --head` and `ray start --address`, one CPU each, separate
processes on loopback) and a real PostgreSQL store: trials run on both nodes, the store tells the truth,
and the store's password shows up nowhere."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from segtune.search.store import redact
from tests.conftest import SPACES, ray_node, segtune, stop_nodes
from tests.test_inspect_export_retrain import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture()
def two_nodes(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The cluster's address and the environment a driver needs to join it (token authentication on)."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    port = free_port()
    address = f"127.0.0.1:{port}"
    procs = []
    try:
        procs.append(
            ray_node(["--head", "--port", str(port), "--include-dashboard", "false"], tmp_path / "head.log", env)
        )
        procs.append(ray_node(["--address", address], tmp_path / "worker.log", env))
        yield address, {k: env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    finally:
        stop_nodes(procs)


def test_a_search_on_two_ray_nodes_with_a_postgres_store(two_nodes, pg_url: str, tmp_path: Path) -> None:
    address, env = two_nodes
    password = pg_url.split(":")[2].split("@")[0]
    proc = segtune(
        "run",
        str(SPACES / "demo.yaml"),
        "--address",
        address,
        "--storage",
        pg_url,
        "--study",
        "cluster",
        "--set",
        "search.trials=4",
        "--set",
        "search.max_epochs=2",
        "--set",
        "search.grace_period=2",
        "--set",
        "dataset.image_size=64",
        "--set",
        f"results_dir={tmp_path / 'runs'}",
        cwd=tmp_path,
        env=env,
    )
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


def _relay(listen: tuple[str, int], to: tuple[str, int], stop: threading.Event) -> None:
    """A TCP relay: the driver's namespace reaches the loopback-only PostgreSQL through the veth."""

    def pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    server = socket.create_server(listen)
    server.settimeout(0.5)
    while not stop.is_set():
        try:
            client, _ = server.accept()
        except TimeoutError:
            continue
        upstream = socket.create_connection(to)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()
    server.close()


@pytest.fixture()
def driver_netns() -> Iterator[tuple[str, str, str]]:
    """A network namespace joined to this host by a veth pair: (namespace, host side IP, namespace side IP).
    From inside, no Ray node of this host is reachable except over the veth, as from another machine."""
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"segtune-{tag}", f"vh{tag}", f"vn{tag}"
    octet = int(tag[:2], 16) % 200 + 20
    host_ip, ns_ip = f"10.{octet}.77.1", f"10.{octet}.77.2"
    inside = ["ip", "netns", "exec", ns]
    for command in (
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
        ["ip", "link", "set", ns_if, "netns", ns],
        ["ip", "addr", "add", f"{host_ip}/24", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        [*inside, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if],
        [*inside, "ip", "link", "set", ns_if, "up"],
        [*inside, "ip", "link", "set", "lo", "up"],
        [*inside, "ip", "route", "add", "default", "via", host_ip],  # as another machine has one
    ):
        subprocess.run(command, check=True, capture_output=True)
    try:
        yield ns, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


def test_a_driver_that_is_not_a_ray_node_joins_and_runs_a_search(driver_netns, pg_url: str, tmp_path: Path) -> None:
    """The documented cluster command from a machine that is not a Ray node (the compose driver's case):
    a head and a worker on this host, the driver in its own network namespace with its own /tmp/ray, so it
    sees no node of theirs but over the network; the store in PostgreSQL."""
    ns, host_ip, ns_ip = driver_netns
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    port, pg_port = free_port(), free_port()
    stop = threading.Event()
    relay = threading.Thread(target=_relay, args=((host_ip, pg_port), ("127.0.0.1", 5432), stop), daemon=True)
    relay.start()
    url = make_url(pg_url).set(host=host_ip, port=pg_port).render_as_string(hide_password=False)
    scratch = tmp_path / "tmp"  # the driver's temporary folder (Ray's own stays /tmp/ray): what its run leaves there
    scratch.mkdir()
    procs = []
    try:
        procs.append(
            ray_node(
                ["--head", "--port", str(port), "--include-dashboard", "false"], tmp_path / "head.log", env, ip=host_ip
            )
        )
        procs.append(ray_node(["--address", f"{host_ip}:{port}"], tmp_path / "worker.log", env, ip=host_ip))
        run = [
            sys.executable,
            "-m",
            "segtune",
            "run",
            str(SPACES / "demo.yaml"),
            "--address",
            f"{host_ip}:{port}",
            "--study",
            "netns",
            "--set",
            "search.trials=3",
            "--set",
            "search.max_epochs=1",
            "--set",
            "search.grace_period=1",
            "--set",
            "dataset={name: synthetic, num_images: 32, image_size: 32}",
            "--set",
            "space={arch: SmallUNet, batch_size: 4}",
            "--set",
            "search.starting_points=[]",
            "--set",
            f"results_dir={tmp_path / 'runs'}",
        ]
        script = "mount -t tmpfs tmpfs /tmp/ray && exec " + " ".join(shlex.quote(a) for a in run)
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
            env={**env, "SEGTUNE_STORAGE": url, "PYTHONUNBUFFERED": "1", "TMPDIR": str(scratch), "RAY_TMPDIR": "/tmp"},
        )
    finally:
        stop_nodes(procs)
        stop.set()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"3 trials on {host_ip}:{port}" in proc.stdout and "3/3 done" in proc.stdout
    trials = optuna.load_study(study_name="netns", storage=pg_url).trials
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert {t.user_attrs["node_ip"] for t in trials} == {host_ip}  # trials ran on the cluster, none on the driver
    assert ns_ip not in proc.stdout
    assert not list(scratch.glob("segtune-driver-node-*")), "the driver node's log is removed with the node"
