"""Paused trials' ends: for disk on the driver while the search runs, and for good when the search ends."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from segtune.search import store


class Pauses:
    """Part of :class:`~segtune.search.store.recorder.StoreRecorder`: how its paused trials end (the rung policy,
    the writer, the counts and ``_write_end`` are the recorder's)."""

    rungs: Any
    states: str | None
    keep_free_gb: float | None
    pauses_ended: list[str]
    counts: Any
    writer: Any
    study: Any

    def _keep_disk_free(self) -> None:
        """A paused trial keeps its state (a few hundred MB for a ResNet-34 Unet with AdamW) on the driver's disk until
        later results promote it or the search ends, and most are never promoted: a long search holds tens of them.
        When the disk's free space falls below ``keep_free_gb``, the least promising end PRUNED now, as they would at
        the search's end, and their states go, rather than a full disk failing the search half-way."""
        if self.rungs is None or self.states is None or self.keep_free_gb is None:
            return
        try:
            free = shutil.disk_usage(self.states).free
        except OSError:  # no states folder yet: nothing kept
            return
        keep = self.keep_free_gb * 1e9
        while free < keep and (number := self.rungs.end_least_promising()) is not None:
            why = f"{free / 1e9:.1f} GB free on the driver's disk, below search.keep_free_gb ({self.keep_free_gb:g})"
            kept = [p for p in Path(self.states).glob(f"trial_{number:04d}.e*.state") if p.is_file()]
            free += sum(p.stat().st_size for p in kept)  # gone once the writer has ended it
            self._forget(number)
            self.counts.pruned += 1
            self.pauses_ended.append(f"trial {number}'s pause ended (pruned): {why}")
            # on the writer's thread, after the write of its pause: its attrs say where its files are
            self.writer.submit(
                lambda n=number, w=why: self._end_paused(n, store.trial_handle(self.study, n).user_attrs, pause_ended=w)
            )

    def prune_paused(self, run_id: str) -> int:
        """The search ended: its trials still paused (no later result promoted them) end PRUNED, valued at their last
        epoch, their files stored as any ended trial's are. Called on the driver after Tune has stopped."""
        pruned = 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("run_id") != run_id or not t.user_attrs.get("paused"):
                continue
            self._end_paused(t.number, t.user_attrs)
            pruned += 1
        return pruned

    def _end_paused(self, number: int, paused: dict[str, Any], **extra: Any) -> None:
        """Paused trial ``number`` ends PRUNED, from the attrs its pause wrote (``paused``): where its files are."""
        files = paused.get("files_at")
        attrs: dict[str, Any] = {"paused": False, **extra}
        if "best_epoch" in paused:  # which kept copy is its best, should its node be gone (_upload)
            attrs["best_epoch"] = paused["best_epoch"]
        self._write_end(number, attrs, TrialState.PRUNED, None, tuple(files) if files else None)
