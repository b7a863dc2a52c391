"""The driver's store writes, in order, on their own thread: a trial waiting on Tune never waits on SQL.

Tune runs its callbacks in the driver's loop, and a trial's ``report`` blocks until the loop has run them
and asks the trial for its next result; so every write the StoreRecorder made in a callback (a dozen
Optuna calls of 2-4 ms each when a trial starts, three an epoch, a tell at the end) was time the slot did
not train. The recorder now hands each write here and returns at once.

The store stays as truthful as before: writes land in the order Tune called back; everything queued is
written before the searcher asks Optuna for a configuration (so TPE still sees every tell) and before the
run marks unfinished trials FAIL; a write that meets a store down past its retry window stops the search
as before (``on_outage``) and the writes queued behind it are dropped, their trials left for --resume; so
are the writes after an outage found elsewhere (``store_down``)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from segtune.search import store

Write = Callable[[], None]


class StoreWriter:
    """One thread that runs the writes handed to it, one after the other, in the order given.

    ``on_outage`` is called (on the writer's thread) when the store stays down past its retry window;
    any other error a write raises is raised again in the driver, by the next ``submit`` or ``flush``.
    """

    def __init__(self, on_outage: Callable[[store.StoreUnavailable], None] | None = None):
        self.on_outage = on_outage
        self._queue: queue.Queue[Write | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._outage: store.StoreUnavailable | None = None  # the store stayed down: later writes are dropped

    def __getstate__(self) -> dict[str, object]:
        """Tune pickles its callbacks and searcher into its experiment folder: a writer travels empty."""
        return {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__()  # type: ignore[misc]

    def submit(self, write: Write) -> None:
        self._raise_error()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="segtune-store-writer", daemon=True)
            self._thread.start()
        self._queue.put(write)

    def flush(self) -> None:
        """Return once every write submitted so far has landed (or was dropped by an outage)."""
        if self._thread is not None:
            self._queue.join()
        self._raise_error()

    def landed(self) -> None:
        """``flush``, then raise StoreUnavailable if the store went down: nothing more should be asked of it."""
        self.flush()
        if self._outage is not None:
            raise self._outage

    def close(self) -> None:
        """Flush, then stop the thread. The writer can be used again afterwards (a new thread starts)."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        self._thread = None
        self._raise_error()

    def store_down(self, error: store.StoreUnavailable) -> None:
        """The store was found down elsewhere (the searcher's ask, say) and the search is stopping: start no
        more writes, each of which would wait out a retry window of its own; their trials are left for --resume."""
        if self._outage is None:
            self._outage = error

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            write = self._queue.get()
            try:
                if write is None:
                    return
                if self._outage is None and self._error is None:
                    write()
            except store.StoreUnavailable as e:
                self._outage = e
                if self.on_outage is None:
                    self._error = e
                else:
                    self.on_outage(e)
            except BaseException as e:  # noqa: BLE001 - handed to the driver, which raises it
                self._error = e
            finally:
                self._queue.task_done()
