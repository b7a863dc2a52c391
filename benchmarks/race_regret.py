"""What a raced list loses at its own cost: K sensible configurations judged part of the way, the best of them
run on, against running all K whole (the hand-pick arm of benchmarks/confirm_search.py).

    python benchmarks/race_regret.py                                  # the two recorded tables
    python benchmarks/race_regret.py --confirm confirm-camvid         # and a confirm_search run's hand picks

A search whose budget is the list's cost (K x max_epochs) can beat the list only with what the race frees; what the
race costs is its *regret*: the best value of the K (each run's best epoch, what a retrain keeps; what the hand-pick
arm keeps) minus the best value of the members the race lets go on. Lists are drawn from a table's sensible
configurations (the half that ends above the median, as a person's picks would), 4000 lists per K; the rules judge
at the rung nearest a third of ``max_epochs`` (search's auto grace and reduction factor: where the list was judged
before ``search.prior_judged_at``) by the value there, by the best value so far, or by the mean of the last three,
and keep the top ``ceil(K / reduction_factor)``; and, by the value there and by the best value so far, at half
and at two thirds of ``max_epochs`` (two thirds by the best value so far: today's rule, search/scheduling/rungs.py
``list_milestone``, which keeps the top ``ceil(K / reduction_factor)`` of the list as here; the real race can also
bring a member back if one that went on fails). With ``--confirm``, the real hand picks of each seed (their logs)
are the list.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segtune.search.scheduling import defaults  # noqa: E402
from segtune.search.scheduling.replay import CurveTable  # noqa: E402
from segtune.search.scheduling.rungs import Rungs  # noqa: E402
from segtune.tables import format_table  # noqa: E402

TABLES = [Path("benchmarks/curves/kvasir_seg_64px_30ep.jsonl.gz"), Path("benchmarks/curves/pets_sample_64px.jsonl.gz")]
RULES = {
    "its value there": lambda c, m: c[m - 1],
    "its best value so far": lambda c, m: c[:m].max(),
    "the mean of its last three": lambda c, m: c[max(0, m - 3) : m].mean(),
}
VALUE = "its value there"
BEST = "its best value so far"


def milestone(max_epochs: int) -> tuple[int, float]:
    """The rung nearest a third (where the list was judged before) and the reduction factor, auto defaults."""
    grace = defaults.grace_period(max_epochs)
    rf = defaults.reduction_factor(max_epochs, grace)
    return Rungs(max_epochs, grace, rf).third(), rf


def today(max_epochs: int) -> int:
    """The list's own milestone under the defaults (search.prior_judged_at: auto)."""
    return Rungs(max_epochs, 1, 3).list_milestone()


def judgements(max_epochs: int) -> list[tuple[int, str]]:
    """(epoch, rule) pairs: every rule at the rung nearest a third; the value there and the best so far at half and
    at two thirds."""
    m, _ = milestone(max_epochs)
    later = sorted({math.ceil(max_epochs / 2), today(max_epochs)} - {m})
    return [(m, name) for name in RULES] + [(e, name) for e in later for name in (VALUE, BEST)]


def label(m: int, name: str, max_epochs: int) -> str:
    return f"{name} (today's)" if (m, name) == (today(max_epochs), BEST) else name


def regret(curves: list[np.ndarray], members: np.ndarray, judge, m: int, keep: int) -> float:  # noqa: ANN001
    finals = np.array([curves[i].max() for i in members])
    at = np.array([judge(curves[i], m) for i in members])
    survivors = np.argsort(-at, kind="stable")[:keep]
    return float(finals.max() - finals[survivors].max())


def drawn_lists(path: Path, ks: list[int], draws: int) -> list[list[str]]:
    table = CurveTable.load(path)
    e = table.max_epochs
    curves = [np.array(c.values, float) for c in table.curves if len(c.values) == e and None not in c.values]
    finals = np.array([c.max() for c in curves])
    sensible = np.flatnonzero(finals >= np.median(finals))
    _, rf = milestone(e)
    rows = []
    rng = np.random.default_rng(0)
    for k in ks:
        keep = math.ceil(k / rf)
        lists = [rng.choice(sensible, k, replace=False) for _ in range(draws)]
        for m, name in judgements(e):
            r = np.array([regret(curves, g, RULES[name], m, keep) for g in lists])
            rows.append(row(path.name, k, keep, m, e, name, r))
    return rows


def row(source: str, k: int, keep: int, m: int, e: int, name: str, regrets: np.ndarray) -> list[str]:
    """One table row: a rule's mean regret over ``regrets``, and its spread where there is more than one list."""
    many = len(regrets) > 1
    return [
        source,
        str(k),
        f"{m} of {e}",
        str(keep),
        label(m, name, e),
        f"{regrets.mean():.4f}",
        f"{np.quantile(regrets, 0.9):.4f}" if many else "-",
        f"{(regrets == 0).mean():.2f}" if many else "-",
        f"{cost(k, keep, m, e):.2f}",
    ]


def cost(k: int, keep: int, m: int, e: int) -> float:
    """The race's trial-epochs (K members to epoch m, ``keep`` of them on to e) over the list's (K x e)."""
    return (k * m + keep * (e - m)) / (k * e)


VAL = re.compile(r"epoch (\d+)/(\d+): .* val mIoU ([0-9.]+)")


def confirm_lists(folder: Path) -> list[list[str]]:
    """Each seed's hand picks (confirm_search.py's ``hand-picks/pick{i}-seed{s}/log.txt``) as one list."""
    by_seed: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
    for log in sorted((folder / "hand-picks").glob("pick*-seed*/log.txt")):
        pick, seed = map(int, re.findall(r"\d+", log.parent.name))
        found = [(int(a), int(b), float(v)) for a, b, v in VAL.findall(log.read_text())]
        if found and found[-1][0] == found[-1][1]:  # a whole run
            by_seed[seed][pick] = np.array([v for _, _, v in found])
    rows = []
    for seed, picks in sorted(by_seed.items()):
        for k in (3, 10):
            if not all(i in picks for i in range(k)):
                continue
            curves = [picks[i] for i in range(k)]
            e = len(curves[0])
            _, rf = milestone(e)
            keep = math.ceil(k / rf)
            for m, name in judgements(e):
                r = regret(curves, np.arange(k), RULES[name], m, keep)
                rows.append(row(f"{folder.name} seed {seed}", k, keep, m, e, name, np.array([r])))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="*", type=Path, default=TABLES)
    ap.add_argument("--confirm", nargs="*", type=Path, default=[], help="confirm_search.py --out folders")
    ap.add_argument("--draws", type=int, default=4000)
    args = ap.parse_args()
    rows = [row for path in args.tables for row in drawn_lists(path, [3, 10], args.draws)]
    rows += [row for folder in args.confirm for row in confirm_lists(folder)]
    headers = ["list from", "K", "judged at", "go on", "judged by", "regret: mean", "90th pct", "no regret", "cost"]
    print(format_table(headers, rows))
    print("regret: the best val mIoU of the K (best epochs) minus that of the members that go on; cost: the race's")
    print("trial-epochs (K to the milestone, the rest whole) over the list's, before the search adds anything")


if __name__ == "__main__":
    main()
