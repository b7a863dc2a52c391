"""Any folder, proven on folders nobody wrote a fixture for (issue 39): Hypothesis draws dataset folders from the
space of conventions (tests/folder_space.py), `segtune init` reads each one as a user runs it, and its spec,
decoded by the reader `check` and `run` use, must equal the folder's truth, or init must refuse in one line that
names what to write by hand (tests/folder_judge.py). Never a spec with another truth.

The folders are small (64 px pictures, 8-20 pairs): a few hundred take about two minutes here. The draws are
derandomized, so CI sees the same folders every run; ``benchmarks/init_fuzz.py --n 5000`` draws thousands more
(right / refused / wrong by convention, README: Benchmarks).
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.folder_judge import judge
from tests.folder_space import HypothesisPick, RngPick, draw_recipe, write_folder

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


def _prefix_swallows_a_word(seed: int) -> bool:
    """Names of a constant word and an id (``Case_00631``) in mixed case, masks lower-cased behind a prefix."""
    names = draw_recipe(RngPick(seed)).names
    return (
        names.style == "word-id"
        and names.case == "mixed"
        and names.mask_case_differs
        and (names.mask_affix or ("",))[0] == "prefix"
    )


def test_a_mask_prefix_does_not_swallow_the_ids_first_word(tmp_path: Path) -> None:
    """Pictures named ``Case_00631`` and ``case_00210`` (mixed case) with masks ``label-case_00210``: every mask
    shares ``label-case_``, and stripping all of it left keys (``00210``) no picture has. The folders are the first
    12 of the seeded generator's draws in that convention (seeds 3940 to 24580), not one hand-made folder:
    each pairs every file (a refusal here may only be about the masks' levels)."""
    seeds = list(itertools.islice(filter(_prefix_swallows_a_word, itertools.count()), 12))
    pairing_refusals = ("found no partner", "could pair none")
    for seed in seeds:
        root = tmp_path / f"f{seed}"
        outcome = judge(write_folder(draw_recipe(RngPick(seed)), root), tmp_path / f"s{seed}.yaml")
        assert outcome.verdict != "wrong", f"seed {seed}: {outcome.detail}"
        assert not any(r in outcome.detail for r in pairing_refusals), f"seed {seed}: {outcome.detail}"
        shutil.rmtree(root)
