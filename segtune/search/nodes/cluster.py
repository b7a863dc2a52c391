"""Joining Ray: a private local cluster, a local `ray start` node, or a remote cluster from a machine that is
not (yet) one of its nodes.

A Ray driver talks to its cluster through a raylet on its own machine. From a machine that runs no node
of the cluster (a laptop, the compose driver container), ``ray.init(address=HOST:PORT)`` finds none and
aborts. So there segtune first joins the cluster as a node with no CPUs and no GPUs (no trial lands on
it), connects through that node, and stops it when the driver ends. Ctrl-C and SIGTERM still reach
the driver alone: the node runs in its own session.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from segtune import environment
from segtune.errors import SegtuneError

NODE_START_TIMEOUT_S = 120
RESET_WAIT_S = 60


def _check_reachable(address: str) -> None:
    """Ray retries an unreachable GCS for minutes; a closed port should be an error at once."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "local", "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise SegtuneError(f"--address: no Ray cluster answers at {address} ({e.strerror or e})") from None


def machine_cpus() -> int:
    """The CPUs this machine gives segtune: the ones this process may run on (its affinity, which a container's cpuset
    narrows), fewer when a cgroup CPU quota allows fewer (a container's ``--cpus``). Ray counts the same way for a
    local cluster (``ray._private.utils.get_num_cpus``: the cpuset and the quota, the smaller, truncated)."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, int(quota))) if quota is not None else cpus


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs a cgroup quota allows this process (quota over period), None where none is set: cgroup v2's
    ``cpu.max`` ("max 100000" when unset), else v1's ``cpu/cpu.cfs_quota_us`` (-1 when unset)."""
    try:
        if (root / "cpu.max").is_file():
            quota, period = (root / "cpu.max").read_text().split()
        else:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        return float(quota) / float(period) if float(quota) > 0 else None
    except (OSError, ValueError):  # no such files (not Linux, no cgroup), or "max": no quota
        return None


TUNE_VARIABLES = {
    "RAY_AIR_NEW_OUTPUT": "0",  # Tune's older, quieter output (verbose=0): segtune prints its own progress
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no CSV/JSON/TensorBoard per trial
    "TUNE_DISABLE_SIGINT_HANDLER": "1",  # segtune's Interrupt handles Ctrl-C
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # Tune's snapshot of its experiment: at the start and the end of a run, never in between. segtune never restores
    # it (the study store is the only state: search/store/resume.py), and a periodic one is copied into results_dir
    # by a background thread while Tune writes the next into the folder being copied; a temporary file renamed
    # meanwhile fails the copy with FileNotFoundError (seen once in a full CI run here; README, "Tune's experiment
    # snapshot"). The final snapshot is copied whole (Tune waits for it), so no copy is in flight when it is written.
    "TUNE_GLOBAL_CHECKPOINT_S": "inf",
}


@contextlib.contextmanager
def tune_environment() -> Iterator[None]:
    """What Tune reads from the environment when a run starts (:data:`TUNE_VARIABLES`), and its loggers as segtune
    wants them (:data:`QUIET_TUNE_LOGGERS`), for one run; the process's own after it."""
    with environment.variables(TUNE_VARIABLES), environment.logger_levels(QUIET_TUNE_LOGGERS):
        yield


def connect_ray(address: str | None, local_cpus: int | None = None) -> None:
    """Join the cluster at ``address``, or start a private local one; ``local_cpus`` caps the local one's CPUs
    (:func:`segtune.search.run.local_cpus`: a search that runs fewer trials at once than the machine could)."""
    if ray.is_initialized():
        return
    # no address: a private local cluster, even when `ray start` runs on this machine ("auto" joins that)
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    if target.startswith("ray://"):
        raise SegtuneError(
            f"--address: {target} is a Ray Client address, which Ray advises against for Tune searches; give the "
            "cluster's own address HOST:6379 instead (segtune joins it from any machine that reaches it)"
        )
    _check_reachable(target)
    node_ip = None
    if is_remote(target) and not local_node_of(target):
        node_ip = start_driver_node(target)
    try:
        cap = {"num_cpus": local_cpus} if target == "local" and local_cpus and local_cpus < machine_cpus() else {}
        ray.init(
            address=target,
            **cap,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=True,
            # a reused worker waits for the trial it ran to unwind before the next starts; Tune's 2 s is too short
            # under load, and a reset that times out errors the next trial without a word to the callbacks
            # (and the command's offline settings: a remote cluster's workers do not inherit the driver's environment)
            runtime_env={
                "env_vars": {"TUNE_FUNCTION_THREAD_TIMEOUT_S": str(RESET_WAIT_S), **environment.for_workers()}
            },
            # the driver must use the node it just started: Ray would guess its own IP from the route to a
            # public address, which on a machine with several networks need not be the one facing the cluster
            **({"_node_ip_address": node_ip} if node_ip else {}),
        )
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as e:
        if target == "local":
            raise
        reason = str(e).strip().splitlines()[0][:200]
        hint = ""
        if "auth" in str(e).lower():
            hint = "; it uses token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or ~/.ray/auth_token)"
        raise SegtuneError(f"--address: cannot join the Ray cluster at {target}: {reason}{hint}") from None


def disconnect() -> None:
    """Leave Ray now that the search is over (a local cluster stops). At exit Ray's own handler does the same, but
    first sleeps half a second for worker log lines, which segtune does not forward (``log_to_driver=False``):
    1.85 s against 1.1 s for a local cluster here. Everything is stored by now, so a Ctrl-C meanwhile quits at once,
    as a second one does during the search (a local cluster's processes end with the driver)."""

    def quit_now(signum: int, frame: Any) -> None:
        print("segtune: interrupted while leaving Ray, quitting now", file=sys.stderr, flush=True)
        os._exit(130)

    if not ray.is_initialized():
        return
    previous = signal.signal(signal.SIGINT, quit_now)
    try:
        ray.shutdown()
    finally:
        signal.signal(signal.SIGINT, previous)


# segtune prints its own progress; Ray Tune's warnings about its result files (which segtune does not write) would
# only bury it. A failed trial's traceback: segtune prints its reason and stores it in the trial's fail_reason.
# "Trials did not complete" (ray.tune.tune): segtune's table says so.
QUIET_TUNE_LOGGERS = {
    "ray.tune": logging.ERROR,
    "ray.train": logging.ERROR,
    "ray.air": logging.ERROR,
    "ray.tune.execution.tune_controller": logging.CRITICAL,
    "ray.tune.tune": logging.CRITICAL,
}


def ray_temp_dir() -> Path:
    """Where Ray keeps this machine's sessions (``RAY_TMPDIR``, else the system temp folder), as Ray does."""
    return Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"


def is_remote(target: str) -> bool:
    host, _, port = target.rpartition(":")
    return bool(host) and port.isdigit()


def local_node_of(target: str) -> bool:
    """Whether a node of the cluster at ``target`` runs on this machine (`ray start` wrote its address)."""
    current = ray_temp_dir() / "ray_current_cluster"
    try:
        recorded = current.read_text().strip()
    except OSError:
        return False
    host, _, port = target.rpartition(":")
    same = recorded == target or recorded.endswith(f":{port}") and _same_host(recorded.rpartition(":")[0], host)
    return same and (ray_temp_dir() / "session_latest" / "sockets" / "raylet").exists()


def _same_host(a: str, b: str) -> bool:
    try:
        return socket.gethostbyname(a) == socket.gethostbyname(b)
    except OSError:
        return a == b


def _die_with_parent() -> None:
    """In the node's process: get SIGTERM when the driver dies, even by SIGKILL (Linux)."""
    os.setsid()
    with contextlib.suppress(OSError):  # not Linux: the atexit handler stops it, SIGKILL leaves it
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_driver_node(target: str) -> str:
    """Join the cluster at ``target`` as a node with no CPUs and no GPUs, for the driver to connect through;
    returns the IP address the node registered with."""
    ray_bin = Path(sys.executable).with_name("ray")
    log = Path(tempfile.mkstemp(prefix="segtune-driver-node-", suffix=".log")[1])
    command = [
        str(ray_bin if ray_bin.exists() else "ray"),
        "start",
        f"--address={target}",
        "--num-cpus=0",
        "--num-gpus=0",
        "--disable-usage-stats",
        "--block",
    ]
    with log.open("wb") as f:
        node = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)  # noqa: PLW1509
    atexit.register(_stop, node, log)
    deadline = time.monotonic() + NODE_START_TIMEOUT_S
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if node.poll() is not None or time.monotonic() > deadline:
            atexit.unregister(_stop)
            _stop(node)  # its log stays: the error names it
            last = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
            raise SegtuneError(
                f"--address: this machine could not join the Ray cluster at {target} as a "
                f"driver node ({last[0][:200] if last else 'no output'}); log: {log}"
            )
        time.sleep(0.3)
    found = re.search(r"Local node IP: (\S+)", log.read_text(errors="replace"))
    return found.group(1) if found else ""


def _stop(node: subprocess.Popen[bytes], log: Path | None = None) -> None:
    """Disconnect the driver first: a driver whose node vanishes under it exits with an error. Then the node's log
    goes: it served its start-up, and every run would leave one in the temporary folder."""
    if ray.is_initialized():
        ray.shutdown()
    if node.poll() is None:
        try:
            os.killpg(node.pid, signal.SIGTERM)
            node.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(node.pid, signal.SIGKILL)
    if log is not None:
        log.unlink(missing_ok=True)
