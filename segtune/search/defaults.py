"""The search's `auto` settings, resolved in one place for `run` and the replay benchmark.

Each rule below was chosen from benchmarks/replay.py (README, Benchmarks: the replay table and the grid
behind it), not from intuition; its docstring says what the evidence was. A number in the spec always
wins over `auto`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# The first rung's and promotion's defaults, from the replay on two tables (pets, 12 epochs; Kvasir-SEG, 30 epochs;
# README "How the search decides"): waiting for a trial to leave the majority-class plateau was slower to the
# target on both (0.87x and 0.32x random, against 2.16x and 2.22x at grace); promotion ended higher at the full
# budget on both but reached the target later on Kvasir-SEG (1.71x against 2.22x). Chosen on Kvasir-SEG, grace
# without promotion reached pets' target 2.33x sooner than random on 30 unseen seeds. Chosen at 28 of Kvasir-SEG's
# 103 curves; at 58, on unseen seeds, it still did better than the rule either table chose for itself (2.33x on
# pets, 1.32x on Kvasir-SEG), and the choice waits for the complete table.
PLATEAU_BY_DEFAULT = False
PROMOTE_BY_DEFAULT = False


@dataclass(frozen=True)
class SearchSettings:
    """What `auto` resolves to for one study."""

    grace_period: int
    reduction_factor: float
    min_first_rung: int
    brackets: int
    n_startup_trials: int
    startup: str
    plateau: bool = False  # a trial still on the majority-class plateau is judged later (search/rungs.py)
    promote: bool = False  # a stop is a pause that later results may undo

    def text(self) -> str:
        return (
            f"grace {self.grace_period}, rf {self.reduction_factor:g}, first rung waits for "
            f"{self.min_first_rung}"
            + (", judged once off the majority-class plateau" if self.plateau else "")
            + (", paused trials promoted" if self.promote else "")
            + f", {self.brackets} bracket(s), {self.n_startup_trials} {self.startup} start-up trials"
        )


def expected_trials(search: Any) -> int:
    """How many trials the study will hold: ``trials``, or what the budget affords at full length x 3
    (most trials stop early), whichever is smaller."""
    if search.budget_epochs is None:
        return search.trials
    return max(1, min(search.trials, math.ceil(3 * search.budget_epochs / search.max_epochs)))


def grace_period(max_epochs: int) -> int:
    """The first rung: epoch 1 at the recorded 12 epochs, one epoch per 12 beyond.

    Evidence (replay grid, 15 seeds x 144 + 96 settings, README "How the search decides"): grace 1 reached
    the target sooner than 2 or 3 in every slice of the grid (median of medians 187 s against 269 s for 2).
    A first epoch is noisy, but the noise costs less than two epochs of every bad trial. The scaling beyond
    12 epochs is an assumption (the recording has 12): a 100-epoch study first judges at epoch 8."""
    return max(1, min(max_epochs, round(max_epochs / 12)))


def reduction_factor(max_epochs: int, grace: int) -> float:
    """3, ASHA's usual; 2 when a factor of 3 would leave a single rung before the end. The grid found no
    reliable difference between 3, 4, 5 and 6 (median of medians 217-248 s, the order changing with the
    other settings), so the common value stays."""
    return 3.0 if grace * 3 < max_epochs else 2.0


def min_first_rung(slots: int) -> int:
    """With few slots the first trials would run unopposed to the end (ASHA passes a trial that is alone at its
    rung): the first rung waits for 3 results before it lets anyone pass. Every setting of the grid's top 15
    waits for 3 or more; waiting for 1 was slower (PH2 with one slot lost a third of its budget this way)."""
    return 3 if slots <= 4 else 1


def n_startup_trials(trials: int) -> int:
    """TPE's start-up (a stratified design by default): a quarter of the study, between 3 and 8 trials.
    The grid: 5 and 8 equal (median of medians 208 and 190 s), 3 far slower (369 s), 10 slower (340 s)."""
    return min(8, max(3, trials // 4))


def resolve(search: Any, slots: int = 1) -> SearchSettings:
    """``search`` is the spec's search section; ``slots``, how many trials run side by side."""
    grace = search.grace_period if search.grace_period != "auto" else grace_period(search.max_epochs)
    rf = search.reduction_factor if search.reduction_factor != "auto" else reduction_factor(search.max_epochs, grace)
    first = search.min_first_rung if search.min_first_rung != "auto" else min_first_rung(slots)
    brackets = search.brackets if search.brackets != "auto" else 1
    startup = search.n_startup_trials
    if startup == "auto":
        startup = n_startup_trials(expected_trials(search))
    plateau = PLATEAU_BY_DEFAULT if search.first_rung == "auto" else search.first_rung == "plateau"
    promote = search.promotion if search.promotion != "auto" else PROMOTE_BY_DEFAULT
    return SearchSettings(grace, float(rf), first, brackets, startup, search.startup, plateau, bool(promote))
