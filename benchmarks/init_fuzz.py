"""`segtune init` on folders nobody wrote a fixture for: N folders drawn from the space of conventions
(tests/folder_space.py), each judged against its truth (tests/folder_judge.py): right, refused (exit 2, one line),
or wrong (a spec with another truth). Prints the totals and right / refused / wrong by convention.

    python benchmarks/init_fuzz.py --n 5000              # seeds 0..4999, one folder each
    python benchmarks/init_fuzz.py --seed 1234 --keep f  # replay one folder and keep it in ./f

Each folder is drawn from its seed alone (a numpy generator), so a wrong one is replayed by its seed. Pictures
are 64 px; a folder takes about a second here (writing, `init`, decoding, comparing).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

from tests.folder_judge import Outcome, judge  # noqa: E402
from tests.folder_space import RngPick, draw_recipe, write_folder  # noqa: E402


def one(seed: int, work: Path, keep: Path | None = None) -> tuple[dict[str, str], Outcome]:
    recipe = draw_recipe(RngPick(seed))
    root = keep or work / f"f{seed}"
    if root.exists():
        shutil.rmtree(root)
    truth = write_folder(recipe, root)
    outcome = judge(truth, work / f"s{seed}.yaml")
    if keep is None:
        shutil.rmtree(root, ignore_errors=True)
    (work / f"s{seed}.yaml").unlink(missing_ok=True)
    return recipe.conventions, outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="folders to draw (seeds first..first+n-1)")
    ap.add_argument("--first", type=int, default=0, help="the first seed")
    ap.add_argument("--seed", type=int, help="replay one seed and print its recipe and outcome")
    ap.add_argument("--keep", type=Path, help="with --seed: write the folder here and keep it")
    ap.add_argument("--show", type=int, default=20, help="wrong and refused folders listed")
    ap.add_argument("--where", help="only folders whose convention holds this, e.g. masks=jpeg-rgb (development)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="init-fuzz-") as tmp:
        work = Path(tmp)
        if args.seed is not None:
            print(draw_recipe(RngPick(args.seed)))
            conventions, outcome = one(args.seed, work, args.keep.resolve() if args.keep else None)
            print(outcome.verdict, outcome.detail)
            return
        start = time.monotonic()
        by_dimension: dict[str, dict[str, collections.Counter]] = collections.defaultdict(
            lambda: collections.defaultdict(collections.Counter)
        )
        totals: collections.Counter = collections.Counter()
        listed: dict[str, list[str]] = {"wrong": [], "refused": []}
        for seed in range(args.first, args.first + args.n):
            if args.where:
                dimension, _, text = args.where.partition("=")
                if text not in draw_recipe(RngPick(seed)).conventions.get(dimension, ""):
                    continue
            conventions, outcome = one(seed, work)
            totals[outcome.verdict] += 1
            for dimension, value in conventions.items():
                by_dimension[dimension][value][outcome.verdict] += 1
            if outcome.verdict in listed:
                listed[outcome.verdict].append(f"seed {seed}: {outcome.detail}")
            done = sum(totals.values())
            if done % 100 == 0:
                print(f"... {done} folders, {dict(totals)}, {time.monotonic() - start:.0f} s", file=sys.stderr)
    n = sum(totals.values())
    among = f", those where {args.where}" if args.where else ""  # n counts the folders run, not the seeds drawn
    print(
        f"segtune init on {n} drawn folders (seeds {args.first}..{args.first + args.n - 1}{among}), "
        f"{time.monotonic() - start:.0f} s"
    )
    print(
        f"right {totals['right']} ({totals['right'] / n:.1%}), refused {totals['refused']} "
        f"({totals['refused'] / n:.1%}), wrong {totals['wrong']} ({totals['wrong'] / n:.1%})"
    )
    for dimension, values in by_dimension.items():
        print(f"\n{dimension}:")
        width = max(len(v) for v in values)
        for value, counts in sorted(values.items()):
            print(
                f"  {value:<{width}}  right {counts['right']:>5}  refused {counts['refused']:>4}  "
                f"wrong {counts['wrong']:>3}"
            )
    for verdict, lines in listed.items():
        if lines:
            print(f"\n{verdict} ({len(lines)}, the first {min(len(lines), args.show)}):")
            for line in lines[: args.show]:
                print(f"  {line}")


if __name__ == "__main__":
    main()
