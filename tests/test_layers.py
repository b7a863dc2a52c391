"""The package's arrows point one way: spec -> space -> config -> training (and data) -> search -> results.

Every import in every module counts, the ones inside functions included: a late import is still a
dependency. A new module that breaks the direction fails here, naming the file and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segtune"


def imports(path: Path) -> set[str]:
    """Every segtune module ``path`` imports (``from segtune import x`` counts as ``segtune.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("segtune")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("segtune"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def modules(folder: str) -> list[Path]:
    """Every module under ``folder`` (a layer, or a part of one), its sub-folders included."""
    return sorted((PACKAGE / folder).rglob("*.py"))


# (layer, modules it must never import)
RULES = [
    (
        "training",
        ("segtune.search", "segtune.results", "segtune.space", "segtune.spec", "segtune.cli", "segtune.check"),
    ),
    ("data", ("segtune.training", "segtune.search", "segtune.results", "segtune.cli", "segtune.check")),
    ("search", ("segtune.results", "segtune.cli")),
]


@pytest.mark.parametrize(("layer", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_layers_import_only_downstream(layer: str, forbidden: tuple[str, ...]) -> None:
    bad = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in modules(layer)
        for name in sorted(imports(path))
        if name.startswith(forbidden)
    ]
    assert not bad, "\n".join(bad)


def test_results_reach_the_search_only_through_the_store() -> None:
    """The study store's face (search/store/__init__.py), and its companion the artifact store
    (search/store/artifacts.py); and the fits' face (search/fits/__init__.py), because finish's folds and retrain
    train on the cluster's slots as trials do (DESIGN.md: every phase trains where the search trains): nothing else."""
    from segtune.search import fits

    faces = {"segtune.search", "segtune.search.store", "segtune.search.store.artifacts", "segtune.search.fits"}
    faces |= {f"segtune.search.fits.{name}" for name in fits.__all__}  # what the face offers, not its modules
    bad = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in modules("results")
        for name in sorted(imports(path))
        if name.startswith("segtune.search") and name not in faces
    ]
    assert not bad, "\n".join(bad)


DRIVER = tuple(f"segtune.search.{m}" for m in ("run", "tune_run", "progress", "interrupt"))
# (part of search/, what it must never import): nodes <- store <- scheduling <- the driver's pipeline; a trial's
# worker (trial/) sits on the nodes alone; ray_trials (the config keys every part reads) imports nothing of search/;
# fits/ (results' training on the slots) sits on the nodes and a trial's worker, and nothing of the search uses it
FITS = "segtune.search.fits"
SEARCH_RULES = [
    ("search/ray_trials.py", ("segtune.search.",)),
    (
        "search/nodes",
        ("segtune.search.store", "segtune.search.scheduling", "segtune.search.trial", FITS, *DRIVER),
    ),
    ("search/store", ("segtune.search.scheduling", "segtune.search.trial", FITS, *DRIVER)),
    ("search/scheduling", ("segtune.search.nodes", "segtune.search.trial", FITS, *DRIVER)),
    ("search/trial", ("segtune.search.store", "segtune.search.scheduling", FITS, *DRIVER)),
    ("search/fits", ("segtune.search.store", "segtune.search.scheduling", *DRIVER)),
]


@pytest.mark.parametrize(("part", "forbidden"), SEARCH_RULES, ids=[r[0] for r in SEARCH_RULES])
def test_the_parts_of_search_import_only_downward(part: str, forbidden: tuple[str, ...]) -> None:
    paths = [PACKAGE / part] if part.endswith(".py") else modules(part)
    assert paths and all(p.is_file() for p in paths), part
    bad = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in paths
        for name in sorted(imports(path))
        if name.startswith(forbidden) and name != "segtune.search.ray_trials"
    ]
    assert not bad, "\n".join(bad)


def test_search_is_a_pipeline_over_sub_concepts() -> None:
    """search/ keeps the driver's pipeline at its top; everything else lives in scheduling/, store/, nodes/ or trial/,
    and run.py reads as a page of named steps."""
    top = {p.stem for p in (PACKAGE / "search").glob("*.py")} - {"__init__"}
    assert top <= {"run", "tune_run", "progress", "interrupt", "ray_trials"}, top
    for part in ("scheduling", "store", "nodes", "trial", "fits"):
        assert (PACKAGE / "search" / part / "__init__.py").is_file(), part
    source = (PACKAGE / "search" / "run.py").read_text()
    run_study = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == "run_study")
    assert run_study.end_lineno - run_study.lineno <= 60, "run_study is no longer a page"


def test_datasets_readers_never_import_inits_rules() -> None:
    """data/recognise/ (init's rules: what a folder is) reads with the readers; the readers never need the rules."""
    readers = [p for p in modules("data") if "recognise" not in p.parts]
    bad = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in readers
        for name in sorted(imports(path))
        if name.startswith("segtune.data.recognise")
    ]
    assert not bad, "\n".join(bad)


def test_the_layers_exist_and_the_top_level_is_small() -> None:
    """Grouped by concept: the top level keeps only what every layer shares or the CLI needs."""
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    # environment: what a command sets in the process while it runs, shared by the CLI and run_study (issue 38);
    # fit: the one command from a folder to a model, orchestrating init, check, the search and results as cli does
    allowed = {
        "cli",
        "spec",
        "space",
        "config",
        "objectives",
        "check",
        "init",
        "tables",
        "errors",
        "environment",
        "fit",
    }
    assert top <= allowed, top
    for layer in ("data", "training", "search", "results"):
        assert (PACKAGE / layer / "__init__.py").is_file(), layer


def optuna_private_names() -> set[str]:
    """The private attributes of Optuna's study and trial objects (``_storage``, ``_study_id``, ``_trial_id``, ...)."""
    import optuna

    study = optuna.create_study()
    trial = study.ask()
    names: set[str] = set()
    for obj in (study, trial, optuna.trial.FrozenTrial, optuna.study.StudySummary, optuna.study.Study, optuna.Trial):
        names |= {k for k in getattr(obj, "__dict__", {}) if k.startswith("_") and not k.startswith("__")}
        kind = obj if isinstance(obj, type) else type(obj)
        names |= {k for k in dir(kind) if k.startswith("_") and not k.startswith("__")}
    return names - {"_abc_impl"}


def private_reads(source: str, names: set[str]) -> list[tuple[int, str]]:
    """Reads of those names on anything but ``self`` / ``cls``: ``x._study_id``, ``getattr(x, "_storage")``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in names:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((node.lineno, node.attr))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            literal = node.args[1] if len(node.args) > 1 else None
            if isinstance(literal, ast.Constant) and literal.value in names:
                found.append((node.lineno, f"{node.func.id} {literal.value}"))
    return found


def test_optunas_private_attributes_are_read_in_one_module_only() -> None:
    names = optuna_private_names()
    assert {"_storage", "_study_id", "_trial_id"} <= names
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line} reads {what}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PACKAGE / "search" / "store" / "rdb.py"
        for line, what in private_reads(path.read_text(), names)
    ]
    assert not bad, "\n".join(bad)
    # the check finds both forms it is meant to find
    assert private_reads("study._study_id\ngetattr(study, '_storage')\nself._storage", names) == [
        (1, "_study_id"),
        (2, "getattr _storage"),
    ]
