"""A node's quiet moment: a trial times its model while nothing else trains on the node.

Latency measured beside trials that train is a figure of the load, not of the model: two workers stored
different latencies for one model, and the Pareto front moved with the neighbours. So every trial of a study
that measures latency takes a shared lock around each training and validation step, and a trial timing its
model takes the lock exclusively: it waits for the steps in flight to end, and holds the others between
steps until its forward passes are done (a second or two). A turnstile file in front keeps a waiting timer
from being starved by neighbours whose steps follow each other back to back. The locks are ``flock``s on
files in the node's temporary folder: the OS drops them when a process dies, and every segtune trial on the
node (whatever its study) sees them. Trials in other containers of one host do not share that folder.

The node also keeps what it measured (``costs.json`` beside the locks): every trial on the node stores the
same latency for one model, however many workers build it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

NODE_FOLDER = Path(tempfile.gettempdir()) / "segtune-node"


class NodeQuiet:
    """The node's step lock (shared by training steps, exclusive while a model is timed) and its cost cache."""

    def __init__(self, folder: Path = NODE_FOLDER):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._gate = open(folder / "gate.lock", "a+")  # noqa: SIM115 - held for the trial's life
        self._steps = open(folder / "steps.lock", "a+")  # noqa: SIM115
        self.waited_s = 0.0  # how long this trial's timing waited for the node to go quiet

    def close(self) -> None:
        self._gate.close()
        self._steps.close()

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Around one training or validation step: waits while a neighbour times its model."""
        fcntl.flock(self._gate, fcntl.LOCK_SH)  # the turnstile: closed while a timer waits or times
        fcntl.flock(self._gate, fcntl.LOCK_UN)
        fcntl.flock(self._steps, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(self._steps, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Nothing else of segtune's trains on this node inside this block."""
        started = time.monotonic()
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._steps, fcntl.LOCK_EX)
            self.waited_s += time.monotonic() - started
            try:
                yield
            finally:
                fcntl.flock(self._steps, fcntl.LOCK_UN)
        finally:
            fcntl.flock(self._gate, fcntl.LOCK_UN)

    def known(self, key: str) -> dict[str, Any] | None:
        """What the node measured for ``key``, if it did (the file is replaced whole: a read needs no lock)."""
        path = self.folder / "costs.json"
        return json.loads(path.read_text()).get(key) if path.is_file() else None

    def cached(self, key: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """What the node measured for ``key``, or ``measure()`` in a quiet moment (and kept for the node)."""
        path = self.folder / "costs.json"
        with self.quiet():
            known = json.loads(path.read_text()) if path.is_file() else {}
            if key not in known:
                known[key] = measure()
                partial = path.with_name(f"costs.{os.getpid()}.json")
                partial.write_text(json.dumps(known))
                os.replace(partial, path)
            return known[key]
