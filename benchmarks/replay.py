"""Search strategies replayed over recorded learning curves: many seeds each, no training.

    python benchmarks/replay.py                      # the strategy table (30 seeds each)
    python benchmarks/replay.py --seeds 3            # quick (CI-sized)
    python benchmarks/replay.py --starting-points    # the same, each search running the hand picks first
    python benchmarks/replay.py --tune               # the grid the `auto` defaults were chosen from
    python benchmarks/replay.py --cost --storage sqlite:///cost.db --storage postgresql://...
                                                     # the driver's own cost per suggestion as studies grow
    python benchmarks/replay.py --out-of-sample benchmarks/curves/pets_sample_64px.jsonl.gz \
        benchmarks/curves/kvasir_seg_64px_30ep.jsonl.gz  # choose the rules on one table, report on the other
    python benchmarks/replay.py --transfer A B       # B's search started from A's winners, and the reverse
    python benchmarks/replay.py --prior A B          # the hand picks as the prior: run whole first, or raced, with
                                                     # a share of the model's trials near the incumbent

Each replay drives segtune's real searcher, rung policy and end-of-trial function (segtune/search/replay.py)
over benchmarks/curves/pets_sample_64px.jsonl.gz with 2 slots (this machine) until the trial-epoch
budget is spent. "Best" and "time to target" count complete trials only (what `export` can return).
Targets: the 90th percentile of the table's final values, and the best hand-picked configuration's.
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import optuna

from segtune.search.scheduling.replay import CurveTable, ReplayResult, Strategy, replay
from segtune.tables import format_table

HERE = Path(__file__).resolve().parent
TABLE = HERE / "curves" / "pets_sample_64px.jsonl.gz"

OLD_DEFAULT = dict(
    grace_period=1, reduction_factor=3, min_first_rung=1, brackets=1, n_startup_trials=10, startup="random"
)
STRATEGIES = [
    Strategy("random, no stopping", sampler="random", scheduler="none"),
    Strategy("random + ASHA (auto rungs)", sampler="random"),
    Strategy("TPE, no stopping", scheduler="none"),
    Strategy("TPE + ASHA, grace 1, rf 3 (the old default)", **OLD_DEFAULT, first_rung="grace", promotion=False),
    Strategy("TPE + ASHA, 3 brackets", brackets=3),
    Strategy("TPE + ASHA, random start-up", startup="random"),
    Strategy("TPE + ASHA, first rung at grace, stops final (last round's)", first_rung="grace", promotion=False),
    Strategy("TPE + ASHA, first rung off the plateau, stops final", first_rung="plateau", promotion=False),
    Strategy("TPE + ASHA, first rung at grace, promotion", first_rung="grace", promotion=True),
    Strategy("TPE + ASHA, auto (the default)"),
]
RULES = {  # --out-of-sample: the rules chosen on one table, every combination
    "first_rung": ["grace", "plateau"],
    "promotion": [False, True],
    "grace_period": ["auto", 1, 2, 3],  # auto: segtune's rule (one per 12 when the defaults were chosen: 2 at 30)
    "min_first_rung": [1, 3],
}
REPORT_SEEDS = range(100, 130)  # seeds no choice of a default ever used

GRID = {  # --tune: every combination, --seeds each (15 by default)
    "grace_period": [1, 2, 3],
    "reduction_factor": [2, 3, 4],
    "min_first_rung": [1, 3],
    "n_startup_trials": [5, 10],  # the second look: --grid n_startup_trials=3,5,8 (README)
    "brackets": [1, 3],
    "startup": ["random", "stratified"],
}


def quantiles(values: list[float | None]) -> tuple[float, float, float]:
    """Median and interquartile range; a search that never reached the target counts as infinitely slow."""
    finite = [math.inf if v is None else v for v in values]
    q = np.percentile(finite, [25, 50, 75], method="lower")
    return float(q[1]), float(q[0]), float(q[2])


def seconds(v: float) -> str:
    return "not reached" if math.isinf(v) else f"{v:.0f}"


_TABLE: CurveTable | None = None


def _init(path: Path) -> None:
    global _TABLE
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    _TABLE = CurveTable.load(path)


def _one(job: tuple[Strategy, int, int, int]) -> ReplayResult:
    strategy, seed, slots, budget = job
    assert _TABLE is not None
    result = replay(_TABLE, strategy, seed=seed, slots=slots, budget_epochs=budget)
    result.events = []  # not needed here; keeps what crosses the process boundary small
    return result


def run_strategies(
    path: Path, strategies: list[Strategy], seeds: int | range, slots: int, budget: int, jobs: int
) -> dict[str, list[ReplayResult]]:
    """Every strategy x seed, ``jobs`` processes at once (each replay is independent)."""
    out: dict[str, list[ReplayResult]] = {s.name: [] for s in strategies}
    seed_list = range(seeds) if isinstance(seeds, int) else seeds
    work = [(s, seed, slots, budget) for s in strategies for seed in seed_list]
    started, done = time.monotonic(), 0
    with multiprocessing.get_context("spawn").Pool(jobs, initializer=_init, initargs=(path,)) as pool:
        for result in pool.imap(_one, work, chunksize=4):
            out[result.strategy].append(result)
            done += 1
            if done % max(1, len(work) // 20) == 0 or done == len(work):
                print(f"  {done}/{len(work)} replays, {time.monotonic() - started:.0f} s", flush=True)
    return out


def summary(table: CurveTable, rs: list[ReplayResult], budget: int) -> tuple[float, float, list[float]]:
    """Median s to the 90th-percentile target, median s to the best hand pick, median best at budget/4, /2, 1."""
    target = float(np.percentile(table.finals(), 90))
    hand = max(c.final(table.max_epochs) or 0 for c in table.hand_picks())
    bests = [statistics.median([r.best_at(e) or 0.0 for r in rs]) for e in (budget // 4, budget // 2, budget)]
    return quantiles([r.time_to(target) for r in rs])[0], quantiles([r.time_to(hand) for r in rs])[0], bests


def parse_grid(overrides: list[str]) -> dict[str, list[int | str]]:
    """GRID with ``key=v1,v2`` overrides (a second, finer look around the first grid's winner)."""
    grid: dict[str, list[int | str]] = dict(GRID)  # type: ignore[arg-type]
    for item in overrides:
        key, _, values = item.partition("=")
        if key not in GRID or not values:
            raise SystemExit(f"--grid {item!r}: expected KEY=V1,V2 with KEY one of {', '.join(GRID)}")
        grid[key] = [int(v) if v.isdigit() else v for v in values.split(",")]
    return grid


def tune(
    path: Path, table: CurveTable, seeds: int, slots: int, budget: int, jobs: int, grid: dict[str, list[int | str]]
) -> None:
    """The grid the `auto` defaults were chosen from: ranked by median time to the target, then best at budget."""
    keys = list(grid)
    combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]
    strategies = [Strategy(" ".join(f"{k}={v}" for k, v in c.items()), **c) for c in combos]  # type: ignore[arg-type]
    baseline = Strategy("random, no stopping", sampler="random", scheduler="none")
    results = run_strategies(path, [baseline, *strategies], seeds, slots, budget, jobs)
    base = summary(table, results[baseline.name], budget)
    rows = []
    for s in strategies:
        med, hand, bests = summary(table, results[s.name], budget)
        rows.append((med, -bests[2], -bests[0], s.name, hand, bests))
    rows.sort()
    print(f"\nrandom, no stopping: {seconds(base[0])} s to target, best at budget {base[2][2]:.3f}")
    print(
        format_table(
            ["settings", "s to target (median)", "vs random", "s to hand pick", "best at 1/4", "at 1/2", "at budget"],
            [
                [
                    name,
                    seconds(med),
                    f"{base[0] / med:.2f}x" if math.isfinite(med) else "-",
                    seconds(hand),
                    *(f"{b:.3f}" for b in bests),
                ]
                for med, _, _, name, hand, bests in rows[:25]
            ],
        )
    )
    print("\nmedian s to target by setting (over the rest of the grid):")
    for k in keys:
        for v in grid[k]:
            meds = [r[0] for r in rows if f"{k}={v} " in r[3] + " "]
            finite = [m for m in meds if math.isfinite(m)]
            print(
                f"  {k}={v}: median of medians {statistics.median(finite) if finite else math.inf:.0f} s, "
                f"{len(meds) - len(finite)} of {len(meds)} combinations never reach it on the median"
            )


def report(table: CurveTable, results: dict[str, list[ReplayResult]], budget: int, baseline: str) -> None:
    finals = table.finals()
    target = float(np.percentile(finals, 90))
    hand = max(c.final(table.max_epochs) or 0 for c in table.hand_picks())
    checkpoints = [budget // 4, budget // 2, budget]
    rows = []
    base = quantiles([r.time_to(target) for r in results[baseline]])[0]
    for name, rs in results.items():
        med, q1, q3 = quantiles([r.time_to(target) for r in rs])
        hmed, _, _ = quantiles([r.time_to(hand) for r in rs])
        bests = [[r.best_at(e) for r in rs] for e in checkpoints]
        best_text = [f"{statistics.median([b if b is not None else 0 for b in bs]):.3f}" for bs in bests]
        speedup = base / med if math.isfinite(med) and math.isfinite(base) else math.nan
        rows.append(
            [name, f"{seconds(med)} [{seconds(q1)}, {seconds(q3)}]", f"{speedup:.2f}x", seconds(hmed), *best_text]
        )
    print(
        f"\n{len(table.curves)} recorded curves ({table.max_epochs} epochs, {len(finals)} complete); "
        f"target {target:.3f} (90th percentile of final values); best hand pick {hand:.3f}; "
        f"budget {budget} trial-epochs, {len(next(iter(results.values())))} seeds"
    )
    headers = [
        "strategy",
        "s to target: median [IQR]",
        f"vs {baseline.split(',')[0]}",
        "s to reach hand pick",
        *[f"best at {e} ep" for e in checkpoints],
    ]
    print(format_table(headers, rows))


def default_budget(table: CurveTable) -> int:
    """16 full trials' worth: 192 trial-epochs on the 12-epoch pets table, 480 on a 30-epoch one."""
    return 16 * table.max_epochs


def ratio_spread(table: CurveTable, strategy: list[ReplayResult], random: list[ReplayResult]) -> str:
    """Median time to target of random search over the strategy's, and the same ratio's spread: the ratios of the
    two arms' quartiles (a search that never reaches the target counts as infinitely slow)."""
    target = float(np.percentile(table.finals(), 90))
    med, q1, q3 = quantiles([r.time_to(target) for r in strategy])
    rmed, rq1, rq3 = quantiles([r.time_to(target) for r in random])

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if math.isfinite(a) and math.isfinite(b) and b > 0 else "-"

    return f"{ratio(rmed, med)} (quartiles {ratio(rq1, q1)} / {ratio(rq3, q3)})"


def never_worse(table: CurveTable, strategy: list[ReplayResult], random: list[ReplayResult], budget: int) -> str:
    """Where the strategy's median best is below random search's, at budget/8 .. budget."""
    worse = []
    for k in range(1, 9):
        e = budget * k // 8
        a = statistics.median([r.best_at(e) or 0.0 for r in strategy])
        b = statistics.median([r.best_at(e) or 0.0 for r in random])
        if a < b:
            worse.append(f"{e} ({a:.3f} < {b:.3f})")
    return "never worse" if not worse else "worse at " + ", ".join(worse)


def unseen(
    path: Path, table: CurveTable, rule: Strategy, default: Strategy, random: Strategy, slots: int, jobs: int, what: str
) -> None:
    """``rule`` beside the default on ``table``'s unseen seeds (100-129): ratios to random search, and the table."""
    budget = default_budget(table)
    results = run_strategies(path, [random, rule, default], REPORT_SEEDS, slots, budget, jobs)
    print(f"\n{what} {path.name} (seeds 100-129, budget {budget}):")
    for s in (rule, default):
        mine, theirs = results[s.name], results[random.name]
        print(
            f"  {s.name}: {ratio_spread(table, mine, theirs)} sooner than random search without stopping; "
            f"{never_worse(table, mine, theirs, budget)}"
        )
    report(table, results, budget, baseline=random.name)


def out_of_sample(paths: list[Path], seeds: int, slots: int, jobs: int) -> None:
    """Choose the rules on one table (seeds 0..seeds-1), report them on the other (seeds 100-129), both ways."""
    tables = {p: CurveTable.load(p) for p in paths}
    keys = list(RULES)
    combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*RULES.values())]
    random = Strategy("random, no stopping", sampler="random", scheduler="none")
    default = Strategy("TPE + ASHA, auto (the default)")
    candidates = [Strategy(" ".join(f"{k}={v}" for k, v in c.items()), **c) for c in combos]  # type: ignore[arg-type]
    winners = {}
    ratios: dict[str, list[float]] = {s.name: [] for s in candidates}  # per table: random's median time / the rule's
    for path, table in tables.items():
        budget = default_budget(table)
        results = run_strategies(path, [random, *candidates], seeds, slots, budget, jobs)
        target = float(np.percentile(table.finals(), 90))
        medians = {name: quantiles([r.time_to(target) for r in rs])[0] for name, rs in results.items()}
        ranked = sorted(candidates, key=lambda s: (medians[s.name], s.name))
        winners[path] = ranked[0]
        for s in candidates:
            ok = math.isfinite(medians[s.name]) and math.isfinite(medians[random.name])
            ratios[s.name].append(medians[random.name] / medians[s.name] if ok else 0.0)
        print(f"\n{path.name}: the rule chosen on it: {ranked[0].name}")
    for chosen_on, rule in winners.items():
        for path, table in tables.items():
            if path == chosen_on:
                continue
            unseen(path, table, rule, default, random, slots, jobs, f"chosen on {chosen_on.name}, reported on")
    names = {w.name for w in winners.values()}
    print(
        "\nthe rules chosen differ between the tables: " + " vs ".join(sorted(names))
        if len(names) > 1
        else f"\nboth tables choose the same rule: {names.pop()}"
    )
    # the rule best across both: the highest geometric mean of its two ratios (0 where it missed the target), on the
    # same choice seeds; reported on both tables' unseen seeds beside the default (unseen seeds, seen tables)
    across = max(candidates, key=lambda s: (statistics.geometric_mean([r or 1e-9 for r in ratios[s.name]]), s.name))
    shown = ", ".join(f"{r:.2f}x" for r in ratios[across.name])
    print(f"\nthe rule best across both tables (seeds 0-{seeds - 1}): {across.name} ({shown})")
    for path, table in tables.items():
        unseen(path, table, across, default, random, slots, jobs, "best across both, reported on")


def transfer(paths: list[Path], seeds: int, slots: int, jobs: int, top: int = 4) -> None:
    """Each table's search started from the other table's best configurations (mapped to the nearest recorded ones:
    both tables hold the same 103 configurations) against the same search started from nothing."""
    tables = [CurveTable.load(p) for p in paths]
    for source, target_table, target_path in ((tables[0], tables[1], paths[1]), (tables[1], tables[0], paths[0])):
        best = sorted(source.curves, key=lambda c: -(c.final(source.max_epochs) or -1))[:top]
        budget = default_budget(target_table)
        plain = Strategy("TPE + ASHA, auto, no starting points")
        started = Strategy(f"the same, from the other table's {top} winners", transfer_from=[c.params for c in best])
        results = run_strategies(target_path, [plain, started], REPORT_SEEDS, slots, budget, jobs)
        print(f"\n{target_path.name}, started from {len(best)} winners of the other table (seeds 100-129):")
        report(target_table, results, budget, baseline=plain.name)


PRIOR_RULES = [
    Strategy(
        "the list first, run whole (one starting point's rule)", starting_points=True, prior="first", near_incumbent=0.0
    ),
    Strategy("the list raced, then the model", starting_points=True, prior="race", near_incumbent=0.0),
    Strategy("the list raced, 25% near the incumbent", starting_points=True, prior="race", near_incumbent=0.25),
    Strategy("the list raced, 50% near the incumbent (the default)", starting_points=True, prior="race"),
    Strategy("the list raced, 75% near the incumbent", starting_points=True, prior="race", near_incumbent=0.75),
    *(
        Strategy(
            f"the list raced, judged at {name} of the epochs", starting_points=True, prior="race", prior_judged_at=at
        )
        for name, at in (("a third", 1 / 3), ("half", 0.5), ("five sixths", 5 / 6))
    ),
]


def prior(paths: list[Path], seeds: range, slots: int, jobs: int) -> None:
    """The hand picks as the search's prior. Per table: the trial-epochs until a complete trial reaches the best hand
    pick's final value (what running the whole list, K x max_epochs, gets), against the list's own cost; and the best
    complete value at half the list's cost, at the list's cost and at the default budget."""
    for path in paths:
        table = CurveTable.load(path)
        picks = table.hand_picks()
        hand = max(c.final(table.max_epochs) or 0 for c in picks)
        whole = len(picks) * table.max_epochs
        budget = default_budget(table)
        results = run_strategies(path, PRIOR_RULES, seeds, slots, budget, jobs)
        rows = []
        for s in PRIOR_RULES:
            rs = results[s.name]
            reached = [r.epochs_to(hand) for r in rs]
            med, q1, q3 = quantiles([float(e) if e is not None else None for e in reached])
            within = sum(e is not None and e <= whole / 2 for e in reached)
            bests = [statistics.median([r.best_at(e) or 0.0 for r in rs]) for e in (whole // 2, whole, budget)]
            rows.append(
                [
                    s.name,
                    f"{seconds(med)} [{seconds(q1)}, {seconds(q3)}]",
                    f"{med / whole:.2f}" if math.isfinite(med) else "-",
                    f"{within}/{len(rs)}",
                    *(f"{b:.3f}" for b in bests),
                ]
            )
        print(
            f"\n{path.name}: {len(picks)} hand picks, the best {hand:.3f} after {table.max_epochs} epochs; the list "
            f"costs {whole} trial-epochs; {slots} slots, seeds {seeds.start}-{seeds.stop - 1}"
        )
        headers = [
            "rule",
            "trial-epochs to the best hand pick: median [IQR]",
            "/ the list's",
            "seeds within half",
            f"best at {whole // 2}",
            f"at {whole}",
            f"at {budget}",
        ]
        print(format_table(headers, rows))


def prefill(study: optuna.Study, table: CurveTable, n: int, seed: int) -> None:
    """``n`` finished trials as a search leaves them: params drawn from the space, the nearest recorded
    curve's values as intermediate values, the attributes the recorder writes."""
    from segtune import space
    from segtune.config import TrialConfig

    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    frozen = []
    for _ in range(n):
        t = draw.ask()
        config = space.sample(t, table.params)
        curve = table.nearest(space.active_params(table.params, TrialConfig.from_dict(config.to_dict())))
        values = {i + 1: v for i, v in enumerate(curve.values) if v is not None}
        complete = len(curve.values) == table.max_epochs and values
        frozen.append(
            optuna.trial.create_trial(
                params=t.params,
                distributions=t.distributions,
                value=max(values.values()) if complete else None,
                intermediate_values=values,
                state=optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.PRUNED,
                user_attrs={
                    "config": config.to_dict(),
                    "epochs_run": len(curve.values),
                    "epoch_seconds": list(curve.seconds),
                },
            )
        )
        draw.tell(t, state=optuna.trial.TrialState.FAIL)
    study.add_trials(frozen)


def cost(table: CurveTable, sizes: list[int], urls: list[str], measured: int) -> None:
    """The driver's own time with N trials already in the study, on real stores: per suggestion (TPE's ask
    with the search's sampler settings), per recorded epoch (report + the attributes the recorder writes),
    per end of trial (tell)."""
    from segtune.search import store
    from segtune.search.ray_trials import TRIAL_KEY
    from segtune.search.scheduling import defaults
    from segtune.search.scheduling.replay import replay_spec
    from segtune.search.scheduling.searcher import OptunaStoreSearcher, make_sampler
    from segtune.search.store import outcome
    from segtune.search.store.budget import Budget

    spec = replay_spec(table, Strategy("cost"), trials=10_000, seed=0, budget_epochs=10**6)
    chosen = defaults.resolve(spec.search, slots=2)
    rows = []
    for url in urls:
        for n in sizes:
            storage = store.open_storage(url)
            name = f"cost-{n}-{time.time_ns()}"
            started = time.monotonic()
            study = optuna.create_study(
                storage=storage, study_name=name, sampler=make_sampler(spec, chosen), direction="maximize"
            )
            prefill(study, table, n, seed=n)
            filled = time.monotonic() - started
            searcher = OptunaStoreSearcher(url, name, "cost", spec, budget=Budget(), study=study, settings=chosen)
            ask, epoch, tell = [], [], []
            for k in range(measured):
                t0 = time.perf_counter()
                number = searcher.suggest(f"cost-{k}")[TRIAL_KEY]
                ask.append(time.perf_counter() - t0)
                handle = store.trial_handle(study, number)
                for e in range(1, table.max_epochs + 1):
                    t0 = time.perf_counter()
                    handle.report(0.3 + 0.01 * e, step=e)
                    handle.set_user_attr("epochs_run", e)
                    handle.set_user_attr("epoch_seconds", [1.0] * e)
                    epoch.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                outcome.tell(study, number, table.max_epochs, table.max_epochs, 0.3 + 0.01 * table.max_epochs)
                tell.append(time.perf_counter() - t0)
            rows.append(
                [
                    store.redact(url).split(":")[0],
                    n,
                    f"{filled:.0f}",
                    f"{1000 * statistics.median(ask):.0f}",
                    f"{1000 * max(ask):.0f}",
                    f"{1000 * statistics.median(epoch):.1f}",
                    f"{1000 * statistics.median(tell):.1f}",
                ]
            )
            print(f"  {rows[-1][0]}, {n} trials: done", flush=True)
    print(
        format_table(
            [
                "store",
                "trials in study",
                "prefill s",
                "ms per suggestion (median)",
                "(max)",
                "ms per recorded epoch",
                "ms per tell",
            ],
            rows,
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", type=Path, default=TABLE)
    p.add_argument("--seeds", type=int, default=None, help="per strategy (default 30; --tune: 15)")
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--budget", type=int, default=192, help="trial-epochs per search (16 full trials of 12 epochs)")
    p.add_argument("--starting-points", action="store_true", help="every strategy also runs the hand picks first")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="replays run side by side")
    p.add_argument("--tune", action="store_true", help="the grid behind the auto defaults (15 seeds unless --seeds)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="--tune: replace one axis of the grid (repeatable)",
    )
    p.add_argument("--cost", action="store_true", help="the driver's own cost as the study grows (real stores)")
    p.add_argument(
        "--storage",
        action="append",
        default=[],
        help="--cost: a store URL (repeatable; default: a SQLite file in a temporary folder)",
    )
    p.add_argument("--sizes", default="100,500,2000", help="--cost: trials already in the study")
    p.add_argument("--out-of-sample", nargs=2, type=Path, metavar="TABLE", help="choose on one, report on the other")
    p.add_argument("--transfer", nargs=2, type=Path, metavar="TABLE", help="start each from the other's winners")
    p.add_argument("--prior", nargs="+", type=Path, metavar="TABLE", help="the hand picks as the prior (see above)")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.out_of_sample:
        out_of_sample(args.out_of_sample, args.seeds or 15, args.slots, args.jobs)
        return
    if args.transfer:
        transfer(args.transfer, args.seeds or 30, args.slots, args.jobs)
        return
    if args.prior:
        prior(args.prior, range(args.seeds or 30), args.slots, args.jobs)
        return
    table = CurveTable.load(args.table)
    if args.cost:
        with tempfile.TemporaryDirectory() as tmp:
            urls = args.storage or [f"sqlite:///{tmp}/cost.db"]
            cost(table, [int(n) for n in args.sizes.split(",")], urls, measured=10)
        return
    if args.tune:
        tune(args.table, table, args.seeds or 15, args.slots, args.budget, args.jobs, parse_grid(args.grid))
        return
    strategies = [Strategy(**{**s.__dict__, "starting_points": args.starting_points}) for s in STRATEGIES]
    results = run_strategies(args.table, strategies, args.seeds or 30, args.slots, args.budget, args.jobs)
    report(table, results, args.budget, baseline=STRATEGIES[0].name)


if __name__ == "__main__":
    main()
