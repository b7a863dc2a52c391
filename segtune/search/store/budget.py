"""A search's compute budget in trial-epochs (``search.budget_epochs``), shared by the searcher and the recorder.

Two rules (``search.budget_rule``):

- ``finish`` (the default): once the budget is spent no trial starts; running trials go on until they finish or a
  rung stops them, so a search may end past its budget (`run` prints by how much). A trial that was handed out
  holds its first ``first_rung`` epochs reserved: Tune asks for the next trials while the current ones still run,
  and without the reservation a search would hand out a slot's worth of trials more than its budget pays for.
- ``exact``: never past the budget. Each trial holds every epoch it may train reserved, and a trial that starts
  when fewer than ``max_epochs`` remain is told how many it has: it runs a schedule that ends there (its learning
  rate schedule too). A rung that stops a trial early gives its unused epochs back; the epochs a paused trial is
  sure to train when it goes on (a raced list's members waiting for its judgement: search/scheduling/rungs.py
  ``Rungs.owed``) are held for it, so no new trial takes them.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Budget:
    """Trial-epochs trained so far against the limit (None: no limit)."""

    epochs: int | None = None
    used: int = 0
    first_rung: int = 1  # epochs every started trial is sure to train: the grace period (max_epochs without ASHA)
    rule: str = "finish"
    max_epochs: int = 1
    reserved: dict[int, int] = field(default_factory=dict)  # trial number -> its reserved epochs not yet trained
    held: Callable[[], int] | None = None  # epochs paused trials will train when they go on (exact rule only)

    @property
    def exact(self) -> bool:
        return self.epochs is not None and self.rule == "exact"

    @property
    def left(self) -> int | None:
        """Epochs no trial holds yet (None: no limit)."""
        if self.epochs is None:
            return None
        return self.epochs - self.used - sum(self.reserved.values()) - self.holding

    @property
    def holding(self) -> int:
        """Epochs held for paused trials sure to go on (an exact budget's; 0 otherwise)."""
        return self.held() if self.exact and self.held is not None else 0

    @property
    def spent(self) -> bool:
        """Nothing left for a new trial."""
        return self.epochs is not None and (self.left or 0) <= 0

    def start(self, trial: int) -> int:
        """Trial ``trial`` starts: the epochs it may train (``max_epochs``, fewer at the end of an exact budget)."""
        return self.schedule(trial, self.max_epochs)

    def resume(self, trial: int, epochs_left: int) -> bool:
        """A paused trial runs on: an exact budget reserves the rest of its schedule, if it still can."""
        if self.exact:
            if (self.left or 0) < epochs_left:
                return False
            self.reserved[trial] = epochs_left
        return True

    def schedule(self, trial: int, rest: int) -> int:
        """Trial ``trial`` has ``rest`` epochs of its schedule to go (``max_epochs`` for a new trial; a --resume re-run
        goes on from its dead trial's state): the epochs it may train (an exact budget's left caps them: its schedule
        then ends there), reserved."""
        if self.exact:
            rest = max(0, min(rest, self.left or 0))
            self.reserved[trial] = rest
            return rest
        self.reserved[trial] = min(self.first_rung, rest)
        return rest

    def epoch(self, trial: int) -> None:
        self.used += 1
        if self.reserved.get(trial, 0) > 0:
            self.reserved[trial] -= 1

    def end(self, trial: int) -> None:
        self.reserved.pop(trial, None)

    def text(self) -> str:
        return f"{self.used}/{self.epochs} trial-epochs" if self.epochs is not None else f"{self.used} trial-epochs"

    def overshoot(self) -> str | None:
        """What the search trained past its budget, in words (the ``finish`` rule lets running trials finish)."""
        if self.epochs is None or self.used <= self.epochs:
            return None
        return (
            f"budget: {self.used} trial-epochs trained for a budget of {self.epochs} (+{self.used - self.epochs}: "
            "running trials finished past it; search.budget_rule: exact never goes past)"
        )


@dataclass
class Clock:
    """A search's budget in wall-clock seconds (``search.time_budget``), shared by the searcher and the recorder.

    As the exact rule does for epochs: a trial starts only when the time left covers its first rung at the epoch
    seconds measured so far (the median of every epoch's train + validation seconds; each trial's own epochs already
    hold what running beside the others costs), and it is told to end its schedule where the time runs out (fewer
    epochs than ``max_epochs``, its learning-rate schedule included). A running trial whose next epoch would end past
    the deadline is cut (:meth:`cut`), should the estimate have been short. Before any epoch is measured nothing is
    refused: the first trials are what measures."""

    seconds: float | None = None
    started: float = field(default_factory=time.monotonic)
    measured: list[float] = field(default_factory=list)  # seconds of every epoch so far, on any slot
    # what must stay for the work after the search (`segtune fit`'s finishing), from an epoch's seconds
    reserve: Callable[[float | None], float] | None = None
    first_epoch_s: float | None = None  # an estimate to grant by until an epoch is measured (`segtune fit` times one)

    def left(self) -> float | None:
        if self.seconds is None:
            return None
        kept = self.reserve(self.per_epoch()) if self.reserve is not None else 0.0
        return self.seconds - kept - (time.monotonic() - self.started)

    def per_epoch(self) -> float | None:
        return float(statistics.median(self.measured[-50:])) if self.measured else self.first_epoch_s

    def record(self, seconds: float) -> None:
        if seconds > 0:
            self.measured.append(seconds)

    def grant(self, max_epochs: int) -> int:
        """The epochs a trial starting now can train before the deadline (``max_epochs`` without a time budget or
        before any epoch is measured)."""
        left, each = self.left(), self.per_epoch()
        if left is None:
            return max_epochs
        if each is None:
            return max_epochs if left > 0 else 0
        return max(0, min(max_epochs, math.floor(left / each)))

    def cut(self, epoch_seconds: float) -> bool:
        """A running trial whose next epoch (as long as its last) would end past the deadline."""
        left = self.left()
        return left is not None and left < epoch_seconds

    def text(self) -> str:
        left = self.left()
        return "" if left is None else f"{max(0.0, left) / 60:.1f} min of {self.seconds / 60:.1f} left to search"
