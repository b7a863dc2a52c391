"""Why Tune's copy of its experiment snapshot failed once in CI: its own two calls, side by side as its controller
makes them.

    python benchmarks/tune_snapshot_race.py [--seconds 10]

Tune (``ray.tune.execution.experiment_state``) saves its experiment snapshot into a staging folder on the driver, then
copies that folder into ``results_dir`` on a background thread (``ray.train._internal.storage._upload_to_fs_path``).
At the next snapshot it writes into the staging folder again before it waits for that copy; the searcher's state
goes through a temporary file renamed into place (``ray.tune.utils.util._atomic_save``). A copy that lists the
temporary file before the rename and opens it after fails with FileNotFoundError, which Tune logs at ERROR with its
traceback ("Saving experiment state to storage ... failed"). This script runs the two calls in two threads for
``--seconds`` and prints how many copies failed. segtune's runs take no snapshot between a run's first and last
(``TUNE_GLOBAL_CHECKPOINT_S=inf`` for the fit, search/nodes/cluster.py): no copy is in flight when the last is
written, and Tune waits for the last copy, so the snapshot in ``results_dir`` is whole (segtune never reads it).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

import pyarrow.fs
from ray.train._internal.storage import _upload_to_fs_path  # Tune's own copy (private): the call under test
from ray.tune.utils.util import _atomic_save  # Tune's own atomic save (private): the call under test


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as staging, tempfile.TemporaryDirectory() as results:
        stop = threading.Event()

        def snapshots() -> None:  # what SearchGenerator.save_to_dir does at every snapshot
            while not stop.is_set():
                _atomic_save({"state": b"x" * 200_000}, staging, "search_gen_state.json", "tmp-search_gen_state.json")

        saver = threading.Thread(target=snapshots)
        saver.start()
        failed, copies, first = 0, 0, ""
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            try:
                _upload_to_fs_path(staging, pyarrow.fs.LocalFileSystem(), results)
            except FileNotFoundError as e:
                failed += 1
                first = first or str(e).splitlines()[0][-100:]
            copies += 1
        stop.set()
        saver.join()
    print(f"{failed} of {copies} copies of the staging folder failed while snapshots were written into it ({first})")


if __name__ == "__main__":
    main()
