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
    return sorted((PACKAGE / folder).glob("*.py"))


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
    bad = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in modules("results")
        for name in sorted(imports(path))
        if name.startswith("segtune.search") and name not in ("segtune.search", "segtune.search.store")
    ]
    assert not bad, "\n".join(bad)


def test_the_layers_exist_and_the_top_level_is_small() -> None:
    """Grouped by concept: the top level keeps only what every layer shares or the CLI needs."""
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert top <= {"cli", "spec", "space", "config", "objectives", "check", "init", "tables", "errors"}, top
    for layer in ("data", "training", "search", "results"):
        assert (PACKAGE / layer / "__init__.py").is_file(), layer
