"""Any folder, proven on folders nobody wrote a fixture for (issue 39): Hypothesis draws dataset folders from the
space of conventions (tests/folder_space.py), `segtune init` reads each one as a user runs it, and its spec,
decoded by the reader `check` and `run` use, must equal the folder's truth, or init must refuse in one line that
names what to write by hand (tests/folder_judge.py). Never a spec with another truth.

The folders are small (64 px pictures, 8-20 pairs): a few hundred take about two minutes here. The draws are
derandomized, so CI sees the same folders every run; ``benchmarks/init_fuzz.py --n 5000`` draws thousands more
(right / refused / wrong by convention, README: Benchmarks).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.folder_judge import judge
from tests.folder_space import HypothesisPick, draw_recipe, write_folder

FOLDERS = 300


@settings(
    max_examples=FOLDERS,
    derandomize=True,  # the same folders every run: a failure is replayed, not drawn again by luck
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_init_never_writes_a_spec_with_another_truth(data: st.DataObject, tmp_path: Path) -> None:
    recipe = draw_recipe(HypothesisPick(data))
    root = tmp_path / "folder"
    shutil.rmtree(root, ignore_errors=True)
    truth = write_folder(recipe, root)
    outcome = judge(truth, tmp_path / "spec.yaml")
    assert outcome.verdict != "wrong", f"{outcome.detail}\n{recipe}"
