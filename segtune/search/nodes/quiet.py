"""A node's quiet moment: a trial times its model while nothing else of its user's trains on the node.

Latency measured beside trials that train is a figure of the load, not of the model: two workers stored
different latencies for one model, and the Pareto front moved with the neighbours. So every trial of a study
that measures latency takes a shared lock around each training and validation step, and a trial timing its
model takes the lock exclusively: it waits for the steps in flight to end, and holds the others between
steps until its forward passes are done (a second or two). A turnstile file in front keeps a waiting timer
from being starved by neighbours whose steps follow each other back to back. The locks are ``flock``s: the OS
drops them when a process dies.

The node keeps what it measured (``costs.json`` beside the locks): every trial on the node stores the same latency
for one model, however many workers build it. A figure is kept only when it was timed in a quiet moment, with when
it was measured: it expires after ``SEGTUNE_COST_TTL_S`` seconds (a day), and with ``SEGTUNE_COST_REFRESH=1`` a
worker does not reuse a figure measured before it started (a search measures afresh, and shares what it measures).

Shared machines:

- **One folder per user**: ``<tmp>/segtune-node-<uid>``, made 0700 and checked before use (a folder that is not a
  folder, or belongs to someone else, is never used: the trial times alone, in a private folder, and says why).
  Another user's trials are not held off; a user's own trials, whatever their study, are.
- **No stall**: every wait for a lock is bounded (``SEGTUNE_QUIET_WAIT_S``, 60 s; a step waits three times that for a
  timer, which may itself wait that long) and looks at who holds the lock (``/proc/locks``): a holder that is
  stopped (SIGSTOP, a debugger) ends the wait at once. A timer that gives up times anyway and records
  ``latency_quiet: false`` with the reason; such a figure is not kept for the node. A step that gives up trains.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

WAIT_ENV, DEFAULT_WAIT_S = "SEGTUNE_QUIET_WAIT_S", 60.0
TTL_ENV, DEFAULT_TTL_S = "SEGTUNE_COST_TTL_S", 24 * 3600.0
REFRESH_ENV = "SEGTUNE_COST_REFRESH"
STEP_WAIT_FACTOR = 3  # a step waits for a timer that may itself wait the bound for the steps in flight, then time
LOADED_AT = time.time()  # when this worker loaded segtune: with SEGTUNE_COST_REFRESH=1, older figures are not reused
COSTS = "costs.json"


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return max(0.0, float(raw)) if raw else default
    except ValueError:
        return default


def user_folder(base: Path | None = None) -> tuple[Path, str | None]:
    """This user's folder for the node's state (``<tmp>/segtune-node-<uid>``, made 0700), and why it cannot be used:
    None when it can; a folder that is not one (a link), or that belongs to another user, is never used."""
    folder = (base or Path(tempfile.gettempdir())) / f"segtune-node-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as e:
        return folder, f"{folder} cannot be made ({e.strerror or e})"
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        return folder, f"{folder} is not a folder"
    if info.st_uid != os.getuid():
        return folder, f"{folder} belongs to uid {info.st_uid}, not to this user (uid {os.getuid()})"
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(folder, 0o700)  # this user's own, opened to others by hand: this user's alone again
    return folder, None


def holders(lock: TextIO) -> list[int]:
    """The processes holding a lock on ``lock``'s file (``/proc/locks``; those waiting for one are not holders)."""
    info = os.fstat(lock.fileno())
    inode = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[1] != "->" and fields[5] == inode and fields[4].isdigit():
                found.append(int(fields[4]))
    return found


def stopped(pid: int) -> bool:
    """Process ``pid`` is stopped (SIGSTOP, Ctrl-Z) or held by a debugger: it will not release a lock by itself."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("T", "t")


@dataclass
class Moment:
    """A quiet moment as it was: quiet or not (and why not), and how long it waited for the node."""

    quiet: bool = True
    reason: str | None = None
    waited_s: float = 0.0


class NodeQuiet:
    """The node's step lock (shared by training steps, exclusive while a model is timed) and its cost cache, in this
    user's folder (``folder`` for tests and benchmarks)."""

    def __init__(self, folder: Path | None = None, wait_s: float | None = None):
        self.unshared: str | None = None  # why this trial's locks are its own, not the node's
        self._private = False
        if folder is None:
            folder, self.unshared = user_folder()
            if self.unshared is not None:
                folder, self._private = Path(tempfile.mkdtemp(prefix=f"segtune-node-{os.getuid()}-")), True
        self.folder = folder
        self.wait_s = _seconds(WAIT_ENV, DEFAULT_WAIT_S) if wait_s is None else wait_s
        self._gate = self._open("gate.lock")  # held for the trial's life
        self._steps = self._open("steps.lock")
        self.waited_s = 0.0  # how long this trial's timing waited for the node to go quiet

    def _open(self, name: str) -> TextIO:
        fd = os.open(self.folder / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        return os.fdopen(fd, "r+")

    def close(self) -> None:
        self._gate.close()
        self._steps.close()
        if self._private:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _take(self, lock: TextIO, mode: int, bound: float, what: str, since: float | None = None) -> str | None:
        """``lock`` taken (``mode``) within ``bound`` seconds of ``since`` (now): None, else why not."""
        deadline = (time.monotonic() if since is None else since) + bound
        pause, look_at = 0.001, time.monotonic() + 0.2
        while True:
            try:
                fcntl.flock(lock, mode | fcntl.LOCK_NB)
                return None
            except BlockingIOError:
                pass
            now = time.monotonic()
            if now >= look_at:  # who holds it: a stopped holder never lets go
                held_by = [pid for pid in holders(lock) if pid != os.getpid()]
                if halted := [pid for pid in held_by if stopped(pid)]:
                    return f"pid {halted[0]} holds the node's {what} lock and is stopped (SIGSTOP or a debugger)"
                look_at = now + 0.2
            if now >= deadline:
                pids = ", ".join(map(str, holders(lock))) or "?"
                return f"the node's {what} lock was still held after {bound:g} s (pids {pids}; {WAIT_ENV})"
            time.sleep(pause)
            pause = min(pause * 2, 0.02)

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Around one training or validation step: waits while a neighbour times its model (never for ever)."""
        bound = self.wait_s * STEP_WAIT_FACTOR
        if self._take(self._gate, fcntl.LOCK_SH, bound, "timing") is None:  # the turnstile: closed while a timer waits
            fcntl.flock(self._gate, fcntl.LOCK_UN)
        held = self._take(self._steps, fcntl.LOCK_SH, bound, "step") is None
        try:
            yield
        finally:
            if held:
                fcntl.flock(self._steps, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def quiet(self) -> Iterator[Moment]:
        """Nothing else of this user's segtune trials trains on this node inside this block, unless the moment says
        it is not quiet (and why): the wait for it is bounded, so a stopped or hung neighbour cannot stall it."""
        started = time.monotonic()
        moment = Moment(quiet=self.unshared is None, reason=self.unshared)
        gate = steps = False
        try:
            if moment.quiet:
                moment.reason = self._take(self._gate, fcntl.LOCK_EX, self.wait_s, "timing")
                gate = moment.reason is None
                if gate:
                    moment.reason = self._take(self._steps, fcntl.LOCK_EX, self.wait_s, "step", since=started)
                    steps = moment.reason is None
                if not steps:  # it times anyway, and says so: the node goes on training meanwhile
                    moment.quiet = False
                    if gate:
                        fcntl.flock(self._gate, fcntl.LOCK_UN)
                        gate = False
            moment.waited_s = time.monotonic() - started
            self.waited_s += moment.waited_s
            yield moment
        finally:
            if steps:
                fcntl.flock(self._steps, fcntl.LOCK_UN)
            if gate:
                fcntl.flock(self._gate, fcntl.LOCK_UN)

    def _figures(self) -> dict[str, Any]:
        path = self.folder / COSTS
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):  # a file this user cannot read, or not ours: measured again
            return {}

    def known(self, key: str) -> dict[str, Any] | None:
        """What the node measured for ``key``, if it did and the figure is still fresh (the file is replaced whole: a
        read needs no lock)."""
        found = self._figures().get(key)
        return found if isinstance(found, dict) and self._fresh(found) else None

    def _fresh(self, figure: dict[str, Any]) -> bool:
        measured_at = figure.get("measured_at")
        if not isinstance(measured_at, (int, float)):
            return False
        if os.environ.get(REFRESH_ENV) == "1" and measured_at < LOADED_AT:
            return False
        return time.time() - measured_at < _seconds(TTL_ENV, DEFAULT_TTL_S)

    def cached(self, key: str, measure: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], Moment]:
        """What the node measured for ``key`` (still fresh), or ``measure()`` in a quiet moment, kept for the node when
        the moment was quiet; and the moment (the figure was measured in it, or waited for it)."""
        with self.quiet() as moment:
            figures = self._figures()
            if (found := figures.get(key)) is not None and self._fresh(found):
                return found, moment
            measured = {**measure(), "measured_at": time.time()}
            if moment.quiet:
                figures[key] = measured
                partial = self.folder / f"costs.{os.getpid()}.json"
                partial.write_text(json.dumps(figures))
                os.replace(partial, self.folder / COSTS)
            return measured, moment
