"""Ctrl-C and SIGTERM during a search: stop cleanly, leave the store consistent, quit at once if asked twice."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import optuna
from ray import tune

from segtune.search import store
from segtune.search.store.writer import StoreWriter


class SearchInterrupted(Exception):
    """The user stopped the search (Ctrl-C or SIGTERM); the store is consistent. Carries the study."""

    def __init__(self, study: optuna.Study, signal_name: str, failed: int):
        self.study, self.signal_name, self.failed = study, signal_name, failed
        super().__init__(f"{signal_name}: {failed} running trials ended FAIL (interrupted)")


class Interrupt(tune.Stopper):
    """Ctrl-C once (or SIGTERM, as `docker stop` sends): Tune stops the experiment within a step,
    and the trials it cut short are marked FAIL (interrupted). Ctrl-C again: mark them and quit at once.
    A store that stays unreachable past its retry window stops the search the same way.

    Replaces Tune's own SIGINT handler, whose second Ctrl-C raises KeyboardInterrupt wherever the
    driver happens to be and can leave trials RUNNING in the store.
    """

    def __init__(self, study: optuna.Study, run_id: str, out: Any, writer: StoreWriter | None = None):
        self.study, self.run_id, self.out = study, run_id, out
        self.writer = writer  # the recorder's queued writes land before the marking
        self.event = threading.Event()
        self.signal_name = ""
        self.outage: store.StoreUnavailable | None = None
        self._previous: dict[int, Any] = {}

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def __getstate__(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "signal_name": self.signal_name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(None, state["run_id"], None)  # type: ignore[arg-type]
        self.signal_name = state["signal_name"]

    def stop_all(self) -> bool:
        return self.event.is_set()

    def reason(self) -> str:
        if self.outage is not None:
            return f"interrupted: the study store stopped answering (run {self.run_id}) before this trial ended"
        return f"interrupted: {self.signal_name} stopped the search (run {self.run_id}) before this trial ended"

    def store_outage(self, error: store.StoreUnavailable) -> None:
        """The store stayed unreachable past its retry window: stop the search; --resume continues it."""
        if self.writer is not None:  # found by the searcher, say: the writer starts no write that would wait too
            self.writer.store_down(error)
        if self.outage is None:
            self.outage = error
            print(f"\nstudy store unreachable: stopping the search ({error})", file=self.out, flush=True)
        self.event.set()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach only the main thread; a caller in a thread keeps its own handling
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _mark_unfinished(self) -> None:
        if self.writer is not None:
            self.writer.flush()  # a trial whose end is queued is told as it ended, not as interrupted
        store.fail_unfinished(self.study, self.run_id, self.reason())

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.event.is_set():
            self.signal_name = signal.Signals(signum).name
            self.event.set()
            print(
                f"\n{self.signal_name}: stopping; running trials end as FAIL (interrupted). "
                "Press Ctrl-C again to quit at once.",
                file=self.out,
                flush=True,
            )
            return
        # second signal: record the truth if the store answers within a few seconds, then go
        marker = threading.Thread(target=self._mark_unfinished, daemon=True)
        marker.start()
        marker.join(timeout=5)
        print("segtune: interrupted twice, quitting now", file=sys.stderr, flush=True)
        os._exit(130)
