"""Shared fixtures. The real Oxford-IIIT Pet sample lives in ../shared/datasets beside the checkout (CI has it)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Two test workers share CI's 2 cores, and each runs PyTorch (in process, or in the `segtune` and Ray processes it
# starts, which inherit this) on as many threads as there are cores. OpenMP's waiting threads spin (libgomp: 300000
# turns), so two such processes side by side spin against each other. One epoch of the pretrained test's Unet-Lite0
# at 128 px, 64 pictures (its `fit`, 2026-11-29): alone 10.5 s; two side by side 47 s each, and 17.5 s each with
# 1000 turns, which costs nothing alone (10.0 s). Sleeping at once (OMP_WAIT_POLICY=PASSIVE) took 20 s side by side
# but 23 s alone. It must be set before torch is first imported.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")
# The Ctrl-C tests send SIGINT to `segtune` processes they start. A shell starts a background job (`pytest &`)
# with SIGINT ignored, children inherit that, and Python then never raises KeyboardInterrupt in them: give them
# the default, as in a foreground run.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
SPACES = REPO / "search_spaces"
PETS_SAMPLE = REPO.parent / "shared" / "datasets" / "oxford-iiit-pet-sample"


@pytest.fixture(autouse=True)
def no_ray_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that leaves this process connected to Ray fails itself, not whichever test this worker runs next
    (a module's shared cluster, ``ray_cluster``, is that module's to end)."""
    before = "ray" in sys.modules and sys.modules["ray"].is_initialized()  # a module's cluster, made before
    yield
    ray = sys.modules.get("ray")
    if ray is not None and not before and "ray_cluster" not in request.fixturenames and ray.is_initialized():
        ray.shutdown()
        pytest.fail("the test left this process connected to Ray")


@pytest.fixture(scope="session")
def pets_sample() -> Path:
    assert (PETS_SAMPLE / "oxford-iiit-pet" / "images").is_dir(), (
        f"the Oxford-IIIT Pet sample is expected at {PETS_SAMPLE} (../shared/datasets beside the checkout)"
    )
    return PETS_SAMPLE


@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so a stray segtune.db or runs/ would be noticed, not shared."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def segtune(
    *args: str, cwd: Path | None = None, check: bool = True, timeout: int = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command line, in its own process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "segtune", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# One trial at a time, so one trial worker to start instead of one a slot: starting workers (torch, smp, Ray Tune:
# about 10 s each here) is most of a small run. Not more CPUs a trial: a trial on 2 threads beside the other test
# worker is the oversubscription GOMP_SPINCOUNT above is about.
ONE_AT_A_TIME = ("--set", "search.max_concurrent=1")


def demo_args(tmp: Path, trials: int, study: str = "e2e", epochs: int = 4, one_at_a_time: bool = False) -> list[str]:
    """A small real search: the demo spec at 64 px, on a local Ray cluster and a SQLite file in tmp."""
    slots = ONE_AT_A_TIME if one_at_a_time else ()
    return [
        "run",
        str(SPACES / "demo.yaml"),
        "--storage",
        f"sqlite:///{tmp / 'store.db'}",
        "--study",
        study,
        "--set",
        f"search.trials={trials}",
        "--set",
        f"search.max_epochs={epochs}",
        "--set",
        "search.grace_period=1",
        "--set",
        "dataset.image_size=64",
        "--set",
        "space.lr={loguniform: [1.0e-3, 1.0e-2]}",
        "--set",
        f"results_dir={tmp / 'runs'}",
        *slots,
    ]


def demo_search(
    tmp: Path, trials: int, study: str = "e2e", one_at_a_time: bool = False
) -> subprocess.CompletedProcess[str]:
    return segtune(*demo_args(tmp, trials, study, one_at_a_time=one_at_a_time), cwd=tmp)


class Background:
    """`segtune ...` running in its own process; its output lines are collected as they come."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None, command: list[str] | None = None):
        """``segtune ARGS...``, or ``command`` (another program) when given."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            command or [sys.executable, "-m", "segtune", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, f"exited with {self.proc.returncode} before {text!r}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{self.output}"
            time.sleep(0.2)

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One real search shared by the tests that only read a store, run once per test session.

    Under pytest-xdist each worker is a session of its own, and the files that read this search run on either:
    the first worker to need it runs it in the folder both share (the parent of the workers' own), under a
    lock; the other waits for it and reads the same store. Tests that add to a study work on a copy.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this test session
    tmp, done = root / "searched", root / "searched.json"
    with open(root / "searched.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            tmp.mkdir(exist_ok=True)
            proc = demo_search(tmp, 8)
            done.write_text(json.dumps({"args": proc.args, "stdout": proc.stdout, "stderr": proc.stderr}))
        saved = json.loads(done.read_text())
    return tmp, subprocess.CompletedProcess(saved["args"], 0, saved["stdout"], saved["stderr"])


PG_ENV = "SEGTUNE_TEST_POSTGRES"


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on a real server; its URL (with password) for the test.

    .ci/run installs PostgreSQL, starts it on loopback and sets SEGTUNE_TEST_POSTGRES to a role
    allowed to create databases. Elsewhere without it the test is skipped, never in CI.
    """
    import psycopg
    from sqlalchemy.engine import make_url

    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set: .ci/run starts PostgreSQL and sets it")
        pytest.skip(f"no PostgreSQL server: set {PG_ENV}=postgresql+psycopg://user:pw@127.0.0.1/db")
    url = make_url(base)
    name = f"segtune_test_{uuid.uuid4().hex[:10]}"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    yield url.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


RAY = str(Path(sys.executable).with_name("ray"))


def ray_node(
    args: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    cpus: int = 1,
    gpus: int = 0,
    ip: str = "127.0.0.1",
    netns: str | None = None,
) -> subprocess.Popen[bytes]:
    """A real Ray node (`ray start ... --block`) with logical CPUs and GPUs, started and waited for."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    with log.open("wb") as f:
        command = [
            *prefix,
            RAY,
            "start",
            *args,
            "--num-cpus",
            str(cpus),
            "--num-gpus",
            str(gpus),
            "--node-ip-address",
            ip,
            "--disable-usage-stats",
            "--block",
        ]
        proc = subprocess.Popen(
            command, stdout=f, stderr=subprocess.STDOUT, env=env or dict(os.environ), start_new_session=True
        )
    deadline = time.monotonic() + 120
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_nodes([proc])
            raise AssertionError(log.read_text(errors="replace")[-3000:])
        time.sleep(0.5)
    return proc


def stop_nodes(procs: list[subprocess.Popen[bytes]]) -> None:
    """--block: SIGTERM stops a node and every process it started; a node slow to go is killed."""
    for proc in reversed(procs):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # the test is over: no need to wait for a graceful stop
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def pictures(data) -> list:  # noqa: ANN001
    """Each mask without its padding (resize pad): the part that is the picture."""
    return [m[:h, :w] for m, (h, w) in zip(data.masks, data.content, strict=True)]


def picture_values(data) -> set[int]:  # noqa: ANN001
    """The labels inside the pictures, the padding's ignore label left out."""
    return {int(v) for m in pictures(data) for v in np.unique(m)}
