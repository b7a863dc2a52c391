"""The command line: parse, call, print. Errors a user can fix print as one line and exit 2."""

from __future__ import annotations

import argparse
import sys

from segtune.errors import SegtuneError

EXIT_USAGE = 2


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="study spec (YAML), e.g. search_spaces/pets.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec field, e.g. --set search.trials=4 (repeatable)",
    )
    p.add_argument("--data-root", help="dataset folder (overrides dataset.root)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segtune", description="Hyperparameter search for semantic segmentation.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a search: Ray Tune + Optuna + ASHA, results in the study store")
    _spec_args(run)
    run.add_argument("--storage", help="SQLAlchemy URL of the study store (default: the spec's, sqlite:///segtune.db)")
    run.add_argument("--study", help="study name (default: the spec's); an existing study gets more trials")
    run.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)")
    run.add_argument("--top", type=int, default=10, help="rows of the final table")

    check = sub.add_parser("check", help="validate a spec, build sampled models, index the dataset")
    _spec_args(check)
    check.add_argument("--spec-only", action="store_true", help="do not read the dataset")
    return p


def _run(args: argparse.Namespace) -> int:
    from segtune import spec as spec_mod

    spec = spec_mod.load(args.spec, args.overrides, args.data_root)
    from segtune import search, tables

    storage = args.storage or spec.storage
    name = args.study or spec.study
    study = search.run_study(spec, storage, name, address=args.address)
    print(f"\nbest trials of study {name!r} ({len(study.trials)} trials in the store):")
    print(tables.trials_table(study, limit=args.top))
    return 0


def _check(args: argparse.Namespace) -> int:
    from segtune import spec as spec_mod

    spec = spec_mod.load(args.spec, args.overrides, args.data_root)
    from segtune.check import check

    check(spec, spec_only=args.spec_only)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handlers = {"run": _run, "check": _check}
    try:
        return handlers[args.command](args)
    except SegtuneError as e:
        print(f"segtune: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("segtune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
