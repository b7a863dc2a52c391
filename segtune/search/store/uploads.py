"""A trial's best weights and their overlay into the artifact store, from wherever the trial ran (the recorder's
writer thread), the model's sha256 recorded on the trial."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


class ModelLostWithItsNode(Exception):
    """A trial's best model was only on a node that is gone: the trial must run again to have one."""


class Uploads:
    """Part of :class:`~segtune.search.store.recorder.StoreRecorder`: its uploads (``artifacts``, ``states`` and the
    lazily opened ``_artifact_store`` are the recorder's)."""

    artifacts: str | None
    states: str | None
    _artifact_store: Any
    study: Any

    def _upload(self, number: int, folder: str, node_id: str, shared: bool, best_epoch: int | None = None) -> None:
        """The trial's best weights and their overlay into the artifact store, linked to it (the writer's thread).

        From another node they come through Ray. A node lost once the trial ended but before its files were fetched
        (the fetch waits for a worker process on that node) leaves the copy the trial sent beside its states, when
        that copy is of its best epoch; else :class:`ModelLostWithItsNode`."""
        from segtune.search.nodes import keeper, node_files
        from segtune.search.store import artifacts

        if self._artifact_store is None:
            self._artifact_store = artifacts.open_store(self.artifacts)
        names = [artifacts.MODEL, artifacts.OVERLAY]
        with tempfile.TemporaryDirectory(prefix="segtune-upload-") as tmp:
            if shared:  # the driver reads them where the trial wrote them
                paths = [Path(folder, n) for n in names if Path(folder, n).is_file()]
            else:  # from the trial's node, through Ray
                paths = []
                try:
                    fetched = node_files.fetch_files(node_id, [str(Path(folder, n)) for n in names])
                except Exception as e:
                    if node_files.node_alive(node_id):
                        raise
                    kept = None
                    if self.states is not None and best_epoch is not None:
                        kept = keeper.kept_best_files(Path(self.states), number, int(best_epoch))
                    if kept is None:
                        raise ModelLostWithItsNode(
                            f"its node ({node_id[:12]}) was lost after its last epoch, before its model was fetched"
                        ) from e
                    fetched = kept
                for name, data in fetched.items():
                    paths.append(Path(tmp, name))
                    paths[-1].write_bytes(data)
            if not any(p.name == artifacts.MODEL for p in paths):
                raise FileNotFoundError(f"no {artifacts.MODEL} in {folder}")
            for path in paths:
                digest = artifacts.sha256(path) if path.name == artifacts.MODEL else None  # the bytes uploaded next
                artifacts.upload(self.study, number, path, self._artifact_store)
                if digest is not None:  # every later read of the model is compared with it (results/fetch.py)
                    artifacts.record_hash(self.study, number, digest)
