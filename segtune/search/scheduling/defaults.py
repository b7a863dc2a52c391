"""The search's `auto` settings, resolved in one place for `run` and the replay benchmark.

Each rule below was chosen from benchmarks/replay.py (README, Benchmarks: the replay table and the grid
behind it), not from intuition; its docstring says what the evidence was. A number in the spec always
wins over `auto`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# The first rung's and promotion's defaults, from the replay on two complete tables (pets, 12 epochs; Kvasir-SEG,
# 30 epochs; README "How the search decides"). Chosen on seeds 0-4 of either table, among 32 rules (first rung at
# grace or off the plateau, promotion or not, grace auto / 1 / 2 / 3, first rung waiting for 1 or 3), both tables
# choose the same: judged at grace 1, waiting for 3 results, promotion. On the other table's unseen seeds (100-129)
# it reached the target 1.73x sooner than random search on Kvasir-SEG, never worse at any budget (the old default,
# grace 2 and stops final there: 0.55x, worse at 7 of 8 budgets), and 2.26x on pets (the old default 2.33x), with a
# higher best at the full budget on both (0.637 / 0.610 against 0.583 / 0.578). Waiting to leave the majority-class
# plateau was slower on both. The chosen rule is what `auto` resolves to below.
PLATEAU_BY_DEFAULT = False
PROMOTE_BY_DEFAULT = True
# A person's list as the prior (search.prior, search.near_incumbent): see prior_rule() below for the evidence.
NEAR_INCUMBENT_WITH_A_PRIOR = 0.5
# Where a raced list is judged (search.prior_judged_at), as a share of max_epochs: see prior_rule() for the evidence.
PRIOR_JUDGED_AT = 2 / 3


@dataclass(frozen=True)
class SearchSettings:
    """What `auto` resolves to for one study."""

    grace_period: int
    reduction_factor: float
    min_first_rung: int
    brackets: int
    n_startup_trials: int
    startup: str
    plateau: bool = False  # a trial still on the majority-class plateau is judged later (search/scheduling/rungs.py)
    promote: bool = False  # a stop is a pause that later results may undo
    prior: str = "first"  # race: the starting points are judged at the rungs like any trial; first: run to the end
    near_incumbent: float = 0.0  # share of the model's trials drawn near the incumbent
    prior_judged_at: float = PRIOR_JUDGED_AT  # a raced list's members train this share of max_epochs, then are judged

    @property
    def protects_starting_points(self) -> bool:
        return self.prior == "first"

    def text(self) -> str:
        return (
            f"grace {self.grace_period}, rf {self.reduction_factor:g}, first rung waits for "
            f"{self.min_first_rung}"
            + (", judged once off the majority-class plateau" if self.plateau else "")
            + (", paused trials promoted" if self.promote else "")
            + (
                f", starting points raced, judged at {self.prior_judged_at:.0%} of the epochs"
                if self.prior == "race"
                else ""
            )
            + (f", {self.near_incumbent:.0%} of the model's trials near the incumbent" if self.near_incumbent else "")
            + f", {self.brackets} bracket(s), {self.n_startup_trials} {self.startup} start-up trials"
        )


def expected_trials(search: Any) -> int:
    """How many trials the study will hold: ``trials``, or what the budget affords at full length x 3
    (most trials stop early), whichever is smaller."""
    if search.budget_epochs is None:
        return search.trials
    return max(1, min(search.trials, math.ceil(3 * search.budget_epochs / search.max_epochs)))


def grace_period(max_epochs: int) -> int:
    """The first rung: epoch 1 up to 44 epochs, one epoch per 30 beyond.

    Evidence: the replay grid on pets (12 epochs; 15 seeds x 144 + 96 settings): grace 1 reached the target sooner
    than 2 or 3 in every slice (median of medians 187 s against 269 s for 2). Kvasir-SEG (30 epochs; with promotion,
    30 unseen seeds): grace 1 1.73x sooner than random search, grace 2 1.22x. A first epoch is noisy, but with
    promotion a stop there is a pause that later results undo, and the noise costs less than two epochs of every
    bad trial. Beyond 30 epochs the scaling is an assumption (no table has more): a 100-epoch study judges first at
    epoch 3."""
    return max(1, min(max_epochs, round(max_epochs / 30)))


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


def prior_rule(search: Any) -> tuple[str, float, float]:
    """How the spec's starting points run (``search.prior``), where a raced list is judged
    (``search.prior_judged_at``, a share of ``max_epochs``) and the share of the model's trials drawn near the
    incumbent (``search.near_incumbent``).

    A list of two or more is a person's prior, raced (successive halving among its members, as PriorBand runs its
    prior inside Hyperband): running it whole first costs K full trainings before anything else is learnt. One point
    stays what it was: run to the end, first. The list is judged two thirds of the way: benchmarks/race_regret.py
    (README, "What the race costs") measured what judging earlier gives up against running the list whole, in best
    val mIoU of a list of three: at the rung nearest a third 0.0108 (Kvasir-SEG table) / 0.0099 (pets) and 0.018 /
    0.012 / 0.039 on CamVid's real picks, whose best member (Dice + Focal) starts slowest; at half 0.0052 / 0.0039
    and 0.035 / 0.005 / 0.032; at two thirds 0.0041 / 0.0020 and 0.000 / 0.005 / 0.000, for 0.78 of the list's
    trial-epochs instead of 0.53. The differences between sensible configurations are about 0.01, so a race that
    gives up 0.01 cannot beat the list at the list's own compute; the later judgement frees less and loses little.
    There each member counts with its best value so far (what its model is: a trial keeps its best epoch), not its
    value at the milestone: 0.0015 / 0.0009 on the tables instead of 0.0041 / 0.0020, and on CamVid's picks trained
    with the search's own seeds 0.000 on each of three seeds instead of 0.000 / 0.000 / 0.024 (a member's val dipped
    from 0.349 at its best epoch to 0.302 at the milestone).
    Trials near the incumbent (PriorBand's incumbent sampling) only when there is a prior to have an incumbent
    from early; without one the model (TPE) draws alone, as the replay's defaults were chosen."""
    listed = len(search.own_starting_points)
    prior = search.prior if search.prior != "auto" else ("race" if listed >= 2 else "first")
    near = search.near_incumbent
    if near == "auto":
        near = NEAR_INCUMBENT_WITH_A_PRIOR if prior == "race" and listed >= 2 else 0.0
    judged_at = search.prior_judged_at if search.prior_judged_at != "auto" else PRIOR_JUDGED_AT
    return prior, float(near), float(judged_at)


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
    prior, near, judged_at = prior_rule(search)
    return SearchSettings(
        grace, float(rf), first, brackets, startup, search.startup, plateau, bool(promote), prior, near, judged_at
    )
