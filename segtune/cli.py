"""The command line: parse, call, print. Errors a user can fix print as one line and exit 2."""

from __future__ import annotations

import argparse
import atexit
import faulthandler
import os
import sys
import threading
from typing import NoReturn

from segtune.environment import command_environment
from segtune.errors import SegtuneError
from segtune.spec import DEFAULT_STORAGE

TRUST_CODE_HELP = (
    "build a model that is a package.module:Class outside segtune, named by a checkpoint, a study store or a "
    "spec exported from one: that imports and runs the module, so only for sources you trust"
)
DEVICE_HELP = "torch device, e.g. cpu, cuda, cuda:1 (default: cuda when the machine has it, else cpu)"
IN_PROCESS_HELP = (
    "train in this process on this torch device (cpu, cuda, cuda:1), one model after another, instead of on the "
    "Ray cluster's slots"
)
ADDRESS_HELP = "Ray cluster address to train on (default: RAY_ADDRESS, else a private local cluster)"
STORAGE_ENV = "SEGTUNE_STORAGE"  # a URL with a password belongs in the environment, not in argv (ps shows argv)


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
    run.add_argument(
        "--storage",
        help=f"SQLAlchemy URL of the study store (default: ${STORAGE_ENV}, else the spec's, else {DEFAULT_STORAGE})",
    )
    run.add_argument("--study", help="study name (default: the spec's); an existing study gets more trials")
    run.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)")
    run.add_argument("--top", type=int, default=10, help="rows of the final table")
    _artifacts_arg(run)
    run.add_argument(
        "--allow-spec-change",
        action="store_true",
        help="add trials to a study although the dataset, image size, split, max_epochs or metric changed "
        "(refused otherwise: its trials would not be comparable)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the study after its driver died: mark its orphaned trials FAIL, re-run interrupted "
        "ones, and run until the study holds search.trials trials",
    )

    fit = sub.add_parser(
        "fit", help="from a dataset folder (or a spec) to a checked model, a report and a card, within --hours"
    )
    fit.add_argument("source", help="the dataset's folder as it ships, or a study spec")
    fit.add_argument("--hours", type=float, required=True, help="the whole job's wall-clock budget, e.g. 0.5 or 8")
    fit.add_argument("-o", "--output", help="the fit's folder (default: fit-NAME): spec, store, models, report")
    fit.add_argument("--storage", help="SQLAlchemy URL of the study store (default: a SQLite file in the fit's folder)")
    fit.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)")
    _artifacts_arg(fit)

    init = sub.add_parser("init", help="look at a dataset folder and write a study spec that runs")
    init.add_argument("data_dir", help="the dataset's folder")
    init.add_argument("-o", "--output", default="spec.yaml", help="spec to write (default: spec.yaml)")
    init.add_argument("--study", help="study name (default: the folder's name)")
    init.add_argument("--force", action="store_true", help="overwrite an existing spec file")

    check = sub.add_parser("check", help="validate a spec, build sampled models, index the dataset")
    _spec_args(check)
    check.add_argument("--spec-only", action="store_true", help="do not read the dataset")

    status = sub.add_parser("status", help="studies in the store, or one study's trials")
    status.add_argument("study", nargs="?")
    _storage_arg(status)

    dash = sub.add_parser("dashboard", help="optuna-dashboard on the store (loopback only unless --host)")
    _storage_arg(dash)
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8080)
    _artifacts_arg(dash)

    report = sub.add_parser("report", help="plotly HTML report of a study")
    report.add_argument("study")
    _storage_arg(report)
    report.add_argument("-o", "--output", help="HTML file (default: dashboards/STUDY.html)")
    report.add_argument("--images", type=int, default=4, help="validation images to show with predictions")
    report.add_argument("--trust-code", action="store_true", help=TRUST_CODE_HELP)
    _artifacts_arg(report)

    export = sub.add_parser("export", help="write the best trial as a retrain spec")
    export.add_argument("study")
    _storage_arg(export)
    export.add_argument("-o", "--output", default="best.yaml")
    export.add_argument("--rank", type=int, default=1, help="1 = best complete trial, 2 = second best, ...")
    export.add_argument("--epochs", type=int, help="epochs to train (default: the search's max_epochs)")
    export.add_argument("--max-latency-ms", type=float, help="the most accurate complete trial within this latency")
    export.add_argument("--max-params-m", type=float, help="... within this many million parameters")
    export.add_argument("--max-gflops", type=float, help="... within this many GFLOPs")
    export.add_argument("--trust-code", action="store_true", help=TRUST_CODE_HELP)

    retrain = sub.add_parser("retrain", help="train an exported spec, score it on the test split")
    retrain.add_argument("spec")
    retrain.add_argument("--out", help="output folder (default: runs/NAME)")
    retrain.add_argument("--train-on", choices=["train", "train+val"], default="train")
    retrain.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    retrain.add_argument("--address", help=ADDRESS_HELP)
    retrain.add_argument("--device", help=IN_PROCESS_HELP)
    retrain.add_argument("--trust-code", action="store_true", help=TRUST_CODE_HELP)

    finish = sub.add_parser("finish", help="re-check the best configurations on folds; TTA and ensemble; test")
    finish.add_argument("study")
    _storage_arg(finish)
    finish.add_argument("--top", type=int, default=3, help="distinct complete configurations to re-check")
    finish.add_argument("--folds", type=int, default=5)
    finish.add_argument("-o", "--output", help="folder for fold models and finish.json (default: runs/STUDY-finish)")
    finish.add_argument("--address", help=ADDRESS_HELP)
    finish.add_argument(
        "--slots", type=int, help="at most this many trainings at once (default: as many as the cluster holds)"
    )
    finish.add_argument("--device", help=IN_PROCESS_HELP)
    finish.add_argument("--trust-code", action="store_true", help=TRUST_CODE_HELP)

    ensemble = sub.add_parser(
        "ensemble", help="Caruana's ensemble of a study's trained models on val, kept when it beats the best one"
    )
    ensemble.add_argument("study")
    _storage_arg(ensemble)
    _artifacts_arg(ensemble)
    ensemble.add_argument(
        "--pruned-floor",
        type=float,
        default=0.95,
        help="pruned trials are candidates when their val is at least this share of the best complete trial's "
        "(default 0.95)",
    )
    ensemble.add_argument("--no-pruned", action="store_true", help="complete trials only")
    ensemble.add_argument("--max-candidates", type=int, default=16, help="the best N trials at most (default 16)")
    ensemble.add_argument(
        "--budget-mb",
        type=float,
        default=32.0,
        help="one model's val probabilities at most this many MB (uint8): above, a pixel subsample (default 32)",
    )
    ensemble.add_argument("--seed", type=int, default=0, help="the val halves and the bootstrap's draws")
    ensemble.add_argument("--device", help=DEVICE_HELP)
    ensemble.add_argument("--trust-code", action="store_true", help=TRUST_CODE_HELP)

    export_model = sub.add_parser("export-model", help="a model as ONNX (checked) or as an smp model folder")
    export_model.add_argument(
        "model", help="model.pt, a trial's folder, a finish folder (its ensemble), or a STUDY of --storage"
    )
    export_model.add_argument("-o", "--output", help="model.onnx (default), or a folder with --format smp (model)")
    export_model.add_argument("--format", choices=["onnx", "smp"], default="onnx", help="smp: save_pretrained folder")
    export_model.add_argument("--rank", type=int, default=1, help="a STUDY's N-th best complete trial (default: 1)")
    export_model.add_argument("--trial", type=int, help="a STUDY's trial N instead of the best")
    export_model.add_argument(
        "--ensemble", action="store_true", help="a STUDY's ensemble (`segtune ensemble STUDY`) as one ONNX graph"
    )
    _storage_arg(export_model)
    _artifacts_arg(export_model)
    export_model.add_argument(
        "--images",
        nargs="*",
        default=[],
        help="pictures (or folders) to check the export on (default: the model's own dataset)",
    )
    export_model.add_argument("--trust-code", action="store_true", help=TRUST_CODE_HELP)

    predict = sub.add_parser("predict", help="masks and overlays for images, at their own size")
    predict.add_argument(
        "checkpoint", help="model.pt from retrain, a trial's folder, an exported model.onnx, or a STUDY of --storage"
    )
    predict.add_argument("images", nargs="+")
    predict.add_argument("-o", "--output", default="predictions")
    predict.add_argument("--trust-code", action="store_true", help=TRUST_CODE_HELP)
    predict.add_argument("--device", help=DEVICE_HELP)
    predict.add_argument("--trial", type=int, help="a STUDY's trial N (default: its best complete trial)")
    _storage_arg(predict)
    _artifacts_arg(predict)
    return p


def _artifacts_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--artifacts",
        help="where every trial's model is: a folder or s3://bucket/prefix (default: $SEGTUNE_ARTIFACTS, else what "
        "the study recorded, else the spec's, else a folder beside the SQLite store)",
    )


def _storage_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        default=os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE,
        help=f"study store URL (default: ${STORAGE_ENV}, else {DEFAULT_STORAGE})",
    )


def _run(args: argparse.Namespace) -> int:
    from segtune import spec as spec_mod

    spec = spec_mod.load(args.spec, args.overrides, args.data_root)
    import ray

    from segtune import tables
    from segtune.search import run as search
    from segtune.search.interrupt import SearchInterrupted
    from segtune.search.nodes.cluster import disconnect

    storage = args.storage or os.environ.get(STORAGE_ENV) or spec.storage
    name = args.study or spec.study
    if spec_mod.uses_pretrained(spec):  # missing weights: an error now, not in every trial
        from segtune.check import check_models

        check_models(spec)
    # an in-process caller's own Ray connection (tests share one) is theirs to end; the command's own ends with it
    leave = disconnect if not ray.is_initialized() else lambda: None
    try:
        study = search.run_study(
            spec,
            storage,
            name,
            address=args.address,
            resume=args.resume,
            allow_spec_change=args.allow_spec_change,
            artifacts_url=args.artifacts,
        )
    except SearchInterrupted as e:
        print(f"\ntrials of study {name!r} so far ({len(e.study.trials)} in the store):")
        print(tables.trials_table(e.study, limit=args.top))
        print(
            f"segtune: interrupted by {e.signal_name}: {e.failed} running trials ended FAIL (interrupted); "
            "finished trials are kept. Run again to add trials.",
            file=sys.stderr,
        )
        return 130
    finally:  # on an error too: the next in-process caller (a test) finds no Ray of this command's
        leave()
    print(f"\nbest trials of study {name!r} ({len(study.trials)} trials in the store):")
    print(tables.trials_table(study, limit=args.top), flush=True)
    return 0


def _fit(args: argparse.Namespace) -> int:
    from pathlib import Path

    import ray

    from segtune.fit import Fit
    from segtune.search.nodes.cluster import disconnect

    source = Path(args.source)
    if not source.exists():
        raise SegtuneError(f"{source}: no such folder or spec")
    out = Path(args.output or f"fit-{source.resolve().stem or 'data'}")
    leave = disconnect if not ray.is_initialized() else lambda: None
    try:
        return Fit(
            source, args.hours, out, args.storage or os.environ.get(STORAGE_ENV), args.address, args.artifacts
        ).run()
    finally:
        leave()


def _init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from segtune.init import init

    out = Path(args.output)
    if out.exists() and not args.force:
        raise SegtuneError(f"{out}: exists; pass --force to overwrite it, or -o another file")
    init(Path(args.data_dir), out, study=args.study)
    return 0


def _check(args: argparse.Namespace) -> int:
    from segtune import spec as spec_mod

    spec = spec_mod.load(args.spec, args.overrides, args.data_root, check_root=not args.spec_only)
    from segtune.check import check

    check(spec, spec_only=args.spec_only)
    return 0


def _open(args: argparse.Namespace, study: str):
    from segtune.search import store

    return store.load_study(store.open_storage(args.storage, must_exist=True), study)


def _status(args: argparse.Namespace) -> int:
    from segtune import tables
    from segtune.search import store

    if args.study:
        study = _open(args, args.study)
        print(tables.study_line(study))
        print(tables.trials_table(study))
        front = tables.front_text(study)
        if front:
            print(front)
    else:
        print(tables.studies_table(store.open_storage(args.storage, must_exist=True)))
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from segtune.results.dashboard import serve

    serve(args.storage, args.host, args.port, artifacts_url=args.artifacts)
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from segtune.results import report

    study = _open(args, args.study)
    out = Path(args.output or f"dashboards/{args.study}.html")
    path, figures = report.build(study, out, args.images, trust_code=args.trust_code, artifacts_url=args.artifacts)
    print(f"wrote {path} ({figures} figures)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from segtune.config import METRIC_LABELS
    from segtune.results import export

    budget = {
        k: v
        for k, v in (("latency_ms", args.max_latency_ms), ("params_m", args.max_params_m), ("gflops", args.max_gflops))
        if v is not None
    }
    study = _open(args, args.study)
    doc = export.export(study, args.storage, args.rank, args.epochs, budget, trust_code=args.trust_code)
    path = export.write(doc, Path(args.output))
    p = doc["provenance"]
    label = METRIC_LABELS.get(p["metric"], p["metric"])
    print(f"wrote {path}: trial {p['trial']} of {p['study']!r} ({label} {p[p['metric']]:.4f}), {doc['epochs']} epochs")
    module = export.code_module(doc["config"].get("arch"))
    if module is not None:
        print(f"note: its model {doc['config']['arch']!r} imports module {module}: retrain it with --trust-code")
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from pathlib import Path

    from segtune import spec as spec_mod
    from segtune.results.retrain import retrain

    spec = spec_mod.load_retrain(args.spec, args.overrides, trust_code=args.trust_code)
    retrain(
        spec, Path(args.out or f"runs/{spec.name}"), train_on=args.train_on, device=args.device, address=args.address
    )
    return 0


def _finish(args: argparse.Namespace) -> int:
    from pathlib import Path

    from segtune.results.finish import finish

    finish(
        _open(args, args.study),
        Path(args.output or f"runs/{args.study}-finish"),
        top=args.top,
        folds=args.folds,
        device=args.device,
        trust_code=args.trust_code,
        address=args.address,
        slots=args.slots,
    )
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    from segtune.results import ensemble

    for name, value, low in (("--pruned-floor", args.pruned_floor, 0.0), ("--budget-mb", args.budget_mb, 0.0)):
        if not value > low:
            raise SegtuneError(f"{name}: must be above {low:g}, got {value:g}")
    if args.max_candidates < 1:
        raise SegtuneError(f"--max-candidates: at least 1, got {args.max_candidates}")
    study = _open(args, args.study)
    selection = ensemble.select_study(
        study,
        args.artifacts,
        pruned_floor=None if args.no_pruned else args.pruned_floor,
        max_candidates=args.max_candidates,
        device=args.device,
        trust_code=args.trust_code,
        budget_mb=args.budget_mb,
        seed=args.seed,
    )
    ensemble.record(study, selection)
    print(ensemble.table(selection))
    for line in ensemble.report_lines(selection):
        print(line)
    print(f"recorded in study {args.study!r} (attr {ensemble.ATTR!r}): segtune report and export-model --ensemble")
    return 0


def _export_model(args: argparse.Namespace) -> int:
    from pathlib import Path

    from segtune.results import fetch
    from segtune.results.deploy import export, export_ensemble, export_smp

    if args.ensemble:
        if args.format != "onnx" or args.trial is not None or args.rank != 1:
            raise SegtuneError(
                "--ensemble: exports a STUDY's ensemble as ONNX; --format smp, --trial and --rank name one model"
            )
        export_ensemble(
            _open(args, args.model),
            Path(args.output or "ensemble.onnx"),
            args.images,
            artifacts_url=args.artifacts,
            trust_code=args.trust_code,
        )
        return 0
    source = fetch.resolve(args.model, args.storage, args.trial, args.rank, args.artifacts)
    if args.format == "smp":
        export_smp(source.path, Path(args.output or "model"), trust_code=args.trust_code, name=args.model)
    else:
        out = Path(args.output or "model.onnx")
        export(source.path, out, args.images, trust_code=args.trust_code, dataset=source.dataset)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from segtune.results import fetch
    from segtune.results.predict import predict_files

    model = fetch.resolve(args.checkpoint, args.storage, args.trial, 1, args.artifacts).path
    written = predict_files(model, args.images, args.output, trust_code=args.trust_code, device=args.device)
    print(f"wrote {len(written)} masks and overlays to {args.output}/")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handlers = {
        "run": _run,
        "fit": _fit,
        "init": _init,
        "check": _check,
        "status": _status,
        "dashboard": _dashboard,
        "report": _report,
        "export": _export,
        "retrain": _retrain,
        "predict": _predict,
        "finish": _finish,
        "ensemble": _ensemble,
        "export-model": _export_model,
    }
    try:
        with command_environment():  # offline, Optuna's verbosity: set for the command, given back after it
            return handlers[args.command](args)
    except SegtuneError as e:
        for line in e.details:
            print(line, file=sys.stderr)
        print(f"segtune: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("segtune: interrupted", file=sys.stderr)
        return 130


EXIT_WAIT_REPORT_S = 60.0


def exit_now(code: int) -> NoReturn:
    """Leave without the interpreter's teardown: with torch, smp and Ray loaded it frees every module one by one,
    about 2.5 s on a 2-core machine after the work is done (issue 28, the user's clock). The exit handlers still
    run first, in their order: Ray's shutdown, the driver node segtune started, logging, temporary folders; and
    before them, as at a normal exit, every thread that is not a daemon runs to its end."""
    sys.stdout.flush()
    sys.stderr.flush()
    # Private, both, and the two calls the interpreter makes at exit, in its order. threading._shutdown runs the
    # threading exit hooks first (a ThreadPoolExecutor's idle workers wait for theirs: joining them without it
    # never returns), then waits for the threads that are not daemons.
    # A thread that never ends would hold the command (and its Ray cluster) for ever with nothing on the screen:
    # after a minute, every thread's stack goes to stderr, and the wait goes on.
    faulthandler.dump_traceback_later(EXIT_WAIT_REPORT_S)
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    faulthandler.cancel_dump_traceback_later()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def entry() -> NoReturn:
    """The `segtune` command (and `python -m segtune`): :func:`main`, then a quick exit. An error main does not
    handle leaves the usual way, with its traceback."""
    exit_now(main())


if __name__ == "__main__":
    entry()
