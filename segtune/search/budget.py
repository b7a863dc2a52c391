"""A search's compute budget in trial-epochs (``search.budget_epochs``), shared by the searcher and the recorder."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Budget:
    """Trial-epochs trained so far against the limit (None: no limit). Once spent, no trial starts;
    running trials go on until they finish or a rung stops them.

    A trial that was handed out but has not trained its first ``first_rung`` epochs yet holds them
    reserved: Tune asks for the next trials while the current ones still run, and without the reservation
    a search would hand out a slot's worth of trials more than its budget pays for. What stays uncounted
    is what running trials train past their first rung.
    """

    epochs: int | None = None
    used: int = 0
    first_rung: int = 1  # epochs every started trial is sure to train: the grace period (max_epochs without ASHA)
    reserved: dict[int, int] = field(default_factory=dict)  # trial number -> its first-rung epochs not yet trained

    @property
    def spent(self) -> bool:
        return self.epochs is not None and self.used + sum(self.reserved.values()) >= self.epochs

    def start(self, trial: int) -> None:
        self.reserved[trial] = self.first_rung

    def epoch(self, trial: int) -> None:
        self.used += 1
        if self.reserved.get(trial, 0) > 0:
            self.reserved[trial] -= 1

    def end(self, trial: int) -> None:
        self.reserved.pop(trial, None)

    def text(self) -> str:
        return f"{self.used}/{self.epochs} trial-epochs" if self.epochs is not None else f"{self.used} trial-epochs"
